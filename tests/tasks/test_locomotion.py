"""QD locomotion on MJX (ant, halfcheetah, hopper, walker2d) and its native-MuJoCo twin.

CPU, short episodes, a batch of four hand-picked ant policies, and two MJX compilations in
all (evaluate, the per-step trajectory and evaluate_transitions as one program; evaluate
vmapped over seeds), shared by the tests through module fixtures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("mujoco.mjx")

from cmamae import tasks  # noqa: E402
from cmamae.tasks.locomotion import ROBOTS, native, rollout  # noqa: E402
from cmamae.tasks.policies import MLPPolicy  # noqa: E402

LENGTH = 200  # policy steps per test episode (the ant needs ~25 to settle on its feet)
COMPARE = 20  # steps compared with native MuJoCo
ROBOT_DIMS = {"ant": (27, 8), "halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6)}
PAPER_ARCHIVES = {
    "ant": (6, 6, 6, 6),
    "halfcheetah": (32, 32),
    "hopper": (1000,),
    "walker2d": (32, 32),
}


def _mlp_params(obs: int, act: int, hidden=(128, 128)) -> int:
    sizes = (obs, *hidden, act)
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


# ---------------------------------------------------------------- metadata (no compilation)
@pytest.mark.parametrize("name", sorted(ROBOT_DIMS))
def test_metadata_and_parameter_counts(name):
    task = tasks.get(name)
    obs, act = ROBOT_DIMS[name]
    assert task.name == name
    assert task.solution_dim == _mlp_params(obs, act)
    assert task.archive_dims == PAPER_ARCHIVES[name]
    assert task.measure_dim == len(ROBOTS[name].feet)
    assert task.measure_ranges == ((0.0, 1.0),) * task.measure_dim
    assert task.min_f < 0
    policy = dict(task.evaluate.kwargs)["policy"]
    assert policy.layer_sizes == (obs, 128, 128, act)
    assert policy.activation == policy.output_activation == "tanh"
    assert policy.init == "glorot_uniform"
    x0 = task.initial_solution(jax.random.key(0))
    assert x0.shape == (task.solution_dim,)
    # Xavier: the first layer's weights lie within ±sqrt(6 / (fan_in + fan_out)).
    w0 = policy.unflatten(x0)[0]["w"]
    assert float(jnp.abs(w0).max()) <= np.sqrt(6 / (obs + 128)) + 1e-6
    # Shorter episodes scale min_f; the task stays a hashable, comparable static value.
    short = tasks.get(name, episode_length=100)
    assert short.min_f == pytest.approx(task.min_f / 10)
    assert short == tasks.get(name, episode_length=100) and hash(short) == hash(
        tasks.get(name, episode_length=100)
    )


def test_paper_parameter_formula_for_ant():
    # 27 observations (Gymnasium v5 without cfrc_ext), 8 actions, two hidden layers of 128.
    assert tasks.get("ant").solution_dim == 27 * 128 + 128 + 128 * 128 + 128 + 128 * 8 + 8


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, cmamae; print('mujoco' in sys.modules, 'mujoco.mjx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_bad_episode_length(bad):
    with pytest.raises(ValueError, match="episode_length"):
        tasks.get("ant", episode_length=bad)


def test_bad_policy_and_settings():
    with pytest.raises(ValueError, match="observation size 27"):
        tasks.get("ant", policy=MLPPolicy((28, 64, 8)))
    with pytest.raises(ValueError, match="action size 6"):
        tasks.get("walker2d", policy=MLPPolicy((17, 64, 8)))
    with pytest.raises(ValueError, match="hidden_sizes"):
        tasks.get("hopper", hidden_sizes=(128, 0))
    with pytest.raises(ValueError, match="reset_noise_scale"):
        tasks.get("hopper", reset_noise_scale=-0.1)
    task = tasks.get("hopper", episode_length=5)
    with pytest.raises(ValueError, match=r"shape \(batch, 18435\)"):
        task.evaluate(jnp.zeros((2, 100)), jax.random.key(0))
    custom = tasks.get("hopper", policy=MLPPolicy((11, 16, 3)))
    assert custom.solution_dim == 12 * 16 + 17 * 3


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError) as err:
        tasks.get("antt")
    for name in ("ant", "halfcheetah", "hopper", "walker2d"):
        assert name in tasks.names() and repr(name) in str(err.value)
    with pytest.raises(ValueError, match="episode_length"):
        tasks.get("ant", episode_len=10)  # unknown override: the valid ones are listed


# ---------------------------------------------------------------- rollouts (compiled once)
@pytest.fixture(scope="module")
def ant():
    return tasks.get("ant", episode_length=LENGTH, backend="mjx")


@pytest.fixture(scope="module")
def policies(ant):
    """Four ant policies: 0 holds still (all-zero parameters, zero torque), 1 hops (a Xavier
    network ×4: bang-bang torques), 2 is Xavier-initialized (a run's x0), 3 is a gentle
    policy (a Xavier network ×0.3)."""
    keys = jax.random.split(jax.random.key(7), 3)
    xavier = jax.vmap(ant.initial_solution)(keys)
    still = jnp.zeros((1, ant.solution_dim))
    return jnp.concatenate([still, 4.0 * xavier[:1], xavier[1:2], 0.3 * xavier[2:]])


@pytest.fixture(scope="module")
def rollouts(ant):
    """``(x, key) -> (evaluate's (objective, measures), the per-step trajectory,
    evaluate_transitions' (objective, measures, transitions))``, compiled as one program:
    each rollout is its own loop, but XLA compiles the physics kernels the three share once
    (two MJX compilations fewer than three programs)."""
    kwargs = dict(ant.evaluate.kwargs)
    return jax.jit(
        lambda x, k: (
            ant.evaluate(x, k),
            rollout.trajectory(x, k, **kwargs),
            ant.evaluate_transitions(x, k),
        )
    )


@pytest.fixture(scope="module")
def evaluate(rollouts):
    """``ant.evaluate`` (through :func:`rollouts`)."""
    return lambda x, k: rollouts(x, k)[0]


@pytest.fixture(scope="module")
def outputs(rollouts, policies):
    return jax.tree_util.tree_map(np.asarray, rollouts(policies, jax.random.key(0)))


@pytest.fixture(scope="module")
def results(outputs):
    return outputs[0]


@pytest.fixture(scope="module")
def traj(outputs):
    return outputs[1]


def test_measures_in_unit_interval(results):
    obj, meas = results
    assert obj.shape == (4,) and meas.shape == (4, 4)
    assert np.all(np.isfinite(obj))
    assert np.all((meas >= 0) & (meas <= 1))


def test_still_ant_stands_on_four_feet_and_hopping_differs(results):
    _, meas = results
    # It is dropped from 0.75 m: the first few steps are in the air, then all feet are down.
    assert np.all(meas[0] >= 0.85), meas[0]
    assert np.abs(meas[0] - meas[1]).max() > 0.3, meas[:2]


def test_contact_steps_never_exceed_alive_steps(traj, results):
    alive = traj["alive"]  # (batch, steps): the step was executed
    contacts = traj["contacts"] & alive[..., None]
    counted = contacts.sum(axis=1)
    assert np.all(counted <= alive.sum(axis=1)[:, None])
    assert np.array_equal(alive.sum(axis=1), traj["steps"])
    np.testing.assert_allclose(counted / traj["steps"][:, None], results[1], atol=1e-6)


def test_terminated_objective_stops_growing(traj, results):
    alive, reward = traj["alive"], traj["reward"]
    ended = traj["steps"] < LENGTH
    assert ended.any(), "expected the hopping policy to end its episode early"
    running = np.cumsum(np.where(alive, reward, 0.0), axis=1)
    for i in np.flatnonzero(ended):
        # Once ended, the running return is constant although the physics kept stepping.
        after = running[i, traj["steps"][i] :]
        assert np.all(after == after[0])
        assert not np.allclose(reward[i, traj["steps"][i] :], 0.0)
        assert not alive[i, traj["steps"][i] :].any()
    np.testing.assert_allclose(running[:, -1], traj["objective"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(traj["objective"], results[0], rtol=1e-5, atol=1e-4)


def test_batched_seeds_equal_one_by_one(ant, evaluate, policies, results):
    """Two seeds of a run as one vmapped axis give what each seed gives alone.

    The vmapped program is compiled separately, so float32 results may differ in the last
    bits, which violent (chaotic) policies amplify over 200 steps: the still and the gentle
    policy (0 and 3, at both ends of the batch) are compared, and a foot that grazes the
    floor (in contact on some steps by a fraction of a millimetre) may flip on a few steps."""
    other = policies[::-1]
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    batched = jax.jit(jax.vmap(ant.evaluate))(jnp.stack([policies, other]), keys)
    alone = [results, tuple(np.asarray(a) for a in evaluate(other, jax.random.key(1)))]
    calm = [0, 3]
    for s in range(2):
        obj, meas = np.asarray(batched[0][s]), np.asarray(batched[1][s])
        np.testing.assert_allclose(obj[calm], alone[s][0][calm], rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(meas[calm], alone[s][1][calm], atol=0.1)
    # Different seeds draw different start states.
    assert not np.allclose(np.asarray(batched[0][0]), np.asarray(batched[0][1])[::-1])


def test_batch_members_are_independent(evaluate, policies, results):
    # Same compiled function, the batch reordered: each policy's result moves with it.
    obj, meas = evaluate(policies[::-1], jax.random.key(0))
    np.testing.assert_allclose(np.asarray(obj)[::-1], results[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(meas)[::-1], results[1], atol=1e-6)


def test_mjx_agrees_with_native_mujoco(ant, policies, traj):
    """For fixed policies the first COMPARE steps agree in state, reward and contacts."""
    nat = native.trajectory(ant, np.asarray(policies), jax.random.key(0))
    # float32 MJX against float64 MuJoCo: differences start at 1e-7 and grow with every
    # impact; violent policies are chaotic, so they are compared over fewer steps.
    for i, steps in ((0, COMPARE), (3, COMPARE), (2, 12), (1, 6)):
        sl = slice(0, steps)
        np.testing.assert_allclose(traj["qpos"][i, sl], nat["qpos"][i, sl], atol=1e-3)
        np.testing.assert_allclose(traj["qvel"][i, sl], nat["qvel"][i, sl], atol=1e-2)
        np.testing.assert_allclose(traj["reward"][i, sl], nat["reward"][i, sl], atol=1e-3)
        assert np.array_equal(traj["contacts"][i, sl], nat["contacts"][i, sl])
        assert np.array_equal(traj["alive"][i, sl], nat["alive"][i, sl])
    # The native evaluate path (early exit on termination) matches its own trajectory.
    obj, meas = native.evaluate(ant, np.asarray(policies[:1]), jax.random.key(0))
    np.testing.assert_allclose(obj, nat["objective"][:1], rtol=1e-12)
    assert np.all(meas >= 0.85)


# ---------------------------------------------------------------- transitions (for TD3)
def _scan_outputs(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of the per-step outputs (ys, steps first) of every ``scan`` in ``jaxpr``, nested
    ones too."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            carry = eqn.params["num_carry"]
            shapes += [tuple(v.aval.shape) for v in eqn.outvars[carry:]]
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            shapes += _scan_outputs(sub)
    return shapes


def test_evaluate_materializes_no_transitions(ant, policies):
    """``evaluate`` (what algorithms without a critic call) traces an episode scan with no
    per-step outputs; ``evaluate_transitions`` has the (steps, ...) ones."""
    key = jax.random.key(0)
    plain = _scan_outputs(jax.make_jaxpr(ant.evaluate)(policies, key).jaxpr)
    assert not any(s and s[0] == LENGTH for s in plain), plain
    with_tr = _scan_outputs(jax.make_jaxpr(ant.evaluate_transitions)(policies, key).jaxpr)
    assert (LENGTH, policies.shape[0], ROBOT_DIMS["ant"][0]) in with_tr, with_tr
    assert ant.policy == dict(ant.evaluate.kwargs)["policy"]


def test_transitions_match_evaluate_and_trajectory(policies, outputs, results, traj):
    obj, meas, tr = outputs[2]
    # Same key, same episodes: the same objectives and measures as evaluate.
    np.testing.assert_allclose(np.asarray(obj), results[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(meas), results[1], atol=1e-6)
    obs_dim, act_dim = ROBOT_DIMS["ant"]
    b = policies.shape[0]
    assert tr.obs.shape == tr.next_obs.shape == (b, LENGTH, obs_dim)
    assert tr.actions.shape == (b, LENGTH, act_dim)
    assert tr.rewards.shape == tr.dones.shape == tr.valid.shape == (b, LENGTH)
    # valid = the executed steps; the counted rewards sum to the objective.
    assert np.array_equal(tr.valid, traj["alive"])
    np.testing.assert_allclose((tr.rewards * tr.valid).sum(1), results[0], rtol=1e-5, atol=1e-4)
    # Consecutive steps chain; the observation is qpos[2:] then qvel of the state after.
    np.testing.assert_allclose(tr.next_obs[:, :-1], tr.obs[:, 1:], atol=1e-6)
    np.testing.assert_allclose(tr.next_obs[..., :13], traj["qpos"][..., 2:], atol=1e-6)
    assert np.all(np.abs(tr.actions) <= 1.0)
    # done marks the terminating step only: one per ended episode, none at truncation.
    ended = traj["steps"] < LENGTH
    np.testing.assert_array_equal(tr.dones.sum(1), ended.astype(float))
    for i in np.flatnonzero(ended):
        assert tr.dones[i, traj["steps"][i] - 1] == 1.0
