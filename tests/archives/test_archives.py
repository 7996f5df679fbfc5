"""Unit tests of cmamae.archives: invalid inputs, stats, sampling, I/O, jit / scan / vmap."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.archives import (
    AddInfo,
    ArchiveState,
    ArchiveStats,
    CVTArchive,
    GridArchive,
    kmeans_centroids,
    load_archive_npz,
    load_npz,
)

GRID = GridArchive(
    2,
    (4, 5),
    [(-1.0, 1.0), (0.0, 5.0)],
    learning_rate=0.5,
    threshold_min=-1.0,
    qd_score_offset=-2.0,
)
CENTROIDS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
CVT = CVTArchive(2, None, [(0.0, 1.0), (0.0, 1.0)], centroids=CENTROIDS)


def _batch(archive, seed, b=8):
    """A random batch (NumPy float32, so tests don't compile eager random ops)."""
    rng = np.random.default_rng(seed)
    lo, hi = archive.lower_bounds, archive.upper_bounds
    return (
        rng.normal(size=(b, archive.solution_dim)).astype(np.float32),
        rng.uniform(-2.0, 3.0, size=b).astype(np.float32),
        rng.uniform(lo, hi, size=(b, archive.measure_dim)).astype(np.float32),
    )


def test_init_is_empty():
    s = GRID.init()
    assert isinstance(s, ArchiveState)
    assert s.occupied.shape == (20,) and not bool(s.occupied.any())
    assert s.solutions.shape == (20, 2) and s.measures.shape == (20, 2)
    assert s.solutions.dtype == jnp.float32
    np.testing.assert_array_equal(s.thresholds, -1.0)
    assert int(s.num_invalid) == 0


def test_non_finite_rejected_counted_never_stored():
    a = GridArchive(2, (4,), [(0.0, 1.0)])
    sol = jnp.arange(10.0).reshape(5, 2)
    f = jnp.array([jnp.nan, 1.0, jnp.inf, -jnp.inf, 2.0])
    m = jnp.array([[0.1], [jnp.nan], [0.1], [0.1], [0.1]])
    s, info = jax.jit(a.add)(a.init(), sol, f, m)
    assert isinstance(info, AddInfo)
    np.testing.assert_array_equal(info.status, [0, 0, 0, 0, 2])
    np.testing.assert_array_equal(info.value, [0, 0, 0, 0, 2.0])
    np.testing.assert_array_equal(info.index, [-1, -1, -1, -1, 0])
    assert int(s.num_invalid) == 4
    np.testing.assert_array_equal(s.occupied, [True, False, False, False])
    assert float(s.objectives[0]) == 2.0 and np.all(np.isfinite(s.objectives))
    np.testing.assert_array_equal(s.solutions[0], [8.0, 9.0])
    s, _ = a.add(s, sol[:1], jnp.array([jnp.nan]), m[:1])
    assert int(s.num_invalid) == 5
    assert int(a.stats(s).num_invalid) == 5


def test_value_and_threshold_rules_by_hand():
    a = GridArchive(1, (2,), [(0.0, 1.0)], learning_rate=0.5, threshold_min=0.0)
    s = a.init()
    # Cell 0 gets 3 and 1 (both accepted, mean 2): t = 0.25*0 + 0.75*2 = 1.5, elite 3.
    # Cell 1 gets -1 (rejected: not above threshold_min 0).
    s, info = a.add(
        s,
        jnp.array([[1.0], [2.0], [3.0]]),
        jnp.array([3.0, 1.0, -1.0]),
        jnp.array([[0.1], [0.2], [0.9]]),
    )
    np.testing.assert_array_equal(info.status, [2, 2, 0])
    np.testing.assert_allclose(info.value, [3.0, 1.0, -1.0])
    np.testing.assert_allclose(s.thresholds, [1.5, 0.0])
    assert float(s.objectives[0]) == 3.0 and float(s.solutions[0, 0]) == 1.0
    # 2.0 beats the threshold 1.5 but not the elite 3: accepted (status 1), replaces it.
    s, info = a.add(s, jnp.array([[5.0]]), jnp.array([2.0]), jnp.array([[0.3]]))
    np.testing.assert_array_equal(info.status, [1])
    np.testing.assert_allclose(info.value, [0.5])
    np.testing.assert_allclose(s.thresholds, [1.75, 0.0])
    assert float(s.objectives[0]) == 2.0


def test_ties_first_in_batch_and_minus_inf_values():
    a = GridArchive(1, (2,), [(0.0, 1.0)])
    s, info = a.add(
        a.init(),
        jnp.array([[1.0], [2.0], [3.0]]),
        jnp.array([5.0, 5.0, -3.0]),
        jnp.array([[0.1], [0.2], [0.3]]),
    )
    np.testing.assert_array_equal(info.status, [2, 2, 2])
    np.testing.assert_allclose(info.value, [5.0, 5.0, -3.0])  # new cell: value = objective
    assert float(s.solutions[0, 0]) == 1.0 and float(s.thresholds[0]) == 5.0
    s, info = a.add(s, jnp.array([[4.0], [5.0]]), jnp.array([4.0, 6.0]), jnp.array([[0.0], [0.0]]))
    np.testing.assert_array_equal(info.status, [0, 1])
    np.testing.assert_allclose(info.value, [-1.0, 1.0])


def test_stats_by_hand():
    a = GridArchive(1, (2, 2), [(0.0, 1.0), (0.0, 1.0)], qd_score_offset=-1.0)
    empty = a.stats(a.init())
    assert isinstance(empty, ArchiveStats)
    assert int(empty.num_elites) == 0 and float(empty.qd_score) == 0.0
    assert math.isnan(float(empty.obj_max)) and math.isnan(float(empty.obj_mean))
    s, _ = a.add(
        a.init(),
        jnp.zeros((3, 1)),
        jnp.array([1.0, 2.0, 4.0]),
        jnp.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]),
    )
    st = a.stats(s)
    assert int(st.num_elites) == 3
    assert float(st.coverage) == pytest.approx(0.75)
    assert float(st.qd_score) == pytest.approx((1 + 1) + (2 + 1) + (4 + 1))
    assert float(st.norm_qd_score) == pytest.approx(10.0 / 4)
    assert float(st.obj_max) == 4.0
    assert float(st.obj_mean) == pytest.approx(7.0 / 3)
    jax.jit(a.stats)(s)


def test_sample_elites_only_occupied():
    a = GridArchive(3, (10, 10), [(0.0, 1.0)] * 2)
    s = a.init()
    sol, f, m = _batch(a, 0, b=7)
    s, _ = a.add(s, sol, f, m)
    occ = np.flatnonzero(np.asarray(s.occupied))
    sols, objs, meas = jax.jit(a.sample_elites, static_argnums=2)(jax.random.key(1), s, 500)
    assert sols.shape == (500, 3) and objs.shape == (500,) and meas.shape == (500, 2)
    cells = np.asarray(a.index_of(meas))
    assert set(cells) == set(occ)  # every occupied cell drawn at least once, nothing else
    np.testing.assert_array_equal(sols, np.asarray(s.solutions)[cells])
    np.testing.assert_array_equal(objs, np.asarray(s.objectives)[cells])
    # Empty archive: zeros (documented; the caller checks num_elites first).
    z = a.sample_elites(jax.random.key(2), a.init(), 4)
    assert all(float(jnp.abs(x).sum()) == 0.0 for x in z)


@pytest.mark.parametrize("archive", [GRID, CVT], ids=["grid", "cvt"])
def test_npz_round_trip(tmp_path, archive):
    s = archive.init()
    for i in range(3):
        s, _ = archive.add(s, *_batch(archive, i))
    s, _ = archive.add(s, jnp.zeros((1, 2)), jnp.array([jnp.nan]), jnp.zeros((1, 2)))
    path = tmp_path / "archive.npz"
    archive.save_npz(s, path)
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    loaded = load_npz(path, archive)
    for name in (
        "occupied",
        "solutions",
        "objectives",
        "measures",
        "thresholds",
        "num_invalid",
        "eval_iteration",
        "eval_row",
    ):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(s, name))
    rebuilt = load_archive_npz(path)
    assert rebuilt == archive and hash(rebuilt) == hash(archive)
    with pytest.raises(ValueError, match="shape"):
        load_npz(path, GridArchive(2, (3,), [(0.0, 1.0)]))


def test_to_dataframe():
    s, _ = GRID.add(GRID.init(), *_batch(GRID, 3))
    df = GRID.to_dataframe(s)
    assert list(df.columns) == [
        "index",
        "objective",
        "measures_0",
        "measures_1",
        "solution_0",
        "solution_1",
        "threshold",
        "eval_iteration",
        "eval_row",
    ]
    occ = np.flatnonzero(np.asarray(s.occupied))
    np.testing.assert_array_equal(df["index"], occ)
    np.testing.assert_array_equal(df["objective"], np.asarray(s.objectives)[occ])
    np.testing.assert_array_equal(df[["solution_0", "solution_1"]], np.asarray(s.solutions)[occ])


def test_jit_with_donation_updates_in_place():
    a = GridArchive(64, (20, 20), [(0.0, 1.0)] * 2, learning_rate=0.1, threshold_min=0.0)
    add = jax.jit(a.add, donate_argnums=0)
    ref_s = s = a.init()
    for i in range(4):
        batch = _batch(a, i, b=16)
        ref_s, ref_info = a.add(ref_s, *batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # backends without donation only warn
            ptr = s.solutions.unsafe_buffer_pointer()
            s, info = add(s, *batch)
        if jax.default_backend() == "cpu":
            assert s.solutions.unsafe_buffer_pointer() == ptr  # no copy of (cells, n)
        np.testing.assert_array_equal(info.status, ref_info.status)
        for name in ("occupied", "solutions", "objectives", "thresholds"):
            np.testing.assert_allclose(getattr(s, name), getattr(ref_s, name), rtol=1e-6)


@pytest.mark.parametrize("archive", [GRID, CVT], ids=["grid", "cvt"])
def test_scan_and_vmap_match_sequential(archive):
    batches = tuple(
        np.stack(x) for x in zip(*(_batch(archive, 10 + i) for i in range(5)), strict=True)
    )
    seq = archive.init()
    statuses = []
    for i in range(5):
        seq, info = archive.add(seq, *(x[i] for x in batches))
        statuses.append(info.status)

    def body(state, batch):
        state, info = archive.add(state, *batch)
        return state, info.status

    scanned, scan_status = jax.jit(lambda s, b: jax.lax.scan(body, s, b))(archive.init(), batches)
    np.testing.assert_array_equal(scan_status, np.stack(statuses))
    np.testing.assert_allclose(scanned.thresholds, seq.thresholds, rtol=1e-6)
    np.testing.assert_array_equal(scanned.occupied, seq.occupied)

    # vmap over 5 independent archives, one batch each.
    states = jax.vmap(lambda _: archive.init())(jnp.arange(5))
    vstates, vinfo = jax.jit(jax.vmap(archive.add))(states, *batches)
    for i in range(5):
        s_i, info_i = archive.add(archive.init(), *(x[i] for x in batches))
        np.testing.assert_array_equal(vinfo.status[i], info_i.status)
        np.testing.assert_array_equal(vstates.solutions[i], s_i.solutions)
        np.testing.assert_allclose(vstates.thresholds[i], s_i.thresholds, rtol=1e-6)


def test_grid_index_order_clipping_and_boundaries():
    a = GridArchive(1, (3, 4), [(0.0, 3.0), (0.0, 4.0)])
    m = jnp.array([[0.5, 0.5], [0.5, 3.5], [2.5, 0.5], [-10.0, 99.0], [1e30, -1e30], [1.0, 2.0]])
    # Row-major: index = i * 4 + j; out-of-range values clip into edge cells (even far out,
    # where pyribs' int32 cast overflows); a value on a boundary goes to the upper cell.
    np.testing.assert_array_equal(a.index_of(m), [0, 3, 8, 3, 8, 6])
    assert a.cells == 12 and a.measure_dim == 2
    np.testing.assert_allclose(a.boundaries[0], [0, 1, 2, 3])
    np.testing.assert_allclose(a.boundaries[1], [0, 1, 2, 3, 4])


def test_cvt_nearest_centroid_and_kmeans():
    np.testing.assert_array_equal(
        CVT.index_of(jnp.array([[0.1, 0.1], [0.9, 0.2], [0.45, 0.55], [5.0, 5.0]])), [0, 1, 4, 3]
    )
    c1 = kmeans_centroids(20, [(0.0, 1.0), (-2.0, 2.0)], samples=2000, seed=3)
    c2 = kmeans_centroids(20, [(0.0, 1.0), (-2.0, 2.0)], samples=2000, seed=3)
    np.testing.assert_array_equal(c1, c2)
    assert c1.shape == (20, 2)
    assert np.all((c1 >= [0.0, -2.0]) & (c1 <= [1.0, 2.0]))
    a = CVTArchive(4, 20, [(0.0, 1.0), (-2.0, 2.0)], samples=2000, seed=3)
    np.testing.assert_allclose(a.centroids, c1.astype(np.float32))
    assert a.cells == 20 and not a.centroids.flags.writeable
    # Equal centroids: equal, same hash (shared jit cache); different seeds: different.
    b = CVTArchive(4, None, [(0.0, 1.0), (-2.0, 2.0)], centroids=c1)
    assert a == b and hash(a) == hash(b)
    assert a != CVTArchive(4, 20, [(0.0, 1.0), (-2.0, 2.0)], samples=2000, seed=4)


def test_hashable_settings_and_result_archive():
    a = GridArchive(
        2, [4, 5], [[-1, 1], [0, 5]], learning_rate=0.5, threshold_min=-1.0, qd_score_offset=-2.0
    )
    assert a == GRID and hash(a) == hash(GRID)
    r = GRID.result_archive()
    assert r.learning_rate == 1.0 and r.threshold_min == -math.inf
    assert r.dims == GRID.dims and r.ranges == GRID.ranges and r.qd_score_offset == -2.0
    rc = CVT.result_archive()
    assert rc.centroid_digest == CVT.centroid_digest and rc.cells == CVT.cells
    jax.jit(lambda arch, s: arch.stats(s), static_argnums=0)(GRID, GRID.init())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dims=(0, 3)), "dims"),
        (dict(dims=(2.5, 3)), "dims"),
        (dict(dims=()), "dims"),
        (dict(ranges=[(0, 1)]), "ranges"),
        (dict(ranges=[(0, 1), (1, 1)]), "ranges"),
        (dict(ranges=[(0, 1), (0, math.inf)]), "ranges"),
        (dict(learning_rate=1.5, threshold_min=0.0), "learning_rate"),
        (dict(learning_rate=-0.1, threshold_min=0.0), "learning_rate"),
        (dict(learning_rate=0.5), "learning_rate"),
        (dict(threshold_min=math.nan), "threshold_min"),
        (dict(solution_dim=0), "solution_dim"),
        (dict(qd_score_offset=math.inf), "qd_score_offset"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(dtype=np.int32), "dtype"),
    ],
)
def test_grid_bad_settings(kwargs, match):
    base = dict(solution_dim=2, dims=(2, 3), ranges=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match=match):
        GridArchive(**{**base, **kwargs})


def test_cvt_bad_settings():
    with pytest.raises(ValueError, match="centroids"):
        CVTArchive(2, None, [(0, 1), (0, 1)], centroids=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="cells"):
        CVTArchive(2, 4, [(0, 1), (0, 1)], centroids=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="cells"):
        CVTArchive(2, None, [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="samples"):
        CVTArchive(2, 50, [(0, 1), (0, 1)], samples=10)


def test_add_bad_shapes():
    s = GRID.init()
    sol, f, m = _batch(GRID, 5, b=4)
    with pytest.raises(ValueError, match="solutions"):
        GRID.add(s, sol[:, :1], f, m)
    with pytest.raises(ValueError, match="solutions"):
        GRID.add(s, sol[:3], f, m)
    with pytest.raises(ValueError, match="objectives"):
        GRID.add(s, sol, f[:, None], m)
    with pytest.raises(ValueError, match="measures"):
        GRID.add(s, sol, f, m[:, :1])
    with pytest.raises(ValueError, match="measures"):
        GRID.index_of(m[:, :1])


@pytest.mark.parametrize("cells", [40, 1000])
def test_cvt_index_matches_numpy_brute_force(cells):
    """Both the plain and the blocked (> 256 cells) argmin, with exact ties (duplicate
    centroids, measures on centroids): the first nearest centroid, as NumPy's argmin."""
    rng = np.random.default_rng(cells)
    c = rng.uniform(size=(cells, 3))
    c[5] = c[3]
    c[-1] = c[-2]
    m = np.concatenate([rng.uniform(-0.2, 1.2, size=(64, 3)), c[[3, 5, -1, -2, 0]]])
    ref = np.argmin(((m[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    with jax.enable_x64(True):
        a = CVTArchive(1, None, [(0.0, 1.0)] * 3, centroids=c, dtype=np.float64)
        np.testing.assert_array_equal(jax.jit(a.index_of)(m), ref)


def test_empty_batch():
    s, info = GRID.add(GRID.init(), np.zeros((0, 2)), np.zeros((0,)), np.zeros((0, 2)))
    assert info.status.shape == (0,) and not bool(s.occupied.any())


def test_provenance_follows_the_elites():
    """Each elite keeps the iteration and row of the batch it came from; a later batch that
    replaces it replaces its provenance; cells it does not win keep theirs."""
    a = GridArchive(1, (4,), [(0.0, 4.0)], learning_rate=1.0)
    s = a.init()
    np.testing.assert_array_equal(s.eval_iteration, -1)
    x = jnp.zeros((3, 1))
    s, _ = a.add(
        s,
        x,
        jnp.array([1.0, 2.0, 5.0]),
        jnp.array([[0.5], [0.6], [2.5]]),
        iteration=7,
        first_row=10,
    )
    # cell 0: rows 10 and 11 compete, 11 (objective 2) wins; cell 2: row 12
    assert np.asarray(s.eval_iteration).tolist() == [7, -1, 7, -1]
    assert np.asarray(s.eval_row).tolist() == [11, -1, 12, -1]
    s, _ = a.add(s, x[:2], jnp.array([3.0, 1.0]), jnp.array([[0.1], [2.1]]), iteration=8)
    assert np.asarray(s.eval_iteration).tolist() == [8, -1, 7, -1]  # 1.0 does not beat 5.0
    assert np.asarray(s.eval_row).tolist() == [0, -1, 12, -1]
    s, _ = a.add(s, x[:1], jnp.array([9.0]), jnp.array([[3.5]]))  # no provenance given
    assert np.asarray(s.eval_iteration).tolist() == [8, -1, 7, -1]
    assert int(s.eval_row[3]) == 0 and int(s.eval_iteration[3]) == -1


def test_old_archive_files_load_with_unknown_provenance(tmp_path):
    s, _ = GRID.add(GRID.init(), *_batch(GRID, 3), iteration=2)
    old = s.replace(eval_iteration=None, eval_row=None)  # as written before provenance
    GRID.save_npz(old, tmp_path / "old.npz")
    loaded = load_npz(tmp_path / "old.npz", GRID)
    np.testing.assert_array_equal(loaded.eval_iteration, -1)
    np.testing.assert_array_equal(loaded.eval_row, -1)
    np.testing.assert_array_equal(loaded.objectives, s.objectives)
