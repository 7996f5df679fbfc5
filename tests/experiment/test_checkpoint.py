"""Checkpoint files: exact round trip (PRNG keys included), torn and corrupt files detected."""

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
