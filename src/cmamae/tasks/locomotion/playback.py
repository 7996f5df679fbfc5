"""The locomotion tasks' replay hook (:class:`cmamae.tasks.base.ReplayHook`): their MJX episodes
step by step, with what a video of them needs (the model, a tracking camera)."""

from __future__ import annotations

import jax.numpy as jnp

from cmamae.tasks.base import ReplayHook, bind
from cmamae.tasks.locomotion import rollout
from cmamae.tasks.locomotion.model import load_model

#: tracking camera per robot: distance (m) from the root body, elevation and azimuth (deg)
CAMERAS = {
    "ant": (("distance", 5.0), ("elevation", -30.0), ("azimuth", 135.0)),
    "halfcheetah": (("distance", 4.0), ("elevation", -15.0), ("azimuth", 90.0)),
    "hopper": (("distance", 3.5), ("elevation", -15.0), ("azimuth", 90.0)),
    "walker2d": (("distance", 4.0), ("elevation", -15.0), ("azimuth", 90.0)),
}


def trajectory(solutions, key, **task) -> dict:
    """The episodes ``rollout.evaluate`` runs for ``key``, recorded: ``qpos`` ``(batch, T,
    nq)`` after each step, ``start_qpos`` ``(batch, nq)`` (the reset state), ``reward``,
    ``contacts`` ``(batch, T, feet)``, ``alive`` ``(batch, T)`` (the step was counted),
    ``steps``, ``objective`` ``(batch,)`` and ``measures`` ``(batch, feet)``."""
    out = rollout.trajectory(solutions, key, **task)
    counted = jnp.sum(out["contacts"] & out["alive"][..., None], axis=1)
    start = rollout.start_data(task["robot"], task["adaptation"], key, task["noise_scale"]).qpos
    return {
        **out,
        "measures": (counted / jnp.maximum(out["steps"], 1)[:, None]).astype(jnp.float32),
        "start_qpos": jnp.broadcast_to(start, (solutions.shape[0], start.shape[0])),
    }


def replay_hook(**task) -> ReplayHook:
    """The hook of a locomotion task with bound settings ``task`` (robot, adaptation, policy,
    episode_length, noise_scale)."""
    robot, adaptation = task["robot"], task["adaptation"]
    model = load_model(robot, adaptation)
    return ReplayHook(
        trajectory=bind(trajectory, **task),
        step_seconds=float(model.opt.timestep) * robot.frame_skip,
        series=(("reward", "reward per step"),),
        mujoco_model=bind(load_model, robot=robot, adaptation=adaptation),
        camera=CAMERAS.get(robot.name, ()),
    )
