"""The MuJoCo locomotion tasks on native MuJoCo as host tasks: ``ant-native``,
``halfcheetah-native``, ``hopper-native``, ``walker2d-native``.

Same model, policy, reward, measures and reset state as the MJX task of the same robot
(:mod:`cmamae.tasks.locomotion.native` is the engine), but evaluated on the host one episode
per solution, so that a CPU cluster can run them through Dask
(:mod:`cmamae.experiment.distributed`). For the same key they give the numbers of
``native.evaluate`` (and, up to float32-vs-float64 physics, of the MJX task).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cmamae.tasks import host
from cmamae.tasks.base import bind, register
from cmamae.tasks.locomotion import ROBOTS, locomotion_task


def make_env(robot, adaptation):
    """A :class:`~cmamae.tasks.locomotion.native.NativeEnv` (one ``MjData`` kept alive)."""
    from cmamae.tasks.locomotion.native import NativeEnv

    return NativeEnv(robot, adaptation)


def start_states(key, batch: int, *, task) -> list[tuple[np.ndarray, np.ndarray]]:
    """The MJX task's reset state for ``key``, once per solution (common random numbers)."""
    from cmamae.tasks.locomotion.native import start_state

    return [start_state(task, key)] * batch


def episode(env, solution, start, *, policy, episode_length: int):
    """One episode from ``start = (qpos, qvel)``: ``(return, foot-contact fractions)``."""
    qpos, qvel = start
    total, contact_steps, steps = env.episode(policy, solution, qpos, qvel, episode_length)
    return total, contact_steps / max(steps, 1)


def native_task(robot_name: str, **settings) -> host.HostTask:
    """The host-evaluated twin of ``tasks.get(robot_name, **settings)``."""
    task = locomotion_task(robot_name, **settings)
    s = dict(task.evaluate.kwargs)
    fields = {
        f.name: getattr(task, f.name)
        for f in dataclasses.fields(task)
        if f.name not in ("evaluate", "evaluate_transitions")
    }
    fields["name"] = f"{robot_name}-native"
    return host.host_task(
        **fields,
        simulator=bind(make_env, robot=s["robot"], adaptation=s["adaptation"]),
        episode_args=bind(start_states, task=task),
        episode=bind(episode, policy=s["policy"], episode_length=s["episode_length"]),
    )


def _factory(robot_name: str):
    def factory(
        episode_length: int = 1000,
        hidden_sizes: tuple[int, ...] = (128, 128),
        reset_noise_scale: float | None = None,
        adapted: bool = True,
    ) -> host.HostTask:
        return native_task(
            robot_name,
            episode_length=episode_length,
            hidden_sizes=hidden_sizes,
            reset_noise_scale=reset_noise_scale,
            adapted=adapted,
        )

    factory.__name__ = factory.__qualname__ = f"{robot_name}_native_task"
    factory.__doc__ = f"``{robot_name}`` on native MuJoCo, evaluated on the host or by Dask."
    return register(f"{robot_name}-native")(factory)


for _name in ROBOTS:
    _factory(_name)
