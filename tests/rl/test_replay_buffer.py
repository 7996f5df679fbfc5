"""The ring replay buffer against a plain-Python FIFO model (hypothesis), plus bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmamae.rl import ReplayBuffer
from cmamae.tasks import Transitions

CAPACITY, B, T, OBS, ACT = 7, 3, 4, 2, 1
BUFFER = ReplayBuffer(CAPACITY, OBS, ACT)
INSERT = jax.jit(BUFFER.insert)  # one compilation: every example has the same shapes
SAMPLE = jax.jit(BUFFER.sample, static_argnums=2)


def _transitions(ids: np.ndarray, valid: np.ndarray) -> Transitions:
    """A (B, T) batch whose every field encodes the step's id, so rows can be traced."""
    ids = ids.astype(np.float32)
    return Transitions(
        obs=jnp.asarray(np.stack([ids, -ids], -1)),
        actions=jnp.asarray(ids[..., None] + 0.5),
        rewards=jnp.asarray(10 * ids),
        next_obs=jnp.asarray(np.stack([ids + 1, -ids - 1], -1)),
        dones=jnp.asarray((ids % 2).astype(np.float32)),
        valid=jnp.asarray(valid),
    )


@settings(max_examples=40, deadline=None)
@given(
    masks=st.lists(st.lists(st.booleans(), min_size=B * T, max_size=B * T), min_size=1, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_insert_keeps_the_newest_valid_steps_in_ring_order(masks, seed):
    state = BUFFER.init()
    ring = [None] * CAPACITY  # the model: slot -> id
    position, size, next_id = 0, 0, 0
    for mask in masks:
        valid = np.array(mask).reshape(B, T)
        ids = next_id + np.arange(B * T).reshape(B, T)
        next_id += B * T
        state = INSERT(state, _transitions(ids, valid))
        for i in ids[valid]:  # row-major: episode by episode, step by step
            ring[position] = int(i)
            position = (position + 1) % CAPACITY
            size = min(size + 1, CAPACITY)
    assert int(state.position) == position and int(state.size) == size
    stored = np.asarray(state.obs[:, 0])
    for slot in range(size):
        i = ring[slot]
        assert stored[slot] == i
        np.testing.assert_array_equal(np.asarray(state.obs[slot]), [i, -i])
        assert float(state.actions[slot, 0]) == i + 0.5
        assert float(state.rewards[slot]) == 10 * i
        np.testing.assert_array_equal(np.asarray(state.next_obs[slot]), [i + 1, -i - 1])
        assert float(state.dones[slot]) == i % 2
    # Sampling draws only filled rows, each a consistent (obs, action, reward, ...) row.
    batch = SAMPLE(jax.random.key(seed), state, 64)
    ids = np.asarray(batch.obs[:, 0])
    if size:
        assert set(ids.astype(int)) <= {ring[s] for s in range(size)}
        np.testing.assert_array_equal(np.asarray(batch.rewards), 10 * ids)
        np.testing.assert_array_equal(np.asarray(batch.next_obs[:, 0]), ids + 1)


def test_more_valid_steps_than_capacity_keep_the_last_ones():
    ids = np.arange(B * T).reshape(B, T)
    state = INSERT(BUFFER.init(), _transitions(ids, np.ones((B, T), bool)))
    # 12 steps into 7 rows: steps 5..11 survive, the write position wrapped to 12 % 7 = 5.
    assert int(state.size) == CAPACITY and int(state.position) == 12 % CAPACITY
    assert sorted(np.asarray(state.obs[:, 0]).astype(int)) == list(range(5, 12))


def test_sampling_is_uniform_over_filled_rows():
    ids = np.arange(B * T).reshape(B, T)
    valid = np.zeros((B, T), bool)
    valid[0, :3] = True  # three rows filled
    state = INSERT(BUFFER.init(), _transitions(ids, valid))
    drawn = np.asarray(SAMPLE(jax.random.key(1), state, 3000).obs[:, 0]).astype(int)
    counts = np.bincount(drawn, minlength=3)
    assert counts.sum() == 3000 and set(np.flatnonzero(counts)) == {0, 1, 2}
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.05), counts


def test_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, 2, 1)
    with pytest.raises(ValueError, match="obs_dim"):
        ReplayBuffer(5, 2.5, 1)
    wrong = ReplayBuffer(CAPACITY, OBS + 1, ACT)
    with pytest.raises(ValueError, match="transitions must have obs"):
        wrong.insert(wrong.init(), _transitions(np.zeros((B, T)), np.ones((B, T), bool)))
