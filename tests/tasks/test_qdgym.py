"""QDGym tasks on PyBullet against a plain loop over pybullet's environments, and the host-task
contract (seeding, retries, refusal to compile, the missing extra)."""

from __future__ import annotations

import math
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("pybullet_envs.gym_locomotion_envs", reason="needs the qdgym extra")

from pybullet_envs import gym_locomotion_envs  # noqa: E402

import cmamae  # noqa: E402
from cmamae import algorithms, tasks  # noqa: E402
from cmamae.tasks import host, qdgym  # noqa: E402

STEPS = 60
# name -> (pybullet class, foot indices QDGym counts, paper's parameter count)
CASES = {
    "qd-ant": ("AntBulletEnv", (0, 1, 2, 3), 21_256),
    "qd-halfcheetah": ("HalfCheetahBulletEnv", (0, 3), 20_742),
    "qd-hopper": ("HopperBulletEnv", (0,), 18_947),
    "qd-walker": ("Walker2DBulletEnv", (0, 1), 20_230),
}


def _plain_loop(env_class, flat, policy, seed, feet, steps):
    """QDGym's bookkeeping written out: sum rewards, count feet_contact of ``feet``."""
    env = getattr(gym_locomotion_envs, env_class)()
    env.reset()  # pybullet's first reset loads the scene; later ones restore it
    params = [(np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64))
              for p in policy.unflatten(flat)]  # fmt: skip
    env.seed(seed)
    obs = env.reset()
    total, count, executed = 0.0, np.zeros(len(feet)), 0
    for _ in range(steps):
        x = obs
        for w, b in params:
            x = np.tanh(x @ w + b)
        obs, reward, done, _ = env.step(x)
        total += reward
        count += [env.robot.feet_contact[i] for i in feet]
        executed += 1
        if done:
            break
    env.close()
    return total, count / executed


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_a_plain_pybullet_loop(name):
    env_class, feet, num_params = CASES[name]
    task = tasks.get(name, episode_length=STEPS)
    assert task.solution_dim == num_params and task.host_evaluated
    assert task.measure_dim == len(feet)
    keys = jax.random.split(jax.random.key(3), 2)
    solutions = np.stack([np.asarray(task.initial_solution(k)) for k in keys])
    solutions[1] *= 3.0  # a second, more aggressive policy
    key = jax.random.key(7)
    objectives, measures = task.evaluate(solutions, key)
    seeds = host.episode_seeds(key, 2)
    assert seeds[0] != seeds[1]
    for i in range(2):
        f, m = _plain_loop(env_class, solutions[i], task.policy, seeds[i], feet, STEPS)
        np.testing.assert_allclose(objectives[i], f, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(measures[i], m, rtol=1e-12, atol=1e-12)
    assert np.all((measures >= 0) & (measures <= 1))
    # The same key gives the same numbers on a simulator that ran other episodes meanwhile.
    np.testing.assert_array_equal(task.evaluate(solutions, key)[0], objectives)


def test_halfcheetah_measures_are_its_front_and_back_foot():
    task = tasks.get("qd-halfcheetah", episode_length=STEPS)
    solution = np.asarray(task.initial_solution(jax.random.key(0)))[None]
    key = jax.random.key(1)
    _, measures = task.evaluate(solution, key)
    (seed,) = host.episode_seeds(key, 1)
    _, all_six = _plain_loop("HalfCheetahBulletEnv", solution[0], task.policy, seed,
                             range(6), STEPS)  # fmt: skip
    np.testing.assert_allclose(measures[0], all_six[[0, 3]], rtol=1e-12)
    assert task.measure_names == ("front_foot", "back_foot")


def test_paper_archive_settings():
    expected = {
        "qd-ant": ((6, 6, 6, 6), -374.70, 2500.0),
        "qd-halfcheetah": ((32, 32), -2797.52, 3000.0),
        "qd-hopper": ((1000,), -362.09, 2500.0),
        "qd-walker": ((32, 32), -67.17, 2500.0),
    }
    for name, (dims, min_f, max_f) in expected.items():
        task = tasks.get(name)
        assert (task.archive_dims, task.min_f, task.max_f) == (dims, min_f, max_f)
        assert task.measure_ranges == ((0.0, 1.0),) * task.measure_dim
        assert task == tasks.get(name) and hash(task) == hash(tasks.get(name))
    short = tasks.get("qd-ant", episode_length=100)
    assert math.isclose(short.min_f, -37.47) and math.isclose(short.max_f, 250.0)
    with pytest.raises(ValueError, match="episode_length"):
        tasks.get("qd-ant", episode_length=0)


def test_episode_order_and_history_do_not_matter():
    task = tasks.get("qd-hopper", episode_length=STEPS)
    x = np.stack([np.asarray(task.initial_solution(k)) for k in jax.random.split(
        jax.random.key(0), 3)])  # fmt: skip
    args = [11, 22, 33]
    f, m, failures = host.run_episodes(task.simulator, task.episode, x, args, 1)
    g, n, _ = host.run_episodes(task.simulator, task.episode, x[::-1], args[::-1], 1)
    assert not failures
    np.testing.assert_array_equal(f, g[::-1])
    np.testing.assert_array_equal(m, n[::-1])


def test_failed_evaluation_is_retried_once_then_nan(caplog):
    task = tasks.get("qd-hopper", episode_length=STEPS)
    x = np.stack([np.asarray(task.initial_solution(jax.random.key(0)))] * 2)
    x[1, 0] = np.nan  # pybullet asserts finite actions: the episode raises
    calls = []

    def counting_episode(sim, solution, arg):
        calls.append(arg)
        return task.episode(sim, solution, arg)

    f, m, failures = host.run_episodes(task.simulator, counting_episode, x, [5, 6], 1)
    assert calls == [5, 6, 6]  # one retry of the failing row
    assert np.isfinite(f[0]) and np.isnan(f[1]) and np.all(np.isnan(m[1]))
    assert [row for row, _ in failures] == [1] and "AssertionError" in failures[0][1]
    with caplog.at_level("WARNING", logger="cmamae.tasks.host"):
        objectives, _ = task.evaluate(x, jax.random.key(0))
    assert np.isnan(objectives[1]) and "failed twice" in caplog.text


def test_host_task_refuses_the_compiled_loop():
    task = tasks.get("qd-hopper", episode_length=10)
    x = np.zeros((2, task.solution_dim), np.float32)
    with pytest.raises(TypeError, match="evaluated on the host"):
        jax.jit(task.evaluate)(x, jax.random.key(0))
    algo = algorithms.get("sep-cma-mae", task)
    with pytest.raises(ValueError, match="evaluated on the host"):
        cmamae.run(task, algo, evals=algo.scheduler.batch_size)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pybullet_envs.gym_locomotion_envs", None)
    with pytest.raises(ValueError, match=r"pip install 'cmamae\[qdgym\]'"):
        tasks.get("qd-ant")
    assert qdgym.EXTRA == "qdgym"
