"""Pendulum swing-up in pure JAX: the single-objective neuroevolution example.

Dynamics, reward and reset are Gym's ``Pendulum-v1`` (gym >= 0.21, Gymnasium), the
environment Lange's "Evolving Neural Networks in JAX" tutorial rewrites in JAX:

* state (θ, θ̇), θ = 0 upright; g = 10, m = 1, l = 1, dt = 0.05, max speed 8, max torque 2;
* action u = clip(a, −2, 2); reward r = −(norm(θ)² + 0.1 θ̇² + 0.001 u²), with norm(θ) the
  angle wrapped to [−π, π), computed on the state *before* the step;
* θ̇' = clip(θ̇ + (3g/(2l) sin θ + 3/(m l²) u) dt, −8, 8);  θ' = θ + θ̇' dt;
* reset θ ~ U[−π, π], θ̇ ~ U[−1, 1]; observation (cos θ, sin θ, θ̇); 200 steps, no termination.

(``Pendulum-v0`` clipped θ̇' only after using the unclipped value for θ'; the difference only
matters at the speed limit.)

Policy: an MLP 3 → 48 → 1 with ReLU hidden units and a linear output, as in the tutorial
(145 + 48 + 1 = 241 parameters); the action is clipped to ±2 by the environment as Gym does.
Fitness: the mean return over ``num_episodes`` episodes. All candidates of one ``evaluate``
call see the same episode start states (common random numbers, as in the tutorial), drawn
from ``key``. Each episode is one ``lax.scan``; episodes and candidates are ``vmap``-ed.

Measures: none by default (``measures`` has shape ``(batch, 0)``). With
``with_measures=True`` the task gets two behaviour descriptors in [0, 1], the mean |u| / 2
(effort) and the mean |θ̇| / 8 (speed) over the episode steps, averaged over episodes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from cmamae import validate
from cmamae.tasks.base import ReplayHook, Task, bind, register
from cmamae.tasks.policies import MLPPolicy

GRAVITY = 10.0
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
EPISODE_STEPS = 200

# Worst possible reward per step: norm(θ) = −π, |θ̇| = 8, |u| = 2.
WORST_STEP_REWARD = -(math.pi**2 + 0.1 * MAX_SPEED**2 + 0.001 * MAX_TORQUE**2)


def angle_normalize(theta: jax.Array) -> jax.Array:
    """θ wrapped to [−π, π)."""
    return ((theta + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def reset(key: jax.Array) -> jax.Array:
    """Initial state ``(2,)`` = (θ, θ̇), θ ~ U[−π, π], θ̇ ~ U[−1, 1]."""
    high = jnp.array([jnp.pi, 1.0])
    return jax.random.uniform(key, (2,), minval=-high, maxval=high)


def observe(state: jax.Array) -> jax.Array:
    """Observation ``(3,)`` = (cos θ, sin θ, θ̇)."""
    theta, thetadot = state[..., 0], state[..., 1]
    return jnp.stack([jnp.cos(theta), jnp.sin(theta), thetadot], axis=-1)


def step(state: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Gym ``Pendulum-v1`` step. ``action`` is ``(1,)`` or scalar; returns
    ``(next_state (2,), reward (), clipped_torque ())``."""
    theta, thetadot = state[0], state[1]
    u = jnp.clip(jnp.reshape(action, ()), -MAX_TORQUE, MAX_TORQUE)
    cost = angle_normalize(theta) ** 2 + 0.1 * thetadot**2 + 0.001 * u**2
    new_thetadot = (
        thetadot
        + (3.0 * GRAVITY / (2.0 * LENGTH) * jnp.sin(theta) + 3.0 / (MASS * LENGTH**2) * u) * DT
    )
    new_thetadot = jnp.clip(new_thetadot, -MAX_SPEED, MAX_SPEED)
    new_theta = theta + new_thetadot * DT
    return jnp.stack([new_theta, new_thetadot]), -cost, u


def rollout(
    policy: MLPPolicy, params, key: jax.Array, num_steps: int = EPISODE_STEPS
) -> tuple[jax.Array, jax.Array]:
    """One episode of ``policy`` (flat vector or pytree) from ``reset(key)``, one ``lax.scan``.

    Returns ``(return (), per_step (num_steps, 3))``, per-step rows (reward, |u|, |θ̇| after
    the step).
    """
    if not isinstance(params, (list, tuple)):
        params = policy.unflatten(params)

    def body(state, _):
        action = policy.apply(params, observe(state))
        next_state, reward, u = step(state, action)
        return next_state, jnp.stack([reward, jnp.abs(u), jnp.abs(next_state[1])])

    _, per_step = jax.lax.scan(body, reset(key), None, length=num_steps)
    return per_step[:, 0].sum(), per_step


def evaluate(
    solutions: jax.Array,
    key: jax.Array,
    *,
    policy: MLPPolicy,
    num_episodes: int,
    num_steps: int,
    with_measures: bool,
) -> tuple[jax.Array, jax.Array]:
    """Mean return over ``num_episodes`` episodes per candidate; see the module docstring.

    ``solutions`` ``(batch, num_params)`` -> ``(objectives (batch,), measures (batch, m))``
    with m = 2 if ``with_measures`` else 0.
    """
    episode_keys = jax.random.split(key, num_episodes)

    def one_candidate(flat):
        params = policy.unflatten(flat)
        returns, per_step = jax.vmap(lambda k: rollout(policy, params, k, num_steps))(episode_keys)
        effort = per_step[:, :, 1].mean() / MAX_TORQUE
        speed = per_step[:, :, 2].mean() / MAX_SPEED
        return returns.mean(), jnp.stack([effort, speed])

    objectives, measures = jax.vmap(one_candidate)(solutions)
    if not with_measures:
        measures = measures[:, :0]
    return objectives, measures


def trajectory(
    solutions: jax.Array, key: jax.Array, *, policy: MLPPolicy, num_episodes: int, num_steps: int
) -> dict[str, jax.Array]:
    """The first of the ``num_episodes`` episodes :func:`evaluate` runs for ``key``, per step:
    ``angle`` θ (wrapped to [−π, π), 0 upright), ``angular_velocity`` θ̇, ``torque`` u and
    ``reward``, each ``(batch, num_steps)``; ``steps`` ``(batch,)``."""
    episode_key = jax.random.split(key, num_episodes)[0]

    def one(flat):
        params = policy.unflatten(flat)

        def body(state, _):
            next_state, reward, torque = step(state, policy.apply(params, observe(state)))
            return next_state, jnp.stack([angle_normalize(state[0]), state[1], torque, reward])

        _, rows = jax.lax.scan(body, reset(episode_key), None, length=num_steps)
        return rows

    rows = jax.vmap(one)(solutions)
    return {
        "angle": rows[..., 0],
        "angular_velocity": rows[..., 1],
        "torque": rows[..., 2],
        "reward": rows[..., 3],
        "steps": jnp.full(solutions.shape[:1], num_steps, jnp.int32),
    }


def initial_solution(key: jax.Array, *, policy: MLPPolicy, zeros: bool) -> jax.Array:
    """All zeros (the tutorial's x0) or a Glorot-initialized policy vector."""
    if zeros:
        return jnp.zeros((policy.num_params,), policy.dtype)
    return policy.init_flat(key)


@register("pendulum")
def pendulum_task(
    num_episodes: int = 20,
    hidden_size: int = 48,
    num_steps: int = EPISODE_STEPS,
    with_measures: bool = False,
    zero_init: bool = True,
) -> Task:
    """Pendulum swing-up as a :class:`~cmamae.tasks.Task` (higher objective is better).

    Args:
        num_episodes: episodes averaged per fitness evaluation (the tutorial's 20).
        hidden_size: hidden units of the one-hidden-layer ReLU policy (tutorial: 48).
        num_steps: steps per episode (Gym's time limit: 200).
        with_measures: add the (effort, speed) measures, each in [0, 1], with a 32 × 32 grid;
            otherwise the task has no measures and ``measures`` is ``(batch, 0)``.
        zero_init: ``initial_solution`` returns zeros (the tutorial's x0) rather than a
            Glorot-uniform policy.

    ``min_f`` is the worst possible return, 200 · −(π² + 0.1 · 8² + 0.001 · 2²) ≈ −3254.7;
    ``max_f`` = 0 (no step can earn a positive reward). The tutorial's "cost" is −objective.
    """
    for name, value in (
        ("num_episodes", num_episodes),
        ("hidden_size", hidden_size),
        ("num_steps", num_steps),
    ):
        validate.integer(name, value)
    policy = MLPPolicy((3, hidden_size, 1), activation="relu", output_activation="identity")
    names = ("effort", "speed") if with_measures else ()
    return Task(
        name="pendulum",
        solution_dim=policy.num_params,
        measure_names=names,
        measure_ranges=((0.0, 1.0),) * len(names),
        archive_dims=(32,) * len(names),
        min_f=WORST_STEP_REWARD * num_steps,
        max_f=0.0,
        evaluate=bind(
            evaluate,
            policy=policy,
            num_episodes=num_episodes,
            num_steps=num_steps,
            with_measures=bool(with_measures),
        ),
        initial_solution=bind(initial_solution, policy=policy, zeros=bool(zero_init)),
        replay=ReplayHook(
            trajectory=bind(
                trajectory, policy=policy, num_episodes=num_episodes, num_steps=num_steps
            ),
            step_seconds=DT,
            series=(("angle", "angle θ (rad, 0 = up)"), ("torque", "torque")),
        ),
    )
