"""The same locomotion tasks on native MuJoCo (the C engine) with a NumPy policy.

Same model adaptation, observation, reward, termination and contact rule as the MJX task
(shared code in env.py and model.py); float64 physics. Used by the tests to check MJX, and by
host-side evaluation (e.g. Dask workers on a CPU cluster)::

    task = tasks.get("ant", episode_length=100)
    objectives, measures = native.evaluate(task, solutions, key)

A :class:`NativeEnv` keeps one ``MjData`` alive between episodes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from cmamae.tasks.locomotion import env
from cmamae.tasks.locomotion.model import Adaptation, geom_ids, load_model
from cmamae.tasks.locomotion.robots import Robot
from cmamae.tasks.policies import ACTIVATIONS, MLPPolicy

_NP_ACTIVATIONS = {"tanh": np.tanh, "identity": lambda x: x, "linear": lambda x: x}


def unflatten(policy: MLPPolicy, flat) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(w, b), ...]`` per layer from a flat vector, in :class:`MLPPolicy`'s layout (per layer
    ``b`` then ``w`` row-major)."""
    flat = np.asarray(flat, dtype=np.float64)
    if flat.shape != (policy.num_params,):
        raise ValueError(
            f"a solution must have shape ({policy.num_params},) for the policy "
            f"{policy.layer_sizes}, got {flat.shape}"
        )
    layers, i = [], 0
    for fan_in, fan_out in policy.layer_shapes:
        b = flat[i : i + fan_out]
        i += fan_out
        w = flat[i : i + fan_in * fan_out].reshape(fan_in, fan_out)
        i += fan_in * fan_out
        layers.append((w, b))
    return layers


def apply(policy: MLPPolicy, layers, obs: np.ndarray) -> np.ndarray:
    """NumPy forward pass of ``policy`` (tanh / identity activations).

    One policy: ``layers`` from :func:`unflatten`, ``obs`` ``(obs_dim,)`` -> ``(act_dim,)``;
    or N policies at once: ``w`` ``(N, in, out)`` and ``b`` ``(N, out)`` per layer (e.g.
    :func:`cmamae.tasks.locomotion.native_batch.layer_views`), ``obs`` ``(N, obs_dim)`` ->
    ``(N, act_dim)``. Either way a row costs one BLAS vector-matrix product per layer, the
    same call in both forms, so a row's actions do not depend on the other rows.
    """
    for name in (policy.activation, policy.output_activation):
        if name not in _NP_ACTIVATIONS:
            raise ValueError(
                f"native policies support activations {sorted(_NP_ACTIVATIONS)}, got {name!r} "
                f"(of {sorted(ACTIVATIONS)})"
            )
    x = obs
    for i, (w, b) in enumerate(layers):
        x = np.matmul(x[..., None, :], w)[..., 0, :] + b
        x = _NP_ACTIVATIONS[
            policy.output_activation if i == len(layers) - 1 else policy.activation
        ](x)
    return x


class NativeEnv:
    """One robot on native MuJoCo; :meth:`episode` runs one policy for one episode."""

    def __init__(self, robot: Robot, adaptation: Adaptation):
        self.robot = robot
        self.model = load_model(robot, adaptation)
        self.data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep) * robot.frame_skip
        self.feet = np.array(geom_ids(self.model, robot.feet))
        (self.floor,) = geom_ids(self.model, ("floor",))

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """``mj_resetData`` then the given state (no forward pass: ``mj_step`` starts with one,
        as ``mjx.step`` does)."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        self._x = float(qpos[0])  # the ant's torso xpos is its free joint's position

    def x_position(self) -> float:
        d = self.data
        return float(d.xpos[1, 0] if self.robot.x_from_body else d.qpos[0])

    def foot_contacts(self) -> np.ndarray:
        """Per foot, whether an active contact (``dist < includemargin``) of the last physics
        step pairs it with the floor."""
        c = self.data.contact
        g1, g2 = np.asarray(c.geom1), np.asarray(c.geom2)
        active = np.asarray(c.dist) < np.asarray(c.includemargin)
        pairs = ((g1 == self.floor)[None] & (g2[None] == self.feet[:, None])) | (
            (g2 == self.floor)[None] & (g1[None] == self.feet[:, None])
        )
        return np.any(pairs & active[None], axis=1)

    def step(self, action: np.ndarray) -> tuple[float, bool, np.ndarray]:
        """One policy step: ``(reward, healthy, feet)``, ``feet`` whether each foot touched
        the floor at any of the step's physics steps."""
        robot, d = self.robot, self.data
        x_before = self._x
        d.ctrl[:] = action
        feet = np.zeros(len(robot.feet), bool)
        for _ in range(robot.frame_skip):
            mujoco.mj_step(self.model, d)
            feet |= self.foot_contacts()
        self._x = self.x_position()
        healthy = bool(env.is_healthy(robot, d.qpos, d.qvel, xp=np))
        r = float(env.reward(robot, x_before, self._x, action, healthy, self.dt, xp=np))
        if not np.isfinite(r):
            r = 0.0
        return r, healthy, feet

    def episode(self, policy: MLPPolicy, flat, qpos, qvel, episode_length: int, record=False):
        """Return, per-foot contact steps and executed steps of one episode; with ``record``
        also per-step records (the keys of :func:`rollout.trajectory`)."""
        layers = unflatten(policy, flat)
        self.reset(qpos, qvel)
        total, contact_steps, steps = 0.0, np.zeros(len(self.robot.feet), np.int64), 0
        rows = []
        alive = True
        for _ in range(episode_length):
            obs = env.observe(self.robot, self.data.qpos, self.data.qvel, xp=np)
            action = apply(policy, layers, obs)
            r, healthy, feet = self.step(action)
            if record:
                rows.append(
                    dict(
                        qpos=self.data.qpos.copy(),
                        qvel=self.data.qvel.copy(),
                        reward=r,
                        contacts=feet,
                        alive=alive,
                    )
                )
            if alive:
                total += r
                contact_steps += feet
                steps += 1
            if self.robot.terminate and not healthy:
                alive = False
                if not record:
                    break  # nothing more would count
        out = (total, contact_steps, steps)
        if record:
            per_step = {k: np.array([row[k] for row in rows]) for k in rows[0]}
            return out, per_step
        return out


def _settings(task) -> dict:
    return dict(task.evaluate.kwargs)


@functools.lru_cache(maxsize=32)
def draw_program(
    robot: Robot, adaptation: Adaptation, noise_scale: float, impl: str | None, key_size: int
):
    """The reset draw compiled on the CPU: key data ``(key_size,)`` uint32 (a key of ``impl``,
    e.g. ``"threefry2x32"``; None: a raw uint32 key) -> ``(qpos, qvel)`` float32.

    Compiled once per setting, ahead of use: the native backend asks for it when its task
    function is traced, so that its host callback only runs it (no compilation and no
    compilation-cache write on a callback's thread)."""
    model = load_model(robot, adaptation)
    qpos0, nv = np.array(model.qpos0), model.nv

    def draw(data):
        key = data if impl is None else jax.random.wrap_key_data(data, impl=impl)
        return env.initial_state(robot, qpos0, nv, key, noise_scale)

    with jax.default_device(_cpu()):
        return jax.jit(draw).lower(jax.ShapeDtypeStruct((key_size,), jnp.uint32)).compile()


def _cpu():
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without the CPU: the default device
        return None


def key_parts(key) -> tuple[str | None, jax.Array]:
    """``(impl, data)`` of a typed key (``impl`` its name, ``data`` its uint32 bits), or
    ``(None, key)`` for a raw uint32 key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)), jax.random.key_data(key)
    return None, key


def reset_state(
    robot: Robot, adaptation: Adaptation, noise_scale: float, key
) -> tuple[np.ndarray, np.ndarray]:
    """The reset ``(qpos, qvel)`` for ``key`` (:func:`env.initial_state
    <cmamae.tasks.locomotion.env.initial_state>`, float64 NumPy of its float32 draw).

    Drawn by one standalone compiled program on the CPU (:func:`draw_program`), so a key
    gives the same bits wherever it is asked for: this twin, the native backend (whose
    callback calls :func:`reset_state_of_data`), a replay. MJX draws the state inside its own
    program, where XLA may fuse the arithmetic differently: equal up to float32 rounding
    (one unit in the last place seen in ``qvel``).
    """
    impl, data = key_parts(key)
    return reset_state_of_data(robot, adaptation, noise_scale, impl, np.asarray(data))


def reset_state_of_data(
    robot: Robot, adaptation: Adaptation, noise_scale: float, impl: str | None, data
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reset_state` of the key of ``impl`` whose bits are ``data`` (uint32 NumPy,
    ``(key_size,)``; ``impl`` None: a raw key)."""
    data = np.asarray(data, np.uint32)
    draw = draw_program(robot, adaptation, float(noise_scale), impl, data.shape[-1])
    qpos, qvel = draw(data)
    return np.asarray(qpos, np.float64), np.asarray(qvel, np.float64)


def start_state(task, key) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reset_state` of ``task`` (a locomotion task, either backend) for ``key``."""
    s = _settings(task)
    return reset_state(s["robot"], s["adaptation"], s["noise_scale"], key)


def evaluate(task, solutions, key, native_env: NativeEnv | None = None):
    """``task.evaluate`` on native MuJoCo: ``(objectives (batch,), measures (batch, feet))``.

    ``task`` is a locomotion task from ``tasks.get``; episodes start from the same reset
    state as the MJX task with the same ``key``.
    """
    s = _settings(task)
    native_env = native_env or NativeEnv(s["robot"], s["adaptation"])
    qpos, qvel = start_state(task, key)
    objectives, measures = [], []
    for flat in np.asarray(solutions):
        total, contact_steps, steps = native_env.episode(
            s["policy"], flat, qpos, qvel, s["episode_length"]
        )
        objectives.append(total)
        measures.append(contact_steps / max(steps, 1))
    return np.array(objectives), np.array(measures).reshape(len(objectives), -1)


def trajectory(task, solutions, key) -> dict[str, np.ndarray]:
    """Per-step records as :func:`cmamae.tasks.locomotion.rollout.trajectory` returns them."""
    s = _settings(task)
    native_env = NativeEnv(s["robot"], s["adaptation"])
    qpos, qvel = start_state(task, key)
    outs, records = [], []
    for flat in np.asarray(solutions):
        out, per_step = native_env.episode(
            s["policy"], flat, qpos, qvel, s["episode_length"], record=True
        )
        outs.append(out)
        records.append(per_step)
    result = {k: np.stack([r[k] for r in records]) for k in records[0]}
    result["objective"] = np.array([o[0] for o in outs])
    result["steps"] = np.array([o[2] for o in outs])
    return result
