"""The emitter interface: a static configuration handing out pure ``init``/``ask``/``tell``."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Emitter(abc.ABC):
    """A generator of candidate solutions that learns from the archive's feedback.

    An emitter object holds only static settings (it is hashable); its state is a pytree. The
    archive object (static) and its state are passed in where the emitter needs them.
    """

    @property
    @abc.abstractmethod
    def batch_size(self) -> int:
        """Solutions returned by one ``ask``."""

    @abc.abstractmethod
    def init(self, key: jax.Array, x0: jax.Array) -> Any:
        """Emitter state for solutions like ``x0`` ``(n,)``."""

    @abc.abstractmethod
    def ask(self, key: jax.Array, state: Any, archive, archive_state) -> tuple[jax.Array, Any]:
        """``(batch_size, n)`` solutions and the new emitter state."""

    def tell(
        self,
        key: jax.Array,
        state: Any,
        archive,
        archive_state,
        solutions: jax.Array,
        objectives: jax.Array,
        measures: jax.Array,
        info,
    ) -> Any:
        """Learn from this emitter's evaluated ``solutions`` ``(batch_size, n)``, their
        ``objectives`` ``(batch_size,)``, ``measures`` ``(batch_size, m)`` and the archive's
        ``info`` for them (status, value). ``archive_state`` is the archive after insertion.
        Emitters that do not learn keep their state."""
        del key, archive, archive_state, solutions, objectives, measures, info
        return state


def sample_parents(key, archive, archive_state, x0: jax.Array, num: int) -> jax.Array:
    """``num`` uniformly sampled elites ``(num, n)``, or copies of ``x0`` while the archive is
    empty (pyribs' convention for the first iteration)."""
    elites, _, _ = archive.sample_elites(key, archive_state, num)
    empty = ~jnp.any(archive_state.occupied)
    return jnp.where(empty, jnp.broadcast_to(x0, elites.shape), elites)
