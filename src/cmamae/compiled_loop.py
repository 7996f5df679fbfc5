"""The fully compiled QD loop over several seeds: ``cmamae.run(task, algo, evals, seeds)``.

All seeds are one program: the scheduler state gets a leading seed axis and one ``jit(vmap(
lax.scan))`` chunk advances every seed by many iterations; the host wakes only between chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from cmamae import compile_cache, device_mesh
from cmamae.provenance import Layout
from cmamae.scheduler import Scheduler, SchedulerState, init_state
from cmamae.scheduler import seed_keys as seed_keys  # the runner's and tests' import


@dataclasses.dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        scheduler: the scheduler that ran (archive geometry, emitters).
        state: the final :class:`SchedulerState`, every leaf with a leading seed axis.
        metrics: per-iteration metrics, each a NumPy array ``(seeds, iterations)``: the result
            archive's stats (num_elites, coverage, qd_score, norm_qd_score, obj_max, obj_mean,
            num_invalid) and the evaluations done after that iteration.
        task: the task that was run.
        run_keys: ``(seeds,)`` the per-seed keys of the iterations
            (:func:`cmamae.scheduler.seed_keys`).
        layout: how the evaluations were laid out (:class:`cmamae.provenance.Layout`); with
            ``run_keys`` and each elite's provenance it reproduces the elite's scoring
            evaluation (:func:`cmamae.provenance.reproduce`).
    """

    scheduler: Scheduler
    state: SchedulerState
    metrics: dict[str, np.ndarray]
    task: Any = None
    run_keys: jax.Array | None = None
    layout: Any = None

    def archive_state(self, seed: int = 0):
        """The result archive's state of one seed (the archive's own when α = 1)."""
        best = self.scheduler.best_state(self.state)
        return jax.tree_util.tree_map(lambda a: a[seed], best)

    def final(self) -> dict[str, np.ndarray]:
        """The last iteration's metrics, one value per seed."""
        return {k: v[:, -1] for k, v in self.metrics.items()}


def evaluate_fn(scheduler: Scheduler, task, algo_name: str = "the algorithm") -> Callable:
    """The task function the compiled loop calls: ``task.evaluate``, or
    ``task.evaluate_transitions`` when an emitter of ``scheduler`` learns from transitions.

    Raises:
        ValueError: the scheduler needs transitions and the task cannot provide them.
    """
    if not scheduler.needs_transitions:
        return task.evaluate
    if task.evaluate_transitions is None:
        from cmamae import tasks

        able = [n for n in tasks.names() if _has_transitions(n)]
        raise ValueError(
            f"{algo_name} needs transitions from the task's rollouts; task {task.name!r} "
            f"cannot provide them (tasks that can: {able})"
        )
    return task.evaluate_transitions


def _has_transitions(name: str) -> bool:
    from cmamae import tasks

    try:
        return tasks.get(name).evaluate_transitions is not None
    except Exception:  # a task whose optional dependency is missing
        return False


def calls_host_threads(task) -> bool:
    """Whether ``task`` evaluates through a host callback on CPU threads (the locomotion
    tasks' native backend), which a program sharded over several devices cannot call."""
    from cmamae.tasks.locomotion import resolved_settings

    return resolved_settings(task).get("backend") == "native"


def init_states(scheduler: Scheduler, task, init_keys: jax.Array) -> SchedulerState:
    """Fresh scheduler states with a leading seed axis, one per key of ``init_keys``
    (:func:`cmamae.scheduler.init_state`)."""
    return _init_seeds(scheduler, task.initial_solution, init_keys)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_seeds(scheduler: Scheduler, initial_solution: Callable, keys):
    return jax.vmap(lambda key: init_state(scheduler, key, initial_solution))(keys)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5), donate_argnums=(2,))
def run_chunk(scheduler: Scheduler, keys, states, evaluate: Callable, iterations: int, mesh=None):
    """``iterations`` of every seed (leading axis of ``keys`` and ``states``), compiled, the
    states donated. One seed runs without the seed ``vmap``: a size-1 batch axis made the
    MJX rollouts inside 1.5x slower on the CPU (the numbers are the same up to rounding).

    ``mesh`` (static; from :func:`cmamae.device_mesh.batch_mesh`, with ``keys`` and
    ``states`` placed on it): each group of devices along "seeds" runs its own seeds (one
    seed without the ``vmap`` as above), the evaluations' solutions split over "solutions";
    None: the unsharded program."""
    evaluate = device_mesh.sharded_evaluate(evaluate, mesh)
    run_one = lambda key, state: scheduler.scan(key, state, evaluate, iterations)

    def run_seeds(keys, states):
        if keys.shape[0] == 1:
            first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)
            return jax.tree_util.tree_map(lambda a: a[None], run_one(keys[0], first(states)))
        return jax.vmap(run_one)(keys, states)

    states, metrics = device_mesh.per_seed_group(run_seeds, mesh)(keys, states)
    return device_mesh.keep_placed(states, mesh), device_mesh.replicate(metrics, mesh)


def run(
    task,
    algo,
    evals: int,
    seeds: int = 1,
    key: jax.Array | None = None,
    chunk_iterations: int | None = None,
    on_chunk: Callable[[int, dict[str, np.ndarray]], Any] | None = None,
    devices: int | str | None = None,
) -> RunResult:
    """Run ``algo`` (an :class:`cmamae.algorithms.Algorithm`) on ``task`` for ``evals``
    evaluations per seed, all ``seeds`` in one compiled program.

    The budget is exact in whole iterations: ``evals // e`` iterations of ``e =
    scheduler.evaluations_per_iteration`` evaluations (the main batch plus any gradient
    samples; a ValueError if that is zero). ``chunk_iterations`` (default: all) bounds how
    many iterations one compiled call advances; ``on_chunk(iterations_done, metrics_so_far)``
    is called on the host after each chunk.

    ``devices`` (``None``: one device; ``N``; ``"all"``: this process's devices; the command
    line's ``--devices``) shards the seeds and the evaluations' solutions over a device mesh
    (:mod:`cmamae.device_mesh`); the metrics are the unsharded ones up to float
    rounding. A ValueError for more devices than exist. With several JAX processes
    (``jax.distributed.initialize()``) every process makes the same call, ``devices="all"``
    spans them all, and the returned ``state`` is made of global arrays.
    """
    compile_cache.enable()  # compiled programs persist across processes
    scheduler = algo.scheduler
    per_iteration = scheduler.evaluations_per_iteration
    if isinstance(evals, bool) or not isinstance(evals, int) or evals < per_iteration:
        raise ValueError(
            f"evals must be an integer >= the evaluations of one iteration {per_iteration}, "
            f"got {evals!r}"
        )
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    if task.host_evaluated:
        raise ValueError(
            f"task {task.name!r} is evaluated on the host (a simulator that is not JAX) and "
            "cannot run in the compiled loop; use the experiment runner (cmamae run, "
            "cmamae.experiment.start), which drives it with host-side ask/tell"
        )
    evaluate = evaluate_fn(scheduler, task, repr(algo.name))
    mesh = device_mesh.plan(devices, seeds, scheduler)
    if mesh is not None and calls_host_threads(task):
        raise ValueError(
            f"devices: task {task.name!r} runs its simulations on this machine's CPU threads "
            "(the native backend), which a program sharded over devices cannot call; drop "
            "devices or build the task with backend='mjx'"
        )
    iterations = evals // per_iteration
    chunk = iterations if chunk_iterations is None else max(1, min(chunk_iterations, iterations))
    key = jax.random.key(0) if key is None else key
    init_keys, run_keys = seed_keys(key, seeds)
    run_keys = device_mesh.place(run_keys, mesh)
    states = device_mesh.place(init_states(scheduler, task, init_keys), mesh)

    pieces: list[dict[str, np.ndarray]] = []
    done = 0
    for _ in range(math.ceil(iterations / chunk)):
        length = min(chunk, iterations - done)
        states, metrics = run_chunk(scheduler, run_keys, states, evaluate, length, mesh)
        pieces.append(jax.tree_util.tree_map(np.asarray, metrics))
        done += length
        if on_chunk is not None:
            on_chunk(done, _concat(pieces))
    return RunResult(
        scheduler=scheduler,
        state=states,
        metrics=_concat(pieces),
        task=task,
        run_keys=run_keys,
        layout=Layout.of(seeds, mesh),
    )


def _concat(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in pieces], axis=1) for k in pieces[0]}
