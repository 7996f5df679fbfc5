"""Where a run's iterations execute: the compiled chunk (optionally sharded over devices), or
host-side ask/tell with a Dask cluster evaluating a host task, or with the locomotion tasks'
native backend evaluating on this machine's threads (:func:`native_evaluate`).

The runner asks an :class:`Execution` (``--cluster``, ``--workers``, ``--devices``: how to run,
not what, so they are not part of ``config.json`` and do not change results) for an *advance*:
``advance.place(states)`` puts fresh or restored states where they run, and
``advance.prepare(states, length, progress)`` does one-off work (compiling a chunk length), and
``advance(states, length) -> (states, metrics)`` runs ``length`` iterations of every seed;
``metrics`` is a dict of NumPy arrays ``(seeds, length)`` (the result archive's stats and the
evaluations so far), in either mode.

The host mode (:class:`HostAdvance`) is the host driver of :class:`cmamae.AskTell` over all
seeds at once (:func:`cmamae.scheduler.host_ask`, :func:`cmamae.scheduler.host_tell`), with
the compiled loop's key chain, so a JAX task run through it gives the compiled loop's numbers
(the tests check this).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import compile_cache, device_mesh
from cmamae.compiled_loop import calls_host_threads, run_chunk
from cmamae.experiment import dask_cluster
from cmamae.experiment.config import ConfigError
from cmamae.scheduler import check_host_scheduler, host_ask, host_tell


@dataclasses.dataclass(frozen=True)
class Execution:
    """How to execute a run.

    Attributes:
        cluster: a Dask scheduler address ``tcp://HOST:PORT`` for host tasks; None: an
            in-process LocalCluster.
        workers: worker processes of that LocalCluster (default: one per core).
        devices: devices the compiled loop's seeds and evaluations' solutions are sharded
            over (:mod:`cmamae.device_mesh`): a count or ``"all"``; None: one device.
    """

    cluster: str | None = None
    workers: int | None = None
    devices: int | str | None = None

    def validate(self, task, scheduler) -> None:
        """Raise ConfigError for settings that cannot work with ``task`` and ``scheduler``
        (before any disk or cluster work; an unreachable ``cluster`` fails here within
        seconds)."""
        try:
            if jax.process_count() > 1:
                raise ConfigError(
                    "the experiment runner (run folders, checkpoints) runs in one process; "
                    "after jax.distributed.initialize() use cmamae.run(..., devices='all')"
                )
            if task.host_evaluated:
                check_host_scheduler(scheduler)
                if self.devices is not None:
                    raise ConfigError(
                        f"devices shards the compiled loop; task {task.name!r} is evaluated on "
                        "the host (use --workers or --cluster)"
                    )
                dask_cluster.check_workers(self.workers)
                if self.cluster is not None:
                    if self.workers is not None:
                        raise ConfigError("workers sizes the local cluster; drop it with cluster")
                    dask_cluster.check_reachable(self.cluster)
                dask_cluster.require_dask()
            else:
                if self.cluster is not None or self.workers is not None:
                    raise ConfigError(
                        f"cluster and workers apply to host-evaluated tasks (QDGym, *-native); "
                        f"task {task.name!r} runs in the compiled loop (use --devices)"
                    )
                if len(device_mesh.resolve_devices(self.devices)) > 1 and calls_host_threads(task):
                    raise ConfigError(
                        f"devices shards the compiled loop over JAX devices; task {task.name!r} "
                        "runs its simulations on this machine's CPU threads (the native "
                        "backend: set task.threads), which JAX cannot shard; drop --devices or "
                        "use --set task.backend=mjx"
                    )
        except ValueError as err:
            raise ConfigError(str(err)) from None

    @contextlib.contextmanager
    def open(self, scheduler, task, run_keys, evaluate, context=None):
        """The advance for this run (a context: a Dask client is closed on exit). ``context``:
        what fixes the run's programs, for the whole-program cache
        (:func:`cmamae.compile_cache.load_or_compile`; None, or that cache off: JAX's cache
        only)."""
        self.validate(task, scheduler)
        native = native_evaluate(task, scheduler)
        if native is not None:
            yield HostAdvance(scheduler, run_keys, native, context)
            return
        if not task.host_evaluated:
            mesh = device_mesh.plan(self.devices, len(run_keys), scheduler)
            run_keys = device_mesh.place(run_keys, mesh)
            yield CompiledAdvance(scheduler, evaluate, run_keys, mesh, context)
            return
        try:
            evaluator = dask_cluster.DaskEvaluator(task, cluster=self.cluster, workers=self.workers)
        except dask_cluster.ClusterError as err:
            raise ConfigError(str(err)) from None
        with evaluator:
            yield HostAdvance(scheduler, run_keys, dask_evaluate(task, evaluator), context)


class CompiledAdvance:
    """Chunks of the compiled ``jit(vmap(lax.scan))`` loop, one compilation per length,
    sharded over ``mesh`` (:func:`cmamae.device_mesh.batch_mesh`: seeds and the
    evaluations' solutions) when given; ``run_keys`` must be placed on it. ``context``: as
    for :meth:`Execution.open`."""

    def __init__(self, scheduler, evaluate, run_keys, mesh=None, context=None):
        self.scheduler, self.evaluate, self.run_keys, self.mesh = (
            scheduler,
            evaluate,
            run_keys,
            mesh,
        )
        self.context = context
        self._compiled: dict[int, object] = {}

    def place(self, states):
        """``states`` (seeds leading) placed on the mesh (:func:`cmamae.device_mesh.place`)."""
        return device_mesh.place(states, self.mesh)

    def prepare(self, states, length: int, progress) -> None:
        """Compile the ``length``-iteration chunk, or load it from the persistent cache, once
        per length, and tell ``progress`` how long it took."""
        if length not in self._compiled:
            t0 = time.perf_counter()
            self._compiled[length], loaded = compile_cache.load_or_compile(
                "run_chunk",
                lambda keys, states: run_chunk(
                    self.scheduler, keys, states, self.evaluate, length, self.mesh
                ),
                (self.run_keys, states),
                self.context,
                static={"length": length, "mesh": repr(self.mesh)},
                donate_argnums=(1,),
            )
            where = device_mesh.describe(self.mesh)
            progress.message(
                f"{'loaded the compiled' if loaded else 'compiled a'} {length}-iteration "
                f"chunk{' ' + where if where else ''} in {time.perf_counter() - t0:.1f} s"
                + (" (compile cache)" if loaded else "")
            )

    def __call__(self, states, length: int):
        states, metrics = self._compiled[length](self.run_keys, states)
        return states, jax.tree_util.tree_map(np.asarray, metrics)


def native_evaluate(task, scheduler):
    """``evaluate_seeds`` for :class:`HostAdvance` when ``task`` runs on the locomotion tasks'
    native backend and ``scheduler`` is a plain ask/tell one (None otherwise: the compiled
    loop, with the episodes in a host callback).

    Both paths give the same numbers (the host driver follows the compiled loop's key chain,
    and :func:`~cmamae.tasks.locomotion.native_batch.evaluate_seeds` is the function the
    callback calls) at the same speed per iteration (the episodes dominate), but only the
    host path's programs (ask, tell) go to the persistent compilation cache, which keeps
    nothing with a host callback: a second run or a resume starts without compiling."""
    if not calls_host_threads(task) or scheduler.grad_batch_size or scheduler.needs_transitions:
        return None
    from cmamae.tasks.locomotion import native_batch

    settings = dict(task.evaluate.kwargs)

    def evaluate_seeds(solutions: np.ndarray, eval_keys) -> tuple[np.ndarray, np.ndarray]:
        return native_batch.evaluate_seeds(solutions, eval_keys, **settings)

    return evaluate_seeds


def dask_evaluate(task, evaluator):
    """``evaluate_seeds`` for :class:`HostAdvance`: every seed's batch in one Dask batch,
    each seed's episode arguments from its evaluation key."""

    def evaluate_seeds(solutions: np.ndarray, eval_keys) -> tuple[np.ndarray, np.ndarray]:
        seeds, batch = solutions.shape[:2]
        args = [a for k in eval_keys for a in task.episode_args(k, batch)]
        objectives, measures = evaluator.evaluate(solutions.reshape(seeds * batch, -1), args)
        return objectives.reshape(seeds, batch), measures.reshape(seeds, batch, -1)

    evaluate_seeds.evaluator = evaluator
    return evaluate_seeds


class HostAdvance:
    """Host-side iterations for every seed: one jitted ask for all seeds, the evaluation on the
    host (``evaluate_seeds(solutions (seeds, batch, n), eval_keys (seeds,)) -> (objectives
    (seeds, batch), measures (seeds, batch, m))``), one jitted tell for all seeds.
    ``context``: as for :meth:`Execution.open`."""

    def __init__(self, scheduler, run_keys, evaluate_seeds, context=None):
        check_host_scheduler(scheduler)
        self.scheduler, self.run_keys, self.evaluate_seeds = scheduler, run_keys, evaluate_seeds
        self.context = context
        self._failed = 0
        self._programs: dict[tuple, object] = {}  # (name, argument signature) -> compiled

    def place(self, states):
        """``states`` as they are: the host path runs them on the default device."""
        return states

    def prepare(self, states, length: int, progress) -> None:
        """Nothing compiles here; tells ``progress`` when more evaluations failed twice
        (objective NaN) since the last chunk."""
        failed = getattr(getattr(self.evaluate_seeds, "evaluator", None), "num_failed", 0)
        if failed > self._failed:
            progress.message(f"{failed:,} evaluations failed twice so far (objective NaN)")
            self._failed = failed

    def __call__(self, states, length: int):
        rows = []
        for _ in range(length):
            solutions, eval_keys, states = self._run(host_ask, self.run_keys, states)
            objectives, measures = self.evaluate_seeds(np.asarray(solutions), eval_keys)
            dtype = solutions.dtype
            objectives, measures = jnp.asarray(objectives, dtype), jnp.asarray(measures, dtype)
            states, _, metrics = self._run(
                host_tell, self.run_keys, states, solutions, objectives, measures
            )
            rows.append(metrics)
        # stacked on the device, then one copy per metric to the host
        return states, jax.tree_util.tree_map(lambda *r: np.asarray(jnp.stack(r, axis=1)), *rows)

    def _run(self, program, *args):
        """``program(self.scheduler, *args)`` (:func:`host_ask` or :func:`host_tell`),
        compiled once per argument signature (kept whole in the whole-program cache)."""
        leaves, treedef = jax.tree_util.tree_flatten(args)
        signature = (program.__name__, treedef) + tuple(
            (a.shape, a.dtype, getattr(a, "weak_type", False), a.sharding) for a in leaves
        )
        compiled = self._programs.get(signature)
        if compiled is None:
            compiled, _ = compile_cache.load_or_compile(
                program.__name__,
                functools.partial(program, self.scheduler),
                args,
                self.context,
                donate_argnums=(1,),  # the states
            )
            self._programs[signature] = compiled
        return compiled(*args)
