"""A fixed-capacity ring replay buffer of transitions, as pure functions over a state pytree.

``ReplayBuffer(capacity, obs_dim, act_dim)`` is static configuration; its state holds
``capacity`` rows of (obs, action, reward, next_obs, done), the write position and the number
of rows filled. :meth:`ReplayBuffer.insert` takes a :class:`~cmamae.tasks.base.Transitions`
batch with leading axes ``(B, T)`` and stores only its ``valid`` steps, in row-major order
(episode by episode, step by step), overwriting the oldest rows once full (first in, first
out). :meth:`ReplayBuffer.sample` draws rows uniformly with replacement from the filled ones,
as Fujimoto et al.'s TD3 buffer does. Everything is jit- and vmap-able (one buffer per seed).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.tasks.base import Transitions


@pytree_dataclass
class BufferState:
    """Rows ``(capacity, ...)`` of the stored transitions and two int32 scalars.

    Attributes:
        obs, actions, rewards, next_obs, dones: ``(capacity, obs_dim)``, ``(capacity,
            act_dim)``, ``(capacity,)``, ``(capacity, obs_dim)``, ``(capacity,)`` (float32;
            ``dones`` is 1.0 for a terminal step).
        position: the row the next transition is written to.
        size: rows filled so far (at most ``capacity``).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_obs: jax.Array
    dones: jax.Array
    position: jax.Array
    size: jax.Array


@pytree_dataclass
class Batch:
    """A sampled minibatch: ``obs (N, obs_dim)``, ``actions (N, act_dim)``, ``rewards (N,)``,
    ``next_obs (N, obs_dim)``, ``dones (N,)``."""

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_obs: jax.Array
    dones: jax.Array


@dataclasses.dataclass(frozen=True)
class ReplayBuffer:
    """Static settings of a ring buffer of ``capacity`` transitions."""

    capacity: int
    obs_dim: int
    act_dim: int

    def __post_init__(self):
        for name in ("capacity", "obs_dim", "act_dim"):
            validate.integer(name, getattr(self, name))

    def init(self) -> BufferState:
        """An empty buffer (zeros, position 0, size 0)."""
        c = self.capacity
        return BufferState(
            obs=jnp.zeros((c, self.obs_dim), jnp.float32),
            actions=jnp.zeros((c, self.act_dim), jnp.float32),
            rewards=jnp.zeros((c,), jnp.float32),
            next_obs=jnp.zeros((c, self.obs_dim), jnp.float32),
            dones=jnp.zeros((c,), jnp.float32),
            position=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    def insert(self, state: BufferState, transitions: Transitions) -> BufferState:
        """Store the ``valid`` steps of ``transitions`` (leaves ``(B, T, ...)``, or any
        leading axes shared by all leaves) after the newest row, wrapping around.

        When one call brings more valid steps than ``capacity``, only its last ``capacity``
        are kept (as inserting them one by one would leave)."""
        valid = jnp.asarray(transitions.valid, bool)
        lead = valid.shape
        if (
            transitions.obs.shape != (*lead, self.obs_dim)
            or transitions.next_obs.shape != (*lead, self.obs_dim)
            or transitions.actions.shape != (*lead, self.act_dim)
        ):
            raise ValueError(
                f"transitions must have obs (..., {self.obs_dim}) and actions "
                f"(..., {self.act_dim}) with the leading axes {lead} of valid, got obs "
                f"{transitions.obs.shape} and actions {transitions.actions.shape}"
            )
        valid = valid.reshape(-1)
        rank = jnp.cumsum(valid) - 1  # the rank of each valid step among the valid ones
        count = rank[-1] + 1 if valid.size else jnp.zeros((), jnp.int32)
        keep = valid & (rank >= count - self.capacity)
        # Dropped steps go to distinct rows past the end, so every index is unique.
        past_end = self.capacity + jnp.arange(valid.size)
        rows = jnp.where(keep, (state.position + rank) % self.capacity, past_end)

        def put(buf, new):
            new = new.reshape((-1, *buf.shape[1:])).astype(buf.dtype)
            return buf.at[rows].set(new, mode="drop", unique_indices=True)

        return BufferState(
            obs=put(state.obs, transitions.obs),
            actions=put(state.actions, transitions.actions),
            rewards=put(state.rewards, transitions.rewards),
            next_obs=put(state.next_obs, transitions.next_obs),
            dones=put(state.dones, transitions.dones),
            position=((state.position + count) % self.capacity).astype(jnp.int32),
            size=jnp.minimum(state.size + count, self.capacity).astype(jnp.int32),
        )

    def sample(self, key: jax.Array, state: BufferState, num: int) -> Batch:
        """``num`` rows drawn uniformly with replacement from the filled ones. From an empty
        buffer it returns zero rows (callers check ``state.size``)."""
        idx = jax.random.randint(key, (num,), 0, jnp.maximum(state.size, 1))
        return Batch(
            obs=state.obs[idx],
            actions=state.actions[idx],
            rewards=state.rewards[idx],
            next_obs=state.next_obs[idx],
            dones=state.dones[idx],
        )
