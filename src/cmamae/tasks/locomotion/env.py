"""Observation, reward, health and reset of Gymnasium's v5 locomotion environments.

Written once over an array module ``xp`` (``jax.numpy`` for MJX, ``numpy`` for native MuJoCo)
so that both backends compute the same thing. ``qpos``, ``qvel`` and ``action`` may carry
leading batch axes (``(..., nq)``: native MuJoCo evaluates many simulations at once); every
function works on the last axis and returns one value per leading index. Definitions
(Gymnasium v5, see robots.py):

* observation: ``qpos[obs_skip_qpos:]`` then ``qvel`` (clipped to ±10 for hopper and walker);
  the ant's ``cfrc_ext`` block is left out (``include_cfrc_ext_in_observation=False``);
* reward: ``(x_after − x_before) / dt + healthy_reward · healthy − ctrl_cost_weight · Σ a²``
  (the ant's contact cost is not used, ``contact_cost_weight=0``; the task is "walk forward
  quickly");
* healthy: the state is finite and inside the robot's height / angle / state ranges; an
  unhealthy step ends the episode (its own reward still counts, as in Gymnasium);
* reset: ``qpos0 + U(−s, s)`` and ``s · N(0, 1)`` (ant, half-cheetah) or ``U(−s, s)`` velocities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmamae.tasks.locomotion.robots import Robot


def observe(robot: Robot, qpos, qvel, xp=jnp):
    """The observation vector ``(..., obs_dim)``."""
    if robot.clip_qvel is not None:
        qvel = xp.clip(qvel, -robot.clip_qvel, robot.clip_qvel)
    return xp.concatenate([qpos[..., robot.obs_skip_qpos :], qvel], axis=-1)


def _inside(x, lo, hi, inclusive, xp):
    if inclusive:
        return xp.logical_and(lo <= x, x <= hi)
    return xp.logical_and(lo < x, x < hi)


def is_healthy(robot: Robot, qpos, qvel, xp=jnp):
    """Gymnasium v5's ``is_healthy`` (plus a finite-state check for every robot), ``(...)``."""
    finite = lambda a: xp.all(xp.isfinite(a), axis=-1)
    healthy = xp.logical_and(finite(qpos), finite(qvel))
    if robot.healthy_z is not None:
        z = qpos[..., robot.z_index]
        healthy = xp.logical_and(healthy, _inside(z, *robot.healthy_z, robot.z_inclusive, xp))
    if robot.healthy_angle is not None:
        angle = qpos[..., 2]
        healthy = xp.logical_and(healthy, _inside(angle, *robot.healthy_angle, False, xp))
    if robot.healthy_state is not None:
        state = xp.concatenate([qpos, qvel], axis=-1)[..., 2:]
        inside = xp.all(_inside(state, *robot.healthy_state, False, xp), axis=-1)
        healthy = xp.logical_and(healthy, inside)
    return healthy


def reward(robot: Robot, x_before, x_after, action, healthy, dt: float, xp=jnp):
    """One step's reward ``(...)``: forward velocity + healthy reward − control cost."""
    forward = (x_after - x_before) / dt
    ctrl_cost = robot.ctrl_cost_weight * xp.sum(xp.square(action), axis=-1)
    return forward + robot.healthy_reward * healthy - ctrl_cost


def initial_state(robot: Robot, qpos0, nv: int, key: jax.Array, noise_scale: float):
    """Gymnasium v5's ``reset_model``: ``(qpos, qvel)`` drawn from ``key`` (JAX arrays)."""
    qpos0 = jnp.asarray(qpos0, jnp.float32)
    k_pos, k_vel = jax.random.split(key)
    s = noise_scale
    qpos = qpos0 + jax.random.uniform(k_pos, qpos0.shape, jnp.float32, -s, s)
    if robot.gaussian_qvel:
        qvel = s * jax.random.normal(k_vel, (nv,), jnp.float32)
    else:
        qvel = jax.random.uniform(k_vel, (nv,), jnp.float32, -s, s)
    return qpos, qvel
