"""QDGym on PyBullet, the scaling paper's tasks: ``qd-ant``, ``qd-halfcheetah``, ``qd-hopper``,
``qd-walker``.

QDGym (``QDgym_envs.py``) subclasses pybullet's own locomotion environments
(``pybullet_envs.gym_locomotion_envs``) and changes nothing but bookkeeping: after every
``step`` it adds the reward to the episode's total and the robot's ``feet_contact`` flags to a
per-foot count (Half-Cheetah: entries 0 and 3 of its foot list, the front and the back foot).
Here, as there:

* objective: the undiscounted sum of the environment's rewards over one episode of at most
  ``episode_length`` steps (QDGym's time limit: 1000), ending when the environment says done;
* measures: per foot, contact steps / executed steps, in ``[0, 1]``;
* policy: the same ``obs -> 128 -> 128 -> act`` tanh MLP and flat parameter layout as the MJX
  locomotion tasks (:class:`~cmamae.tasks.policies.MLPPolicy`), run in NumPy float64;
* archive shapes, ``min_f`` and ``max_f`` as the paper's configs (REFERENCE.md).

Each episode is seeded: ``env.seed(s)`` then ``env.reset()`` (the robot's joints start at
``U(-0.1, 0.1)`` from that generator), with ``s`` drawn from the evaluation's key per solution.
A worker's environment is reset once when it is built, because pybullet's first ``reset``
loads the scene while every later one restores the saved state: after that warm-up an episode
depends only on (solution, seed), whichever process runs it and whatever it ran before.

Needs the ``qdgym`` extra: ``pip install 'cmamae[qdgym]'`` (pybullet, gym 0.22.0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np

from cmamae import validate
from cmamae.tasks import host
from cmamae.tasks.base import bind, register
from cmamae.tasks.locomotion import (
    DEFAULT_EPISODE_LENGTH,
    DEFAULT_HIDDEN,
    initial_solution,
)
from cmamae.tasks.policies import MLPPolicy

EXTRA = "qdgym"


@dataclasses.dataclass(frozen=True)
class QDEnv:
    """One QDGym environment: its pybullet class and the paper's archive settings.

    Attributes:
        env_class: class name in ``pybullet_envs.gym_locomotion_envs``.
        obs_dim, act_dim: its observation and action sizes.
        feet: indices into the robot's ``foot_list`` that are measures, in measure order.
        measure_names: one per measure.
        archive_dims: the paper's grid.
        min_f, max_f: the paper's threshold_min / QD-score offset and top, 1000-step episodes.
    """

    env_class: str
    obs_dim: int
    act_dim: int
    feet: tuple[int, ...]
    measure_names: tuple[str, ...]
    archive_dims: tuple[int, ...]
    min_f: float
    max_f: float


ENVS = {
    "qd-ant": QDEnv(
        "AntBulletEnv", 28, 8, (0, 1, 2, 3),
        ("front_left_foot", "front_right_foot", "left_back_foot", "right_back_foot"),
        (6, 6, 6, 6), -374.70, 2500.0,
    ),
    "qd-halfcheetah": QDEnv(
        "HalfCheetahBulletEnv", 26, 6, (0, 3), ("front_foot", "back_foot"),
        (32, 32), -2797.52, 3000.0,
    ),
    "qd-hopper": QDEnv("HopperBulletEnv", 15, 3, (0,), ("foot",), (1000,), -362.09, 2500.0),
    "qd-walker": QDEnv(
        "Walker2DBulletEnv", 22, 6, (0, 1), ("right_foot", "left_foot"), (32, 32), -67.17, 2500.0
    ),
}  # fmt: skip


def make_env(env_class: str):
    """A pybullet locomotion environment, reset once (see the module docstring)."""
    with contextlib.redirect_stderr(io.StringIO()):  # gym 0.22's import-time notices
        from pybullet_envs import gym_locomotion_envs
    env = getattr(gym_locomotion_envs, env_class)()
    env.reset()
    return env


def episode(env, solution, seed, *, policy: MLPPolicy, feet: tuple[int, ...], episode_length: int):
    """One seeded episode of the flat policy ``solution`` ``(n,)`` on ``env``.

    Returns ``(objective, measures (len(feet),))``: the summed reward and the fraction of
    executed steps in which each foot of ``feet`` touched the ground."""
    total, contacts, steps = rollout(env, solution, seed, policy, feet, episode_length)
    return total, contacts / steps


def rollout(env, solution, seed, policy: MLPPolicy, feet: tuple[int, ...], episode_length: int):
    """:func:`episode`'s loop: ``(return, contact steps per foot (len(feet),), executed
    steps)``."""
    from cmamae.tasks.locomotion.native import apply, unflatten

    layers = unflatten(policy, solution)
    env.seed(int(seed))
    obs = env.reset()
    total, steps = 0.0, 0
    contacts = np.zeros(len(feet))
    idx = np.asarray(feet)
    for _ in range(episode_length):
        obs, reward, done, _ = env.step(apply(policy, layers, obs))
        total += reward
        contacts += np.asarray(env.robot.feet_contact)[idx]
        steps += 1
        if done:
            break
    return total, contacts, steps


def qdgym_task(
    name: str,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
    hidden_sizes: tuple[int, ...] = DEFAULT_HIDDEN,
) -> host.HostTask:
    """The QDGym task ``name`` (a key of :data:`ENVS`; see the module docstring).

    Args:
        episode_length: the step limit (QDGym's 1000). ``min_f`` and ``max_f`` are the
            paper's values times ``episode_length / 1000``.
        hidden_sizes: hidden widths of the tanh MLP (the paper's ``(128, 128)``).

    Raises:
        ValueError: unknown name, bad settings, or the ``qdgym`` extra is not installed.
    """
    if name not in ENVS:
        raise ValueError(f"unknown QDGym task {name!r}; expected one of {sorted(ENVS)}")
    episode_length = validate.integer("episode_length", episode_length)
    spec = ENVS[name]
    with contextlib.redirect_stderr(io.StringIO()):
        host.require("pybullet_envs.gym_locomotion_envs", EXTRA, f"task {name!r}")
    policy = MLPPolicy((spec.obs_dim, *tuple(hidden_sizes), spec.act_dim))
    scale = episode_length / DEFAULT_EPISODE_LENGTH
    return host.host_task(
        name=name,
        solution_dim=policy.num_params,
        measure_names=spec.measure_names,
        measure_ranges=((0.0, 1.0),) * len(spec.feet),
        archive_dims=spec.archive_dims,
        min_f=spec.min_f * scale,
        max_f=spec.max_f * scale,
        initial_solution=bind(initial_solution, policy=policy),
        policy=policy,
        simulator=bind(make_env, env_class=spec.env_class),
        episode_args=bind(host.episode_seeds),
        episode=bind(episode, policy=policy, feet=spec.feet, episode_length=episode_length),
    )


def _factory(name: str):
    def factory(
        episode_length: int = DEFAULT_EPISODE_LENGTH,
        hidden_sizes: tuple[int, ...] = DEFAULT_HIDDEN,
    ) -> host.HostTask:
        return qdgym_task(name, episode_length, hidden_sizes)

    spec = ENVS[name]
    factory.__name__ = factory.__qualname__ = name.replace("-", "_") + "_task"
    factory.__doc__ = (
        f"QDGym's {name} (pybullet {spec.env_class}): {len(spec.feet)} foot-contact measures, "
        f"archive {spec.archive_dims}. See :func:`qdgym_task`."
    )
    return register(name)(factory)


qd_ant_task = _factory("qd-ant")
qd_halfcheetah_task = _factory("qd-halfcheetah")
qd_hopper_task = _factory("qd-hopper")
qd_walker_task = _factory("qd-walker")
