"""The MuJoCo locomotion tasks on native MuJoCo as host tasks: ``ant-native``,
``halfcheetah-native``, ``hopper-native``, ``walker2d-native``.

Same model, policy, reward, measures and reset state as the locomotion task of the same robot
on its native backend (``tasks.get("ant", backend="native")``), but evaluated on the host
outside the compiled loop, so that a CPU cluster can run them through Dask
(:mod:`cmamae.experiment.dask_cluster`). Each Dask task is a chunk of the batch, evaluated by
the batched engine (:func:`cmamae.tasks.locomotion.native_batch.run_episodes`: one
simulation per solution of the chunk, stepped on the thread that runs the chunk, so a worker
with k threads runs k chunks side by side), which gives each solution the numbers of the
per-episode twin (:func:`cmamae.tasks.locomotion.native.evaluate`) and of the native backend
for the same key. The per-episode pieces of :class:`~cmamae.tasks.host.HostTask` (simulator,
episode) stay: they run the twin, one episode at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from cmamae.tasks import host
from cmamae.tasks.base import bind, register
from cmamae.tasks.locomotion import ROBOTS, locomotion_task


@dataclasses.dataclass(frozen=True)
class NativeHostTask(host.HostTask):
    """A :class:`~cmamae.tasks.host.HostTask` that also evaluates a chunk of solutions at once.

    Attributes (besides HostTask's):
        evaluate_chunk: ``evaluate_chunk(solutions (k, n), args (k entries of
            episode_args)) -> (objectives (k,), measures (k, m), failures [(row, text)])``,
            :func:`cmamae.tasks.host.run_episodes`' contract; Dask workers call it
            (:class:`cmamae.experiment.dask_cluster.DaskEvaluator`).
    """

    evaluate_chunk: Callable[[np.ndarray, Sequence], tuple] | None = None


def make_env(robot, adaptation):
    """A :class:`~cmamae.tasks.locomotion.native.NativeEnv` (one ``MjData`` kept alive)."""
    from cmamae.tasks.locomotion.native import NativeEnv

    return NativeEnv(robot, adaptation)


def start_states(key, batch: int, *, task) -> list[tuple[np.ndarray, np.ndarray]]:
    """The task's reset state for ``key``, once per solution (common random numbers)."""
    from cmamae.tasks.locomotion.native import start_state

    return [start_state(task, key)] * batch


def episode(env, solution, start, *, policy, episode_length: int):
    """One episode from ``start = (qpos, qvel)`` on the twin: ``(return, foot fractions)``."""
    qpos, qvel = start
    total, contact_steps, steps = env.episode(policy, solution, qpos, qvel, episode_length)
    return total, contact_steps / max(steps, 1)


def chunk(solutions, args, *, robot, adaptation, policy, episode_length: int, threads):
    """``evaluate_chunk``: every solution of ``solutions`` ``(k, n)`` from its start state
    ``args[i] = (qpos, qvel)`` in one batch of ``k`` simulations on ``threads`` threads
    (None: 1 on a Dask worker, whose threads each run a chunk; else this process's cores).
    A simulation in which MuJoCo raises gets NaN and is reported in ``failures``."""
    from cmamae.tasks.locomotion.native_batch import run_episodes

    solutions = np.asarray(solutions)
    if len(args) != len(solutions):
        raise ValueError(
            f"args must have one entry per solution ({len(solutions)}), got {len(args)}"
        )
    if threads is None and _on_dask_worker():
        threads = 1
    if not len(args):
        return np.zeros(0), np.zeros((0, len(robot.feet))), []
    qpos = np.stack([np.asarray(q, np.float64) for q, _ in args])
    qvel = np.stack([np.asarray(v, np.float64) for _, v in args])
    episodes = run_episodes(
        robot, adaptation, policy, solutions, qpos, qvel, episode_length, threads, dtype=np.float64
    )
    failures = sorted(episodes.errors.items())
    return episodes.total, episodes.measures, failures


def _on_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def evaluate_batched(solutions, key, *, episode_args, evaluate_chunk, name):
    """``task.evaluate`` of a native host task in this process: the whole batch as one chunk.
    ``solutions`` ``(batch, n)`` -> objectives ``(batch,)``, measures ``(batch, m)`` (NumPy);
    a TypeError under a JAX transformation, as every host task."""
    import jax

    if isinstance(solutions, jax.core.Tracer):
        raise TypeError(
            f"task {name!r} is evaluated on the host: it cannot run inside jit/vmap/scan; use "
            f"the locomotion task with backend='native' there (tasks.get({name[:-7]!r}, "
            "backend='native'))"
        )
    solutions = np.asarray(solutions)
    objectives, measures, failures = evaluate_chunk(solutions, episode_args(key, len(solutions)))
    host.log_failures(name, failures)
    return objectives, measures


def native_task(robot_name: str, threads: int | None = None, **settings) -> NativeHostTask:
    """The host-evaluated twin of ``tasks.get(robot_name, backend="native", **settings)``."""
    task = locomotion_task(robot_name, backend="native", threads=threads, **settings)
    s = dict(task.evaluate.kwargs)
    fields = {
        f.name: getattr(task, f.name)
        for f in dataclasses.fields(task)
        if f.name not in ("evaluate", "evaluate_transitions")
    }
    name = fields["name"] = f"{robot_name}-native"
    episode_args = bind(start_states, task=task)
    evaluate_chunk = bind(
        chunk,
        robot=s["robot"],
        adaptation=s["adaptation"],
        policy=s["policy"],
        episode_length=s["episode_length"],
        threads=threads,
    )
    return NativeHostTask(
        **fields,
        evaluate=bind(
            evaluate_batched, episode_args=episode_args, evaluate_chunk=evaluate_chunk, name=name
        ),
        simulator=bind(make_env, robot=s["robot"], adaptation=s["adaptation"]),
        episode_args=episode_args,
        episode=bind(episode, policy=s["policy"], episode_length=s["episode_length"]),
        evaluate_chunk=evaluate_chunk,
    )


def _factory(robot_name: str):
    def factory(
        episode_length: int = 1000,
        hidden_sizes: tuple[int, ...] = (128, 128),
        reset_noise_scale: float | None = None,
        adapted: bool = True,
        threads: int | None = None,
    ) -> NativeHostTask:
        return native_task(
            robot_name,
            threads=threads,
            episode_length=episode_length,
            hidden_sizes=hidden_sizes,
            reset_noise_scale=reset_noise_scale,
            adapted=adapted,
        )

    factory.__name__ = factory.__qualname__ = f"{robot_name}_native_task"
    factory.__doc__ = (
        f"``{robot_name}`` on native MuJoCo, evaluated on the host or by Dask (``threads``: "
        "simulation threads of an in-process evaluation; None: 1 per chunk on a Dask worker, "
        "this process's cores otherwise)."
    )
    return register(f"{robot_name}-native")(factory)


for _name in ROBOTS:
    _factory(_name)
