"""Batch insertion equals pyribs 0.12's GridArchive / CVTArchive (float64), batch after batch.

Shapes and the set of archive settings are fixed, so one compilation per setting serves every
hypothesis example.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmamae.archives import CVTArchive, GridArchive

ribs_archives = pytest.importorskip("ribs.archives")

BATCH = 12
SOL_DIM = 3
DIMS = (4, 3)
RANGES = ((-1.0, 1.0), (0.0, 3.0))
# (learning_rate, threshold_min): pyribs allows -inf only with α = 1.
CONFIGS = [
    (1.0, -math.inf),
    (1.0, 0.0),
    (0.1, -0.5),
    (0.001, 0.0),
    (0.0, 0.25),
    (0.1, 1.0),
]
# Objectives from a small set (ties, equal to thresholds) or anywhere.
OBJ = st.one_of(
    st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]),
    st.floats(-2.0, 3.0, allow_nan=False, allow_subnormal=False, width=64),
)
# Measures on cell boundaries, just off them, outside the ranges, or anywhere.
_EDGES = sorted(
    {float(b) for lo, hi in RANGES for b in np.linspace(lo, hi, 5)}
    | {float(b) for b in np.linspace(0.0, 3.0, 4)}
)
MEAS = st.one_of(
    st.sampled_from(_EDGES + [-5.0, 7.0, 0.1, 1.3]),
    st.sampled_from(_EDGES).map(lambda x: x - 1e-7),
    st.floats(-1.5, 3.5, allow_nan=False, allow_subnormal=False, width=64),
)


def _batch(draw_cells):
    """Strategy of ``num_batches`` batches of (objectives, measures)."""
    batch = st.tuples(
        st.lists(OBJ, min_size=BATCH, max_size=BATCH),
        st.lists(st.tuples(draw_cells, draw_cells), min_size=BATCH, max_size=BATCH),
    )
    return st.lists(batch, min_size=1, max_size=4)


_JITTED: dict = {}


def _jit_add(archive):
    if archive not in _JITTED:
        _JITTED[archive] = jax.jit(archive.add)
    return _JITTED[archive]


def _compare(ours, theirs, batches, seed):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        add = _jit_add(ours)
        state = ours.init()
        for objectives, measures in batches:
            objectives = np.asarray(objectives, np.float64)
            measures = np.asarray(measures, np.float64)
            solutions = rng.normal(size=(BATCH, SOL_DIM))
            state, info = add(state, solutions, objectives, measures)
            ref = theirs.add(solutions, objectives, measures)

            np.testing.assert_array_equal(np.asarray(info.status), ref["status"])
            np.testing.assert_allclose(np.asarray(info.value), ref["value"], rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(np.asarray(info.index), theirs.index_of(measures))

            data = theirs.data()
            occupied = np.flatnonzero(np.asarray(state.occupied))
            np.testing.assert_array_equal(occupied, np.sort(data["index"]))
            order = np.argsort(data["index"])
            np.testing.assert_array_equal(
                np.asarray(state.objectives)[occupied], data["objective"][order]
            )
            np.testing.assert_array_equal(
                np.asarray(state.solutions)[occupied], data["solution"][order]
            )
            np.testing.assert_array_equal(
                np.asarray(state.measures)[occupied], data["measures"][order]
            )
            np.testing.assert_allclose(
                np.asarray(state.thresholds)[occupied],
                data["threshold"][order],
                rtol=1e-12,
                atol=1e-12,
            )
            empty = np.setdiff1d(np.arange(ours.cells), occupied)
            assert np.all(np.asarray(state.thresholds)[empty] == ours.threshold_min)

            stats = ours.stats(state)
            assert int(stats.num_elites) == theirs.stats.num_elites
            np.testing.assert_allclose(
                float(stats.qd_score), theirs.stats.qd_score, rtol=1e-12, atol=1e-9
            )
            if ours.threshold_min == -math.inf and theirs.stats.num_elites:
                # Elites only improve, so the current best is pyribs' best-ever obj_max.
                assert float(stats.obj_max) == theirs.stats.obj_max


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(CONFIGS),
    batches=_batch(MEAS),
    seed=st.integers(0, 2**32 - 1),
)
def test_grid_matches_pyribs(config, batches, seed):
    lr, tmin = config
    ours = GridArchive(
        SOL_DIM,
        DIMS,
        RANGES,
        learning_rate=lr,
        threshold_min=tmin,
        qd_score_offset=-1.0,
        dtype=np.float64,
    )
    theirs = ribs_archives.GridArchive(
        solution_dim=SOL_DIM,
        dims=DIMS,
        ranges=RANGES,
        learning_rate=lr,
        threshold_min=tmin,
        qd_score_offset=-1.0,
    )
    _compare(ours, theirs, batches, seed)


CENTROIDS = np.random.default_rng(7).uniform((-1.0, 0.0), (1.0, 3.0), size=(10, 2))
# Measures: near centroids (many per cell), exactly on centroids, or anywhere (no clipping).
CVT_MEAS = st.one_of(
    st.sampled_from(sorted(set(CENTROIDS.ravel().tolist()))),
    st.floats(-1.5, 3.5, allow_nan=False, allow_subnormal=False, width=64),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(CONFIGS),
    batches=_batch(CVT_MEAS),
    seed=st.integers(0, 2**32 - 1),
)
def test_cvt_matches_pyribs(config, batches, seed):
    lr, tmin = config
    ours = CVTArchive(
        SOL_DIM,
        None,
        RANGES,
        centroids=CENTROIDS,
        learning_rate=lr,
        threshold_min=tmin,
        dtype=np.float64,
    )
    theirs = ribs_archives.CVTArchive(
        solution_dim=SOL_DIM,
        centroids=CENTROIDS,
        ranges=RANGES,
        learning_rate=lr,
        threshold_min=tmin,
        nearest_neighbors="brute_force",
    )
    _compare(ours, theirs, batches, seed)


def test_pyribs_rejects_minus_inf_with_annealing_like_us():
    with pytest.raises(ValueError):
        ribs_archives.GridArchive(solution_dim=1, dims=(2,), ranges=[(0, 1)], learning_rate=0.5)
    with pytest.raises(ValueError, match="learning_rate"):
        GridArchive(1, (2,), [(0, 1)], learning_rate=0.5)
