"""The emitter interface: a static configuration handing out pure ``init``/``ask``/``tell``, and
the :class:`EvaluatedBatch` every ``tell`` receives."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from cmamae._pytree import pytree_dataclass


@pytree_dataclass
class EvaluatedBatch:
    """Evaluated solutions, as an emitter's ``tell`` (and ``tell_grad``) receives them.

    Attributes:
        solutions: ``(b, n)`` the solutions, in the order they were asked.
        objectives: ``(b,)`` their objectives (higher is better; NaN or inf: invalid).
        measures: ``(b, m)`` their measures.
        add_info: the archive's :class:`cmamae.archives.AddInfo` for them (status, value,
            index: ``(b,)`` each); None in a pre-phase, which is told before insertion.
        transitions: the rollouts' transitions (:class:`cmamae.rl.Transitions`, leading axis
            b) for emitters that :attr:`~Emitter.needs_transitions`, else None. In a main-phase
            ``tell`` they are the whole iteration batch's, every emitter group's (b is then
            the scheduler's batch size).
    """

    solutions: jax.Array
    objectives: jax.Array
    measures: jax.Array
    add_info: Any = None
    transitions: Any = None

    @property
    def valid(self) -> jax.Array:
        """``(b,)`` bool: finite objective and finite measures (what the archive accepts)."""
        finite_measures = jnp.all(jnp.isfinite(self.measures), axis=-1)
        return jnp.isfinite(self.objectives) & finite_measures

    def rows(self, part: slice) -> EvaluatedBatch:
        """Rows ``part`` of every array (``add_info`` and ``transitions`` included)."""
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[part], tree)
        return EvaluatedBatch(*(take(getattr(self, f.name)) for f in dataclasses.fields(self)))


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

    @property
    def grad_batch_size(self) -> int:
        """Solutions evaluated in a pre-phase before the main ``ask``: 0, none
        (:class:`PrePhaseEmitter` has one)."""
        return 0

    @property
    def needs_transitions(self) -> bool:
        """Whether ``tell`` (and ``tell_grad``) want the rollouts' transitions."""
        return False

    @abc.abstractmethod
    def init(self, key: jax.Array, x0: jax.Array) -> Any:
        """Emitter state for solutions like ``x0`` ``(n,)``."""

    @abc.abstractmethod
    def ask(self, key: jax.Array, state: Any, archive, archive_state) -> tuple[jax.Array, Any]:
        """``(batch_size, n)`` solutions and the new emitter state."""

    def tell(
        self, key: jax.Array, state: Any, archive, archive_state, batch: EvaluatedBatch
    ) -> Any:
        """Learn from this emitter's evaluated ``batch`` (:class:`EvaluatedBatch` of
        ``batch_size`` rows, with the archive's ``add_info``; ``transitions`` only for
        emitters that :attr:`needs_transitions`). ``archive_state`` is the archive after
        insertion. Emitters that do not learn keep their state."""
        del key, archive, archive_state, batch
        return state


@dataclasses.dataclass(frozen=True)
class PrePhaseEmitter(Emitter):
    """An emitter that evaluates a batch of its own before its main ``ask`` each iteration
    (gradient samples, the point whose gradients are taken): CMA-MEGA, ME-ES. The scheduler
    asks, evaluates and tells this pre-phase, inserts the rows the emitter chooses, then runs
    the usual ask/tell."""

    @property
    @abc.abstractmethod
    def grad_batch_size(self) -> int:
        """Solutions of the pre-phase per iteration (> 0); they count in the budget."""

    @abc.abstractmethod
    def ask_grad(self, key: jax.Array, state: Any, archive, archive_state) -> tuple[jax.Array, Any]:
        """Pre-phase: ``(grad_batch_size, n)`` solutions to evaluate and the new state."""

    @abc.abstractmethod
    def tell_grad(
        self, key: jax.Array, state: Any, archive, archive_state, batch: EvaluatedBatch
    ) -> tuple[Any, jax.Array]:
        """Pre-phase results: an :class:`EvaluatedBatch` of ``grad_batch_size`` rows, without
        ``add_info`` (not inserted yet), with ``transitions`` only when
        :attr:`needs_transitions`. Returns the new state and a ``(grad_batch_size,)`` bool
        mask of the rows to insert into the archive before the main ``ask``."""


def sample_parents(key, archive, archive_state, x0: jax.Array, num: int) -> jax.Array:
    """``num`` uniformly sampled elites ``(num, n)``, or copies of ``x0`` while the archive is
    empty (pyribs' convention for the first iteration)."""
    elites, _, _ = archive.sample_elites(key, archive_state, num)
    empty = ~jnp.any(archive_state.occupied)
    return jnp.where(empty, jnp.broadcast_to(x0, elites.shape), elites)
