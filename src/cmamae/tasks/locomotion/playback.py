"""The locomotion tasks' replay hook (:class:`cmamae.tasks.base.ReplayHook`): their episodes
step by step, on the task's backend (MJX, or native MuJoCo), with what a video of them needs
(the model, a tracking camera)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cmamae.tasks.base import ReplayHook, bind
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
    from cmamae.tasks.locomotion import rollout

    out = rollout.trajectory(solutions, key, **task)
    counted = jnp.sum(out["contacts"] & out["alive"][..., None], axis=1)
    start = rollout.start_data(task["robot"], task["adaptation"], key, task["noise_scale"]).qpos
    return {
        **out,
        "measures": (counted / jnp.maximum(out["steps"], 1)[:, None]).astype(jnp.float32),
        "start_qpos": jnp.broadcast_to(start, (solutions.shape[0], start.shape[0])),
    }


def native_trajectory(solutions, key, *, robot, adaptation, policy, episode_length,
                      noise_scale, threads):  # fmt: skip
    """:func:`trajectory`'s records for the native backend (``threads`` is not used): each
    episode run again on the per-episode twin (:class:`~cmamae.tasks.locomotion.native.
    NativeEnv`), which gives the batched engine's numbers row for row (a native episode does
    not depend on its batch), so ``objective`` and ``measures`` are the scored ones exactly.
    Like MJX's, the records go on after an episode ended (``alive`` False). One
    ``jax.pure_callback``: jit- and vmap-able."""
    from cmamae.tasks.locomotion import check_solutions, native_batch

    check_solutions(solutions, policy)
    model = load_model(robot, adaptation)
    b, t, feet, dtype = solutions.shape[0], episode_length, len(robot.feet), solutions.dtype
    shape = lambda *s, dt=dtype: jax.ShapeDtypeStruct((b, *s), dt)
    shapes = dict(
        qpos=shape(t, model.nq),
        qvel=shape(t, model.nv),
        reward=shape(t),
        contacts=shape(t, feet, dt=jnp.bool_),
        alive=shape(t, dt=jnp.bool_),
        steps=shape(dt=jnp.int32),
        objective=shape(),
        measures=shape(feet),
        start_qpos=shape(model.nq),
    )
    rows = functools.partial(
        _twin_rows,
        robot=robot,
        adaptation=adaptation,
        policy=policy,
        episode_length=episode_length,
        dtype=np.dtype(dtype),
    )
    return native_batch.host_rows(
        rows, shapes, solutions, key, robot=robot, adaptation=adaptation, noise_scale=noise_scale
    )


def _twin_rows(solutions, qpos, qvel, *, robot, adaptation, policy, episode_length, dtype):
    from cmamae.tasks.locomotion.native import NativeEnv

    env = NativeEnv(robot, adaptation)
    done = [
        env.episode(policy, x, q, v, episode_length, record=True)
        for x, q, v in zip(solutions, qpos, qvel)
    ]
    stack = lambda k, dt: np.stack([per_step[k] for _, per_step in done]).astype(dt)
    totals = np.array([out[0] for out, _ in done])
    contact_steps = np.stack([out[1] for out, _ in done])
    steps = np.array([out[2] for out, _ in done])
    return dict(
        qpos=stack("qpos", dtype),
        qvel=stack("qvel", dtype),
        reward=stack("reward", dtype),
        contacts=stack("contacts", bool),
        alive=stack("alive", bool),
        steps=steps.astype(np.int32),
        objective=totals.astype(dtype),
        measures=(contact_steps / np.maximum(steps, 1)[:, None]).astype(dtype),
        start_qpos=np.asarray(qpos, dtype),
    )


def replay_hook(**task) -> ReplayHook:
    """The hook of a locomotion task with bound settings ``task`` (robot, adaptation, policy,
    episode_length, noise_scale; and threads on the native backend)."""
    robot, adaptation = task["robot"], task["adaptation"]
    model = load_model(robot, adaptation)
    record = native_trajectory if "threads" in task else trajectory
    return ReplayHook(
        trajectory=bind(record, **task),
        step_seconds=float(model.opt.timestep) * robot.frame_skip,
        series=(("reward", "reward per step"),),
        mujoco_model=bind(load_model, robot=robot, adaptation=adaptation),
        camera=CAMERAS.get(robot.name, ()),
    )
