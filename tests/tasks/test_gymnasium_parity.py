"""Our locomotion tasks against Gymnasium's v5 environments (``gymnasium.make``), step by step.

With the model as shipped (``adapted=False``) and reset noise 0 on both sides, the native twin
(``NativeEnv``, float64) and ``gymnasium.make(robot.gym_id, reset_noise_scale=0, ...)`` start
from the same state (the model's ``qpos0``, at rest) and run the same MuJoCo on the same model.
Fed the same actions, they must agree per step in observation, reward, termination and x
position, in the return of whole episodes and in the health rule at its edges. No MJX: the
file runs in 9–20 s on a shared 2-core CPU (15 cases), most of it imports.

Tolerance: ``ATOL = RTOL = 1e-12``. Both sides run the same float64 arithmetic, so today they
agree bit for bit (every test passes with 0); the margin only allows a different order of the
reward's terms. Each of these changes makes the tests fail: Gymnasium's default contact cost
for the ant, the adapted model, unclipped observed velocities, ``<=`` for ``<`` in the health
rule.
"""

from __future__ import annotations

import gymnasium as gym
import jax
import mujoco
import numpy as np
import pytest

from cmamae import tasks
from cmamae.tasks.locomotion import env, native
from cmamae.tasks.locomotion.native import NativeEnv
from cmamae.tasks.locomotion.robots import ROBOTS

ATOL = RTOL = 1e-12
EPISODE_LENGTH = 100
ROBOT_NAMES = sorted(ROBOTS)

# The constructor settings that make Gymnasium's environment the same task as ours
# (docs/tasks.md, "What an evaluation is"); every robot also gets reset_noise_scale=0.
GYM_SETTINGS = {"ant": dict(include_cfrc_ext_in_observation=False, contact_cost_weight=0.0)}


def gym_env(name: str):
    """Gymnasium's v5 environment of robot ``name`` with our task's settings, no reset noise.

    MuJoCo's warning about ``half_cheetah.xml``'s deprecated ``settotalmass`` (still applied)
    is dropped while loading: by default MuJoCo prints it and appends it to a
    ``MUJOCO_LOG.TXT`` in the working directory. Any other warning fails the test."""
    messages: list[str] = []
    mujoco.set_mju_user_warning(messages.append)
    try:
        environment = gym.make(
            ROBOTS[name].gym_id, reset_noise_scale=0.0, **GYM_SETTINGS.get(name, {})
        )
    finally:
        mujoco.set_mju_user_warning(None)  # MuJoCo's default handler
    unexpected = [m for m in messages if "settotalmass" not in m]
    assert not unexpected, unexpected
    return environment


def shipped(name: str):
    """Our task on Gymnasium's model as shipped, started at rest (no reset noise): the task, its
    native twin, its policy and its start state ``(qpos, qvel)``."""
    task = tasks.get(name, adapted=False, reset_noise_scale=0, episode_length=EPISODE_LENGTH)
    settings = dict(task.evaluate.kwargs)
    ours = NativeEnv(settings["robot"], settings["adaptation"])
    return task, ours, settings["policy"], native.start_state(task, jax.random.key(0))


def action_sequences(nu: int) -> dict[str, np.ndarray]:
    """Open-loop actions ``(EPISODE_LENGTH, nu)`` in [-1, 1]: uniform noise (the ant, hopper and
    walker fall within 100 steps) and full torque on every joint (the hopper falls; the ant and
    walker stay healthy for 100 steps)."""
    rng = np.random.default_rng(0)
    return {
        "uniform": rng.uniform(-1.0, 1.0, (EPISODE_LENGTH, nu)),
        "full": np.ones((EPISODE_LENGTH, nu)),
    }


def close(actual, desired, what: str, where: str) -> None:
    np.testing.assert_allclose(
        actual, desired, rtol=RTOL, atol=ATOL, err_msg=f"{what} differs at step {where}"
    )


def compare_states(ours: NativeEnv, theirs, gym_obs: np.ndarray, where: str) -> None:
    """Our observation against Gymnasium's, and the whole ``qpos``/``qvel`` of both sides (the
    observation leaves x out and clips the hopper's and walker's velocities)."""
    d, gym_data = ours.data, theirs.unwrapped.data
    close(env.observe(ours.robot, d.qpos, d.qvel, xp=np), gym_obs, "obs", where)
    close(d.qpos, gym_data.qpos, "qpos", where)
    close(d.qvel, gym_data.qvel, "qvel", where)


@pytest.mark.parametrize("name", ROBOT_NAMES)
def test_open_loop_steps_match_gymnasium(name):
    """Per step of 100: observation, reward, terminated, ``info["x_position"]``, the reward's x
    and the whole ``qpos``/``qvel`` agree; stepping goes on after termination, so the health
    rule is compared on unhealthy states too."""
    _, ours, _, (qpos, qvel) = shipped(name)
    robot = ours.robot
    theirs = gym_env(name)
    terminated_anywhere = False
    try:
        for label, actions in action_sequences(ours.model.nu).items():
            gym_obs, _ = theirs.reset(seed=0)
            ours.reset(qpos, qvel)
            compare_states(ours, theirs, gym_obs, f"{label} 0")
            for t, action in enumerate(actions, start=1):
                gym_obs, gym_reward, gym_terminated, truncated, info = theirs.step(action)
                reward, healthy, _ = ours.step(action)
                where = f"{label} {t}"
                compare_states(ours, theirs, gym_obs, where)
                close(reward, gym_reward, "reward", where)
                close(ours.data.qpos[0], info["x_position"], "x position", where)
                # The x the reward differences: the ant's torso xpos (one physics step behind
                # qpos, in both), the planar robots' qpos[0].
                gym_data = theirs.unwrapped.data
                gym_x = gym_data.xpos[1, 0] if robot.x_from_body else gym_data.qpos[0]
                close(ours.x_position(), gym_x, "reward's x", where)
                assert (robot.terminate and not healthy) == gym_terminated, where
                assert not truncated, where
                terminated_anywhere |= gym_terminated
    finally:
        theirs.close()
    # The sequences must exercise termination where the robot has it.
    assert terminated_anywhere == robot.terminate


@pytest.mark.parametrize("scale", [1.0, 0.0])
@pytest.mark.parametrize("name", ROBOT_NAMES)
def test_episode_return_matches_gymnasium(name, scale):
    """The return and executed steps of a closed-loop episode from ``NativeEnv.episode`` (what
    ``native.evaluate`` runs) equal Gymnasium's with the same policy, reward summed up to and
    including the terminating step. ``scale`` multiplies a Xavier policy: 1 ends the ant's,
    hopper's and walker's episodes early (steps 22, 18, 56), 0 (zero actions) runs all four
    robots for the whole 100 steps."""
    task, ours, policy, (qpos, qvel) = shipped(name)
    flat = scale * np.asarray(task.initial_solution(jax.random.key(1)), np.float64)
    total, _, steps = ours.episode(policy, flat, qpos, qvel, EPISODE_LENGTH)

    layers = native.unflatten(policy, flat)
    theirs = gym_env(name)
    try:
        obs, _ = theirs.reset(seed=0)
        gym_return, gym_steps = 0.0, 0
        for _ in range(EPISODE_LENGTH):
            obs, reward, terminated, _, _ = theirs.step(native.apply(policy, layers, obs))
            gym_return += reward
            gym_steps += 1
            if terminated:
                break
    finally:
        theirs.close()
    np.testing.assert_allclose(total, gym_return, rtol=RTOL, atol=ATOL)
    assert steps == gym_steps


def boundary_states(robot, qpos0: np.ndarray, nv: int):
    """``(qpos, qvel)`` pairs on and next to each edge of ``robot``'s health ranges, and one
    with a non-finite height (trajectories never hit an edge exactly, so the open-loop test
    cannot tell ``<`` from ``<=``)."""
    edges = [
        (f, k, v)
        for f, k, r in (
            ("qpos", robot.z_index, robot.healthy_z),
            ("qpos", 2, robot.healthy_angle),
            ("qvel", nv - 1, robot.healthy_state),
        )
        if r is not None
        for v in r
        if np.isfinite(v)
    ]
    for field, index, edge in edges:
        for value in (edge, np.nextafter(edge, -np.inf), np.nextafter(edge, np.inf)):
            state = {"qpos": qpos0.copy(), "qvel": np.zeros(nv)}
            state[field][index] = value
            yield state["qpos"], state["qvel"]
    # A non-finite height. (A non-finite qvel with a finite qpos is unhealthy for us and for
    # Gymnasium's ant and hopper, healthy for Gymnasium's walker; docs/tasks.md.)
    qpos = qpos0.copy()
    qpos[robot.z_index] = np.nan
    yield qpos, np.zeros(nv)


@pytest.mark.parametrize("name", [n for n in ROBOT_NAMES if ROBOTS[n].terminate])
def test_health_rule_matches_gymnasium_on_edges(name):
    """``env.is_healthy`` equals Gymnasium's ``is_healthy`` on and next to every edge of the
    height, angle and state ranges (inclusive for the ant's height, strict elsewhere)."""
    _, ours, _, (qpos0, _) = shipped(name)
    theirs = gym_env(name)
    try:
        theirs.reset(seed=0)
        data = theirs.unwrapped.data
        seen = set()
        for qpos, qvel in boundary_states(ours.robot, qpos0, ours.model.nv):
            data.qpos[:], data.qvel[:] = qpos, qvel
            healthy = bool(env.is_healthy(ours.robot, qpos, qvel, xp=np))
            assert healthy == bool(theirs.unwrapped.is_healthy), (qpos, qvel)
            seen.add(healthy)
        assert seen == {True, False}
    finally:
        theirs.close()
