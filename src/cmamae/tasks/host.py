"""Host-evaluated tasks: simulators that are not JAX (PyBullet, native MuJoCo), run in NumPy.

A :class:`HostTask` is a :class:`~cmamae.tasks.base.Task` whose ``evaluate`` runs on the host,
one episode per solution, so it cannot be traced into the compiled loop (``cmamae.run`` and
the compiled runner refuse it; the runner drives it with host-side ask/tell instead). Its
evaluation splits into three picklable, hashable pieces, so that a Dask worker can run any
subset of a batch (:mod:`cmamae.experiment.dask_cluster`) and get the same numbers:

* ``simulator() -> sim``: builds one simulator; each process keeps one per task alive
  (:func:`simulator_for`), never one per episode;
* ``episode_args(key, batch) -> list``: one argument per solution (a reset seed, a start
  state), drawn on the host from the run's key, so results do not depend on which process
  evaluates which solution;
* ``episode(sim, solution, arg) -> (objective, measures)``: one episode; ``solution`` ``(n,)``,
  ``measures`` ``(m,)``.

An episode that raises is retried once on a fresh simulator; a second failure gives a NaN
objective and NaN measures, which the archive rejects and counts (``num_invalid``), and is
logged (logger ``cmamae.tasks.host``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cmamae.tasks.base import Task, bind

log = logging.getLogger(__name__)

# One live simulator per (factory, thread): a simulator is never shared between threads.
_SIMULATORS: dict[tuple[Any, int], Any] = {}


@dataclasses.dataclass(frozen=True)
class HostTask(Task):
    """A task evaluated on the host (see the module docstring).

    Attributes (besides :class:`Task`'s):
        simulator: ``simulator() -> sim``, a hashable callable (:func:`~cmamae.tasks.bind`).
        episode_args: ``episode_args(key, batch) -> list`` of ``batch`` per-solution arguments.
        episode: ``episode(sim, solution (n,), arg) -> (objective, measures (m,))``.
    """

    simulator: Callable[[], Any] | None = None
    episode_args: Callable[[Any, int], Sequence[Any]] | None = None
    episode: Callable[[Any, np.ndarray, Any], tuple[float, np.ndarray]] | None = None

    def __post_init__(self):
        super().__post_init__()
        for field in ("simulator", "episode_args", "episode"):
            if not callable(getattr(self, field)):
                raise ValueError(
                    f"a HostTask needs a callable {field}, got {getattr(self, field)!r}"
                )

    @property
    def host_evaluated(self) -> bool:
        return True


def host_task(**fields) -> HostTask:
    """A :class:`HostTask` whose ``evaluate`` runs the episodes in this process."""
    evaluate = bind(
        evaluate_here,
        simulator=fields["simulator"],
        episode_args=fields["episode_args"],
        episode=fields["episode"],
        measure_dim=len(fields["measure_names"]),
        name=fields["name"],
    )
    return HostTask(evaluate=evaluate, **fields)


def simulator_for(factory: Callable[[], Any]) -> Any:
    """This thread's live simulator built by ``factory`` (built on first use)."""
    slot = (factory, threading.get_ident())
    sim = _SIMULATORS.get(slot)
    if sim is None:
        sim = _SIMULATORS[slot] = factory()
    return sim


def drop_simulator(factory: Callable[[], Any]) -> None:
    """Forget (and close, if it can be closed) this thread's simulator of ``factory``."""
    sim = _SIMULATORS.pop((factory, threading.get_ident()), None)
    close = getattr(sim, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # a broken simulator may fail to close; it is dropped either way
            log.debug("closing a dropped simulator failed", exc_info=True)


def run_episodes(
    simulator: Callable[[], Any],
    episode: Callable,
    solutions: np.ndarray,
    args: Sequence[Any],
    measure_dim: int,
    retries: int = 1,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Episodes of ``solutions`` ``(k, n)`` with ``args`` (``k`` entries) on this process's
    simulator. Returns objectives ``(k,)``, measures ``(k, measure_dim)`` (float64) and the
    failures ``[(row, traceback text)]`` of rows that raised ``retries + 1`` times (NaN rows)."""
    solutions = np.asarray(solutions)
    k = len(solutions)
    if len(args) != k:
        raise ValueError(f"args must have one entry per solution ({k}), got {len(args)}")
    objectives = np.full(k, np.nan)
    measures = np.full((k, measure_dim), np.nan)
    failures = []
    for i in range(k):
        for attempt in range(retries + 1):
            try:
                f, m = episode(simulator_for(simulator), solutions[i], args[i])
                objectives[i] = f
                measures[i] = m
                break
            except Exception:
                drop_simulator(simulator)  # the next attempt starts from a fresh simulator
                if attempt == retries:
                    failures.append((i, traceback.format_exc()))
    return objectives, measures, failures


def log_failures(task_name: str, failures: list[tuple[int, str]]) -> None:
    """Log each failed evaluation (row and traceback) at WARNING."""
    for row, text in failures:
        log.warning(
            "task %s: evaluation of row %d failed twice; objective NaN\n%s", task_name, row, text
        )


def evaluate_here(solutions, key, *, simulator, episode_args, episode, measure_dim, name):
    """``task.evaluate`` of a :class:`HostTask`: every episode in this process.

    ``solutions`` ``(batch, n)`` -> objectives ``(batch,)``, measures ``(batch, m)`` (NumPy).
    Raises TypeError under a JAX transformation (a host task cannot be compiled)."""
    import jax

    if isinstance(solutions, jax.core.Tracer):
        raise TypeError(
            "this task is evaluated on the host (a simulator that is not JAX): it cannot run "
            "inside jit/vmap/scan; run it with the experiment runner (cmamae run) or "
            "cmamae.scheduler.AskTell"
        )
    solutions = np.asarray(solutions)
    args = episode_args(key, len(solutions))
    objectives, measures, failures = run_episodes(simulator, episode, solutions, args, measure_dim)
    log_failures(name, failures)
    return objectives, measures


def episode_seeds(key, batch: int) -> list[int]:
    """``batch`` reset seeds in ``[0, 2**31)`` drawn from ``key`` (one per solution)."""
    import jax
    import jax.numpy as jnp

    bits = jax.random.bits(key, (batch,), jnp.uint32)
    return [int(b) >> 1 for b in np.asarray(bits)]


def require(module: str, extra: str, what: str) -> None:
    """Import ``module`` or raise a ValueError that names the pip extra to install."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"{what} needs the optional dependencies of the '{extra}' extra "
            f"(pip install 'cmamae[{extra}]'): {err}"
        ) from None
