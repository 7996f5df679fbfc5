"""The scheduler: ask/tell over groups of emitters sharing one archive (and a result archive).

One iteration (Algorithm 1 of the scaling paper): every emitter group asks, the whole batch is
evaluated, inserted into the archive at once (pyribs' batch semantics) and into the result
archive, and each group is told its slice with the archive's feedback.

Three ways to drive it:

* pure functions ``init`` / ``ask`` / ``tell`` (jit-able, composable);
* :meth:`Scheduler.run`: many iterations in one compiled ``lax.scan`` when the objective is a
  JAX function ``evaluate(solutions, key) -> (objectives, measures)``;
* :class:`AskTell`: a host-side object for objectives written in plain Python/NumPy.

One key chain serves every driver: a run's key gives each seed an init key and a run key
(:func:`seed_keys`), the init key the initial solution and the emitters' keys
(:func:`init_state`), and iteration i of a seed uses ``fold_in(run_key, i)`` split into ask,
evaluate and tell keys (:func:`iteration_key`, :func:`phase_keys`). The compiled loop
(:func:`cmamae.run`), the runner's host mode and :class:`AskTell` (through :func:`host_ask` and
:func:`host_tell`) all draw from it, so a JAX task driven from the host gives the compiled
loop's numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmamae._pytree import pytree_dataclass
from cmamae.archives import AddInfo, ArchiveState
from cmamae.emitters.base import Emitter, EvaluatedBatch, PrePhaseEmitter


@pytree_dataclass
class SchedulerState:
    """Everything that changes during a run.

    Attributes:
        archive: the (annealed) archive that gives the emitters feedback.
        result: the result archive (best solution ever per cell), or None when the archive
            itself keeps the best (α = 1).
        emitters: one state per emitter group.
        iteration: int32 iterations done.
        evaluations: int32 solutions evaluated.
    """

    archive: ArchiveState
    result: ArchiveState | None
    emitters: tuple
    iteration: jax.Array
    evaluations: jax.Array


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """Static configuration: the archive, the emitter groups, the result archive.

    Attributes:
        archive: the archive the emitters insert into (any :mod:`cmamae.archives` archive).
        emitters: a tuple of emitter groups (:mod:`cmamae.emitters`).
        result_archive: the archive that keeps the best solution ever per cell; "auto" (the
            default) makes one whenever the archive's learning rate is < 1
            (``archive.result_archive()``: the same cells, dtype and
            ``qd_score_offset``, with α = 1 and ``threshold_min = -inf``), None never does.
            pyribs makes none unless one is passed. An archive passed here is used as it is.
    """

    archive: Any
    emitters: tuple[Emitter, ...]
    result_archive: Any = "auto"

    def __post_init__(self):
        emitters = (
            tuple(self.emitters) if not isinstance(self.emitters, Emitter) else (self.emitters,)
        )
        if not emitters or not all(isinstance(e, Emitter) for e in emitters):
            raise ValueError(f"emitters must be a non-empty tuple of Emitters, got {emitters!r}")
        object.__setattr__(self, "emitters", emitters)
        for e in emitters:
            if e.grad_batch_size > 0 and not isinstance(e, PrePhaseEmitter):
                raise ValueError(
                    f"emitters: {type(e).__name__} has grad_batch_size {e.grad_batch_size} but "
                    "is not a PrePhaseEmitter (which provides ask_grad and tell_grad)"
                )
        if isinstance(self.result_archive, str):
            if self.result_archive != "auto":
                raise ValueError(
                    "result_archive must be an archive, None or 'auto', "
                    f"got {self.result_archive!r}"
                )
            result = self.archive.result_archive() if self.archive.learning_rate < 1 else None
            object.__setattr__(self, "result_archive", result)

    @property
    def batch_size(self) -> int:
        """Solutions of the main ask per iteration, all emitter groups together."""
        return sum(e.batch_size for e in self.emitters)

    @property
    def grad_batch_size(self) -> int:
        """Solutions of the pre-phase per iteration (gradient samples), all groups together."""
        return sum(e.grad_batch_size for e in self.emitters)

    @property
    def evaluations_per_iteration(self) -> int:
        """Evaluations one iteration costs: the pre-phase and the main batch."""
        return self.batch_size + self.grad_batch_size

    @property
    def needs_transitions(self) -> bool:
        """Whether ``evaluate`` must also return the rollouts' transitions (some emitter
        learns from them): ``evaluate(solutions, key) -> (objectives, measures,
        transitions)``."""
        return any(e.needs_transitions for e in self.emitters)

    @property
    def best_archive(self):
        """The archive stats and outputs come from: the result archive if there is one."""
        return self.archive if self.result_archive is None else self.result_archive

    def best_state(self, state: SchedulerState) -> ArchiveState:
        """The state of :attr:`best_archive` in ``state``: the result archive's, or the
        archive's when there is no result archive. Read elites and stats from it
        (``scheduler.best_archive.to_dataframe(scheduler.best_state(state))``)."""
        return state.archive if state.result is None else state.result

    # ------------------------------------------------------------------ pure functions
    def init(self, key: jax.Array, x0: jax.Array) -> SchedulerState:
        """Fresh archives and emitters; every emitter starts from ``x0`` ``(n,)``."""
        x0 = jnp.asarray(x0)
        if x0.shape != (self.archive.solution_dim,):
            raise ValueError(f"x0 must have shape ({self.archive.solution_dim},), got {x0.shape}")
        return _init(self, key, x0)

    def _init(self, key: jax.Array, x0: jax.Array) -> SchedulerState:
        keys = jax.random.split(key, len(self.emitters))
        return SchedulerState(
            archive=self.archive.init(),
            result=None if self.result_archive is None else self.result_archive.init(),
            emitters=tuple(e.init(k, x0) for e, k in zip(self.emitters, keys)),
            iteration=jnp.zeros((), jnp.int32),
            evaluations=jnp.zeros((), jnp.int32),
        )

    def ask(self, key: jax.Array, state: SchedulerState) -> tuple[jax.Array, SchedulerState]:
        """``(batch_size, n)`` solutions from all emitter groups, in group order."""
        keys = jax.random.split(key, len(self.emitters))
        outs = [
            e.ask(k, s, self.archive, state.archive)
            for e, k, s in zip(self.emitters, keys, state.emitters)
        ]
        solutions = jnp.concatenate([x for x, _ in outs])
        return solutions, state.replace(emitters=tuple(s for _, s in outs))

    def ask_grad(self, key: jax.Array, state: SchedulerState) -> tuple[jax.Array, SchedulerState]:
        """Pre-phase: ``(grad_batch_size, n)`` solutions from the groups that have one, in
        group order."""
        keys = jax.random.split(key, len(self.emitters))
        parts, emitter_states = [], []
        for e, k, s in zip(self.emitters, keys, state.emitters):
            if e.grad_batch_size > 0:
                x, s = e.ask_grad(k, s, self.archive, state.archive)
                parts.append(x)
            emitter_states.append(s)
        return jnp.concatenate(parts), state.replace(emitters=tuple(emitter_states))

    def tell_grad(
        self,
        key: jax.Array,
        state: SchedulerState,
        solutions: jax.Array,
        objectives: jax.Array,
        measures: jax.Array,
        transitions=None,
    ) -> tuple[SchedulerState, AddInfo]:
        """Tell every group with a pre-phase its slice of the evaluated pre-phase batch
        (``(grad_batch_size, ...)``; ``transitions`` sliced likewise), then insert the rows
        the groups ask to insert into the archive and the result archive. Returns the
        archive's info for the pre-phase batch (status 0 for rows not inserted)."""
        _check_rows("pre-phase solutions", solutions, self.grad_batch_size)
        batch = EvaluatedBatch(solutions, objectives, measures, transitions=transitions)
        keys = jax.random.split(key, len(self.emitters))
        emitter_states, masks, start = [], [], 0
        for e, k, s in zip(self.emitters, keys, state.emitters):
            if e.grad_batch_size > 0:
                part = _rows(start, e.grad_batch_size)
                s, insert = e.tell_grad(k, s, self.archive, state.archive, batch.rows(part))
                masks.append(insert)
                start += e.grad_batch_size
            emitter_states.append(s)
        archive_state, result, info = self._insert(
            state, solutions, objectives, measures, jnp.concatenate(masks), first_row=0
        )
        state = state.replace(
            archive=archive_state,
            result=result,
            emitters=tuple(emitter_states),
            evaluations=state.evaluations + self.grad_batch_size,
        )
        return state, info

    def _insert(self, state, solutions, objectives, measures, mask=None, *, first_row):
        """Insert into the archive and the result archive, recording each elite's provenance:
        ``state.iteration`` and its row among the iteration's evaluations (``first_row`` +
        its row in this batch; the pre-phase batch comes first)."""
        where = dict(iteration=state.iteration, first_row=first_row)
        archive_state, info = self.archive.add(
            state.archive, solutions, objectives, measures, mask, **where
        )
        result = state.result
        if self.result_archive is not None:
            result, _ = self.result_archive.add(
                result, solutions, objectives, measures, mask, **where
            )
        return archive_state, result, info

    def tell(
        self,
        key: jax.Array,
        state: SchedulerState,
        solutions: jax.Array,
        objectives: jax.Array,
        measures: jax.Array,
        transitions=None,
    ) -> tuple[SchedulerState, AddInfo]:
        """Insert the evaluated batch (shapes ``(batch_size, n)``, ``(batch_size,)``,
        ``(batch_size, m)``) and tell every emitter group its slice; groups that
        :attr:`~cmamae.emitters.Emitter.needs_transitions` also get the whole batch's
        ``transitions``. Returns the archive's info for the batch."""
        _check_rows("solutions", solutions, self.batch_size)
        if self.needs_transitions and transitions is None:
            raise ValueError("transitions are required: an emitter learns from them")
        archive_state, result, info = self._insert(
            state, solutions, objectives, measures, first_row=self.grad_batch_size
        )
        batch = EvaluatedBatch(solutions, objectives, measures, add_info=info)
        keys = jax.random.split(key, len(self.emitters))
        emitter_states, start = [], 0
        for e, k, s in zip(self.emitters, keys, state.emitters):
            part = batch.rows(_rows(start, e.batch_size))
            if e.needs_transitions:  # the whole iteration's, every group's
                part = part.replace(transitions=transitions)
            emitter_states.append(e.tell(k, s, self.archive, archive_state, part))
            start += e.batch_size
        state = state.replace(
            archive=archive_state,
            result=result,
            emitters=tuple(emitter_states),
            iteration=state.iteration + 1,
            evaluations=state.evaluations + self.batch_size,
        )
        return state, info

    def stats(self, state: SchedulerState):
        """Stats (:class:`cmamae.archives.ArchiveStats`) of the result archive."""
        return self.best_archive.stats(self.best_state(state))

    def metrics(self, state: SchedulerState) -> dict[str, jax.Array]:
        """What the loops record after an iteration: :meth:`stats` as a dict of scalars plus
        ``"evaluations"``, the solutions evaluated so far."""
        metrics = _as_dict(self.stats(state))
        metrics["evaluations"] = state.evaluations
        return metrics

    def step(self, key: jax.Array, state: SchedulerState, evaluate) -> SchedulerState:
        """One iteration: the pre-phase when there is one (ask_grad, evaluate, tell_grad),
        then ask, ``evaluate(solutions, key) -> (objectives, measures)`` (plus
        ``transitions`` when :attr:`needs_transitions`), tell."""
        if self.grad_batch_size > 0:
            k_ask, k_eval, k_tell = phase_keys(jax.random.fold_in(key, 1))
            solutions, state = self.ask_grad(k_ask, state)
            state, _ = self.tell_grad(k_tell, state, solutions, *evaluate(solutions, k_eval))
        k_ask, k_eval, k_tell = phase_keys(key)
        solutions, state = self.ask(k_ask, state)
        state, _ = self.tell(k_tell, state, solutions, *evaluate(solutions, k_eval))
        return state

    def scan(self, key: jax.Array, state: SchedulerState, evaluate, iterations: int):
        """``iterations`` steps in one ``lax.scan``; iteration i uses ``fold_in(key, i)``.

        Returns the final state and per-iteration
        metrics: a dict of arrays ``(iterations,)`` with the result archive's stats after each
        iteration and the evaluations so far. Jit it with ``static_argnums`` for ``evaluate``
        and ``iterations`` (:func:`compiled_scan` does, donating the state)."""

        def body(state, _):
            # The key of an iteration depends only on its index, so splitting a run into
            # chunks (or stopping and resuming it) does not change the random stream.
            state = self.step(iteration_key(key, state), state, evaluate)
            return state, self.metrics(state)

        return jax.lax.scan(body, state, None, length=iterations)

    def run(self, key: jax.Array, state: SchedulerState, evaluate, iterations: int):
        """Deprecated name of :meth:`scan` (``cmamae.run`` runs whole experiments)."""
        warnings.warn("Scheduler.run is now Scheduler.scan", DeprecationWarning, stacklevel=2)
        return self.scan(key, state, evaluate, iterations)


@functools.partial(jax.jit, static_argnums=(0,))
def _init(scheduler: Scheduler, key, x0) -> SchedulerState:
    # Compiled so that the state's leaves are distinct buffers (the emitters all start from
    # x0; eager code would alias it), which donating the state to compiled_scan requires.
    return scheduler._init(key, x0)


def seed_keys(key: jax.Array, seeds: int) -> tuple[jax.Array, jax.Array]:
    """``(init_keys, run_keys)``, each ``(seeds,)``: how a run's key becomes per-seed keys
    (module docstring), the same for :func:`cmamae.run`, the experiment runner and
    :class:`AskTell`."""
    k_init, k_run = jax.random.split(key)
    return jax.random.split(k_init, seeds), jax.random.split(k_run, seeds)


def init_state(
    scheduler: Scheduler, init_key: jax.Array, initial_solution=None, x0=None
) -> SchedulerState:
    """A seed's fresh state from its init key: ``init_key`` splits into the key of the
    initial solution, ``initial_solution(key) -> (n,)`` (a task's), and the key of
    :meth:`Scheduler.init`. With ``initial_solution`` None, ``x0`` ``(n,)`` is the initial
    solution. Pure (the compiled loop vmaps it over seeds)."""
    k_x0, k_init = jax.random.split(init_key)
    return scheduler.init(k_init, x0 if initial_solution is None else initial_solution(k_x0))


def iteration_key(run_key: jax.Array, state: SchedulerState) -> jax.Array:
    """The key of the iteration ``state`` is at: it depends only on the index, so chunked,
    resumed and host-driven runs draw the same numbers."""
    return jax.random.fold_in(run_key, state.iteration)


def phase_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(ask, evaluate, tell)`` keys of one phase of an iteration keyed ``key``."""
    k_ask, k_eval, k_tell = jax.random.split(key, 3)
    return k_ask, k_eval, k_tell


def _rows(start: int, size: int) -> slice:
    return slice(start, start + size)


def _check_rows(name: str, solutions, expected: int) -> None:
    if solutions.shape[0] != expected:
        raise ValueError(
            f"{name} must have {expected} rows (one per asked solution), "
            f"got shape {solutions.shape}"
        )


def _as_dict(obj) -> dict[str, Any]:
    """Fields of a pytree dataclass (shallow, trace-safe, unlike ``dataclasses.asdict``)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@functools.partial(jax.jit, static_argnums=(0, 3, 4), donate_argnums=(2,))
def compiled_scan(scheduler: Scheduler, key, state, evaluate, iterations: int):
    """:meth:`Scheduler.scan` compiled, with the state's buffers donated (updated in place)."""
    return scheduler.scan(key, state, evaluate, iterations)


def compiled_run(scheduler: Scheduler, key, state, evaluate, iterations: int):
    """Deprecated name of :func:`compiled_scan`."""
    warnings.warn("compiled_run is now compiled_scan", DeprecationWarning, stacklevel=2)
    return compiled_scan(scheduler, key, state, evaluate, iterations)


# ---------------------------------------------------------------------------- host driver
def _per_seed(one, seeded: bool):
    """``one`` over a leading seed axis of its arguments when ``seeded``, as the compiled loop
    (:func:`cmamae.compiled_loop.run_chunk`) runs seeds: one seed without the ``vmap`` (its
    numbers can differ in rounding from a size-1 ``vmap``'s), several under it. Not
    ``seeded``: ``one`` itself, on one seed's unbatched arguments."""
    if not seeded:
        return one

    def over(*args):
        if args[0].shape[0] != 1:
            return jax.vmap(one)(*args)
        out = one(*jax.tree_util.tree_map(lambda a: a[0], args))
        return jax.tree_util.tree_map(lambda a: a[None], out)

    return over


@functools.partial(jax.jit, static_argnums=(0, 3), donate_argnums=(2,))
def host_ask(scheduler: Scheduler, run_keys, states, seeded: bool = True):
    """The ask of the iteration each state is at, host-driven with the compiled loop's keys
    (module docstring): ``(solutions (seeds, batch, n), eval_keys (seeds,), states)``, the
    states donated (the archives pass through without a copy); with
    ``seeded=False`` one seed's unbatched ``run_key`` and state, and no seed axis. The
    evaluation key is the one the compiled loop would evaluate that batch with."""

    def one(run_key, state):
        k_ask, k_eval, _ = phase_keys(iteration_key(run_key, state))
        solutions, state = scheduler.ask(k_ask, state)
        return solutions, k_eval, state

    return _per_seed(one, seeded)(run_keys, states)


@functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=(2,))
def host_tell(
    scheduler: Scheduler, run_keys, states, solutions, objectives, measures, seeded: bool = True
):
    """The tell that completes :func:`host_ask`'s iteration (the states donated): ``(states,
    add_info, metrics)``, the metrics being :meth:`Scheduler.metrics` after the iteration;
    ``seeded`` as for :func:`host_ask`."""

    def one(run_key, state, x, f, m):
        _, _, k_tell = phase_keys(iteration_key(run_key, state))
        state, info = scheduler.tell(k_tell, state, x, f, m)
        return state, info, scheduler.metrics(state)

    return _per_seed(one, seeded)(run_keys, states, solutions, objectives, measures)


def check_host_scheduler(scheduler: Scheduler) -> None:
    """ValueError unless ``scheduler`` runs one plain ask/tell per iteration, as the host
    drivers do (no gradient pre-phase, no emitter learning from transitions)."""
    if scheduler.grad_batch_size > 0 or scheduler.needs_transitions:
        raise ValueError(
            "scheduler: host-side ask/tell drives one ask/tell per iteration of plain "
            "objectives and measures; emitters with a gradient pre-phase or that learn from "
            "transitions need the compiled loop (cmamae.run with a JAX task)"
        )


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_one(scheduler: Scheduler, init_key, initial_solution, x0):
    # Compiled so that the state's leaves are distinct buffers (see _init).
    return init_state(scheduler, init_key, initial_solution, x0)


class AskTell:
    """Host-side ask/tell for objectives written in plain Python (NumPy in, NumPy out).

    >>> loop = AskTell(scheduler, x0, seed=0)
    >>> x = loop.ask()                       # (batch_size, n) NumPy
    >>> loop.tell(objectives, measures)      # (batch_size,), (batch_size, m)
    >>> loop.stats()                         # result archive's stats as floats

    Each call runs one jit-compiled pure function (:func:`host_ask`, :func:`host_tell`); the
    archives stay on the device. The random numbers are the compiled loop's (module
    docstring): with ``x0=task.initial_solution`` and ``task.evaluate(x, loop.eval_key)`` as
    the objective, ``seed=s`` reproduces ``cmamae.run(task, algo, evals, seeds=1,
    key=jax.random.key(s))`` (tests/test_scheduler.py checks the archives bit for bit).

    Args:
        scheduler: the :class:`Scheduler` to drive (no gradient pre-phase, no emitter that
            learns from transitions).
        x0: ``(n,)`` the solution every emitter starts from, or a function ``key -> (n,)``
            that draws it (a task's ``initial_solution``).
        seed: the one seed of the whole run: it keys the initial solution, the emitters'
            initial states, every ``ask`` and every ``tell`` (restarts, elite sampling).
            pyribs instead seeds each emitter and archive separately.

    Attributes:
        scheduler: the scheduler given.
        state: the current :class:`SchedulerState` (archives, emitter states, iteration and
            evaluation counters), replaced by every ``ask`` and ``tell``; read elites with
            ``scheduler.best_archive.to_dataframe(scheduler.best_state(loop.state))``.
        run_key: the seed's run key (:func:`seed_keys`): iteration i draws from
            ``fold_in(run_key, i)``.
        eval_key: the evaluation key of the iteration the last ``ask`` began (None before):
            a stochastic JAX objective evaluated with it gives the compiled loop's numbers.
    """

    def __init__(self, scheduler: Scheduler, x0, seed: int = 0):
        try:
            check_host_scheduler(scheduler)
        except ValueError as err:
            raise ValueError(f"{err} (AskTell)") from None
        self.scheduler = scheduler
        (init_key,), (self.run_key,) = seed_keys(jax.random.key(seed), 1)
        if callable(x0):
            self.state = _init_one(scheduler, init_key, x0, None)
        else:
            self.state = _init_one(scheduler, init_key, None, jnp.asarray(x0))
        self.eval_key: jax.Array | None = None
        self._asked: jax.Array | None = None

    def ask(self) -> np.ndarray:
        """The next ``(batch_size, n)`` solutions to evaluate, every emitter group's in
        order."""
        self._asked, self.eval_key, self.state = host_ask(
            self.scheduler, self.run_key, self.state, False
        )
        return np.asarray(self._asked)

    def tell(self, objectives, measures) -> AddInfo:
        """Results for the last ``ask``'s solutions, in the same order: ``objectives``
        ``(batch_size,)`` (higher is better) and ``measures`` ``(batch_size, m)``. Inserts
        them, tells the emitters, and returns the archive's ``AddInfo`` (status, value)."""
        if self._asked is None:
            raise ValueError("tell() must follow ask(): no solutions are waiting for results")
        b = self.scheduler.batch_size
        m = self.scheduler.archive.measure_dim
        objectives = np.asarray(objectives, dtype=self._asked.dtype)
        measures = np.asarray(measures, dtype=self._asked.dtype)
        if objectives.shape != (b,):
            raise ValueError(f"objectives must have shape ({b},), got {objectives.shape}")
        if measures.shape != (b, m):
            raise ValueError(f"measures must have shape ({b}, {m}), got {measures.shape}")
        self.state, info, _ = host_tell(
            self.scheduler, self.run_key, self.state, self._asked, objectives, measures, False
        )
        self._asked = None
        return info

    def stats(self) -> dict[str, float]:
        """The result archive's stats (:class:`cmamae.archives.ArchiveStats`) as floats:
        num_elites, coverage, qd_score, norm_qd_score, obj_max, obj_mean, ..."""
        stats = self.scheduler.stats(self.state)
        return {k: float(v) for k, v in _as_dict(stats).items()}
