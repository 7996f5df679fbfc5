"""Checkpoint files: exact round trip (PRNG keys included), torn and corrupt files detected,
mostly empty archives stored row-sparse."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.experiment import checkpoint


def _state(seed=0):
    return {
        "key": jax.random.split(jax.random.key(seed), 3),
        "x": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) * (seed + 1),
        "n": (jnp.int32(seed), jnp.bool_(True)),
    }


def _equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_keeps_newest(tmp_path):
    template = jax.eval_shape(lambda: _state())
    for it in (5, 10, 15, 20):
        checkpoint.save(tmp_path, it, _state(it), keep=2)
    assert [i for i, _ in checkpoint.list_checkpoints(tmp_path)] == [15, 20]
    it, restored = checkpoint.load_latest(tmp_path, template)
    assert it == 20
    _equal(restored, _state(20))
    # the restored keys are usable keys, not raw data
    np.testing.assert_array_equal(
        jax.random.key_data(jax.random.split(restored["key"][0])),
        jax.random.key_data(jax.random.split(_state(20)["key"][0])),
    )


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_newest_falls_back_with_warning(tmp_path, damage):
    template = jax.eval_shape(lambda: _state())
    checkpoint.save(tmp_path, 1, _state(1))
    newest = checkpoint.save(tmp_path, 2, _state(2))
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # flip bytes inside the stored array data (the zip stays readable)
        i = data.find(np.asarray(_state(2)["x"]).tobytes())
        assert i > 0
        data[i + 5] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(newest, template)
    with pytest.warns(UserWarning, match="ckpt-000000002"):
        it, restored = checkpoint.load_latest(tmp_path, template)
    assert it == 1
    _equal(restored, _state(1))


def test_wrong_structure_is_rejected(tmp_path):
    path = checkpoint.save(tmp_path, 3, _state())
    with pytest.raises(checkpoint.CheckpointError, match="arrays"):
        checkpoint.load(path, {"x": jax.ShapeDtypeStruct((3, 4), jnp.float32)})
    bad = jax.eval_shape(lambda: {**_state(), "x": jnp.zeros((4, 3))})
    with pytest.raises(checkpoint.CheckpointError, match="shape"):
        checkpoint.load(path, bad)


def test_no_checkpoints_and_leftover_temp_files(tmp_path):
    template = jax.eval_shape(lambda: _state())
    assert checkpoint.load_latest(tmp_path / "missing", template) is None
    (tmp_path / ".ckpt-000000009.npz.abc.tmp").write_bytes(b"half a file")
    assert checkpoint.list_checkpoints(tmp_path) == []


def _archive_like(occupied_rows, dim=1024, cells=400, dtype=np.float32):
    """A mostly empty ``(2, cells, dim)`` leaf (> 1 MiB): rows ``occupied_rows`` of seed 0 and
    row 7 of seed 1 hold data, including -0.0, NaN and inf bit patterns."""
    a = np.zeros((2, cells, dim), dtype)
    rng = np.random.default_rng(0)
    for r in occupied_rows:
        a[0, r] = rng.normal(size=dim)
    a[1, 7, 0] = -0.0  # a row that is all zeros but one negative zero: non-zero bytes
    a[0, 3, :3] = [np.nan, np.inf, -np.inf]
    return a


def test_mostly_empty_leaves_are_stored_row_sparse_and_restored_bitwise(tmp_path):
    sparse = _archive_like([3, 10, 399])
    dense = np.random.default_rng(1).normal(size=(2, 300, 1024)).astype(np.float32)
    state = {"archive": jnp.asarray(sparse), "ints": jnp.asarray(sparse.view(np.int32)), **_state()}
    state["dense"] = jnp.asarray(dense)
    path = checkpoint.save(tmp_path, 1, state)
    with np.load(path) as data:
        spec = json.loads(str(data["header"]))["leaves"]
        names = set(data.files)
    by_shape = {tuple(s["shape"]): s for s in spec}
    assert by_shape[(2, 400, 1024)]["rows"] == 4  # rows 3, 10, 399 of seed 0; row 7 of seed 1
    assert "rows" not in by_shape[(2, 300, 1024)] and "rows" not in by_shape[(3, 4)]
    assert path.stat().st_size < dense.nbytes + 3 * 4 * 1024 * 4 * 2 + 10_000
    assert sum(n.startswith("rows_") for n in names) == 2
    _, restored = checkpoint.load(path, jax.eval_shape(lambda: state))
    _equal(restored, state)
    for name in ("archive", "ints"):  # bitwise, -0.0 and NaN included
        assert np.asarray(restored[name]).tobytes() == np.asarray(state[name]).tobytes()


def test_row_mask_damage_is_detected(tmp_path):
    state = {"archive": jnp.asarray(_archive_like([5]))}
    path = checkpoint.save(tmp_path, 1, state)
    with np.load(path) as data:
        entries = {k: data[k] for k in data.files}
    mask_name = next(k for k in entries if k.startswith("rows_"))
    entries[mask_name] = entries[mask_name].copy()
    entries[mask_name][0] ^= 0x80  # row 0 now claims to be stored
    np.savez(path, **entries)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(path, jax.eval_shape(lambda: state))


def test_resume_from_row_sparse_checkpoint_is_bitwise_exact(tmp_path, monkeypatch):
    """A real run (10-D sphere, 10 x 10 archive) whose archives are stored row-sparse: rerunning
    its last 10 iterations from the previous checkpoint reproduces it exactly."""
    import shutil

    import pandas as pd

    from cmamae import rundir
    from cmamae.cli import main

    monkeypatch.setattr(checkpoint, "_SPARSE_MIN_BYTES", 0)  # small archives go sparse too
    args = ["run", "--task", "sphere", "--set", "task.solution_dim=10"]
    args += ["--set", "task.archive_dims=(10, 10)", "--set", "num_emitters=3"]
    args += ["--set", "popsize=8", "--evals", str(30 * 24), "--checkpoint-every", "10"]
    args += ["--log-every", "1", "--quiet", "--no-plots", "--out", str(tmp_path)]
    assert main([*args, "--name", "run"]) == 0
    run = tmp_path / "run"
    (_, previous), (_, last) = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)
    with np.load(previous) as data:
        assert any("rows" in s for s in json.loads(str(data["header"]))["leaves"])
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    last.unlink()
    assert main(["run", "--resume", str(run), "--quiet", "--no-plots"]) == 0
    cols = [c for c in rundir.METRIC_COLUMNS if c != "evals_per_s"]
    a, b = rundir.read_metrics(reference), rundir.read_metrics(run)
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    for s in range(2):
        with (
            np.load(rundir.archive_path(reference, s)) as x,
            np.load(rundir.archive_path(run, s)) as y,
        ):
            for f in x.files:
                assert x[f].tobytes() == y[f].tobytes(), f
