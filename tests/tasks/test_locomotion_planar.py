"""The hopper (a planar robot with one foot) on MJX against native MuJoCo: one compilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("mujoco.mjx")

from cmamae import tasks  # noqa: E402
from cmamae.tasks.locomotion import native, rollout  # noqa: E402

LENGTH = 30


@pytest.fixture(scope="module")
def hopper_runs():
    task = tasks.get("hopper", episode_length=LENGTH, backend="mjx")
    keys = jax.random.split(jax.random.key(3), 2)
    xavier = jax.vmap(task.initial_solution)(keys)
    # 0 holds still (it topples slowly), 1 is a Xavier policy (falls within ~12 steps), 2 gentle.
    x = jnp.concatenate([jnp.zeros((1, task.solution_dim)), xavier[:1], 0.3 * xavier[1:]])
    kwargs = dict(task.evaluate.kwargs)
    fn = jax.jit(lambda s, k: rollout.trajectory(s, k, **kwargs))
    mjx_traj = {k: np.asarray(v) for k, v in fn(x, jax.random.key(5)).items()}
    nat = native.trajectory(task, np.asarray(x), jax.random.key(5))
    return task, mjx_traj, nat


def test_hopper_agrees_with_native(hopper_runs):
    _, traj, nat = hopper_runs
    sl = slice(0, 20)
    np.testing.assert_allclose(traj["qpos"][:, sl], nat["qpos"][:, sl], atol=1e-4)
    np.testing.assert_allclose(traj["qvel"][:, sl], nat["qvel"][:, sl], atol=5e-3)
    np.testing.assert_allclose(traj["reward"][:, sl], nat["reward"][:, sl], atol=1e-4)
    assert np.array_equal(traj["contacts"][:, sl], nat["contacts"][:, sl])
    assert np.array_equal(traj["steps"], nat["steps"])


def test_hopper_terminates_and_counts_only_alive_steps(hopper_runs):
    _, traj, _ = hopper_runs
    alive, steps = traj["alive"], traj["steps"]
    assert (steps < LENGTH).any(), "expected a hopper to fall within the episode"
    counted = (traj["contacts"][..., 0] & alive).sum(axis=1)
    assert np.all(counted <= steps)
    masked = np.cumsum(np.where(alive, traj["reward"], 0.0), axis=1)
    for i in np.flatnonzero(steps < LENGTH):
        assert np.all(masked[i, steps[i] :] == masked[i, steps[i]])
    np.testing.assert_allclose(masked[:, -1], traj["objective"], rtol=1e-5, atol=1e-4)
    measures = counted / steps
    assert np.all((measures >= 0) & (measures <= 1))
