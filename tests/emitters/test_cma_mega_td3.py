"""CMA-MEGA (TD3, ES): the TD3 + ES gradient source and the greedy-actor row on a small
policy (no physics), the recipe's paper defaults, and the recipe end to end on a 20-step
hopper (one compilation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmamae
from cmamae import algorithms, es, tasks
from cmamae.archives import GridArchive
from cmamae.emitters import ESGradient, EvaluatedBatch
from cmamae.emitters.cma_mega_td3 import TD3ArborescenceEmitter, TD3ESGradient
from cmamae.rl import TD3
from cmamae.tasks import MLPPolicy, Transitions

POLICY = MLPPolicy((3, 4, 2))
N = POLICY.num_params
PSI, S, LAM = 2, 6, 5


def _transitions(key, b):
    k = jax.random.split(key, 2)
    obs = jax.random.normal(k[0], (b, 3, 3))
    return Transitions(
        obs=obs,
        actions=jax.random.uniform(k[1], (b, 3, 2), minval=-1, maxval=1),
        rewards=obs[..., 0],
        next_obs=obs,
        dones=jnp.zeros((b, 3)),
        valid=jnp.ones((b, 3), bool),
    )


@pytest.fixture(scope="module")
def emitter():
    source = TD3ESGradient(
        td3=TD3(POLICY, critic_hidden=(8,), batch_size=16),
        es=ESGradient(samples=S, sigma=0.02, noise="normal"),
        gradient_states=32,
        critic_steps=4,
        buffer_size=256,
    )
    return TD3ArborescenceEmitter(
        source=source,
        strategy=es.CMAES(popsize=LAM, sigma0=1.0, noise="normal"),
        measure_dim=1,
        num_emitters=PSI,
    )


def test_pre_phase_rows_gradients_and_greedy_actor(emitter):
    """(Each step compiled: run eagerly, its hundreds of operations compiled one by one took
    three times as long.)"""
    archive = GridArchive(solution_dim=N, dims=(4,), ranges=[(0, 1)])
    astate = archive.init()
    state = jax.jit(emitter.init)(jax.random.key(0), POLICY.init_flat(jax.random.key(1)))
    # Fill the buffer first so the critic's gradient is not the empty-buffer random one.
    src = emitter.source
    observe = jax.jit(
        lambda k, s, t: src.observe(k, s, EvaluatedBatch(None, None, None, transitions=t))
    )
    state = state.replace(
        source=observe(jax.random.key(2), state.source, _transitions(jax.random.key(3), 4))
    )
    assert int(state.source.buffer.size) == 12 and int(state.source.td3.steps) == 4
    assert emitter.grad_batch_size == PSI * (1 + S) + 1 and emitter.batch_size == PSI * LAM
    assert emitter.needs_transitions
    x, state = jax.jit(emitter.ask_grad, static_argnums=2)(
        jax.random.key(4), state, archive, astate
    )
    assert x.shape == (emitter.grad_batch_size, N)
    np.testing.assert_array_equal(x[:PSI], state.theta)
    np.testing.assert_array_equal(x[-1], src.td3.greedy_actor(state.source.td3))
    b = x.shape[0]
    f = jnp.sum(x, axis=1)  # objective values (replaced by the critic's gradient)
    m = jnp.sin(x[:, :1])  # one measure, gradient ≈ cos(x_0) e_0 (ES estimate)
    key = jax.random.key(5)
    tell_grad = jax.jit(emitter.tell_grad, static_argnums=2)
    batch = EvaluatedBatch(x, f, m, transitions=_transitions(key, b))
    new, insert = tell_grad(key, state, archive, astate, batch)
    # θ rows and the greedy actor are inserted; the ES samples are not.
    expected = np.zeros(b, bool)
    expected[:PSI] = expected[-1] = True
    np.testing.assert_array_equal(insert, expected)
    # Every pre-phase rollout joined the buffer (θ, samples and the greedy actor).
    assert int(new.source.buffer.size) == 12 + 3 * b

    # Row 0: the critic's ∇f at θ (before the new transitions), normalized; rows 1..m: ES.
    def reference(state):
        k_es, k_td3 = jax.random.split(key)
        g = jax.vmap(
            lambda k, t: src.td3.objective_gradient(
                k, state.source.td3, src.buffer, state.source.buffer, t, 32
            )
        )(jax.random.split(k_td3, PSI), state.theta)
        block = EvaluatedBatch(x[:-1], f[:-1], m[:-1])
        es_jac, _ = src.es.jacobian(k_es, state.source.es, state.theta, block)
        return g, es_jac[:, 1]

    g, es_m = jax.jit(reference)(state)
    np.testing.assert_allclose(
        new.jacobian[:, 0], g / jnp.linalg.norm(g, axis=-1)[:, None], atol=1e-5
    )
    np.testing.assert_allclose(
        new.jacobian[:, 1], es_m / jnp.linalg.norm(es_m, axis=-1)[:, None], atol=1e-5
    )
    with pytest.raises(ValueError, match="transitions"):
        tell_grad(key, state, archive, astate, batch.replace(transitions=None))


def test_paper_defaults_and_bad_input():
    hopper = tasks.get("hopper", episode_length=20)
    d = algorithms.defaults("cma-mega-td3-es", hopper)
    assert (d["num_emitters"], d["popsize"], d["sigma0"], d["optimizer_learning_rate"]) == (
        1,
        98,
        1.0,
        1.0,
    )
    assert (d["es_samples"], d["es_sigma"], d["critic_steps"], d["gradient_states"]) == (
        100,
        0.02,
        600,
        65_536,
    )
    algo = algorithms.get("cma-mega-td3-es", hopper)
    # dqd-rl: θ + 100 samples + the greedy actor + 98 branches = 200 evaluations.
    assert algo.scheduler.evaluations_per_iteration == 200
    assert algo.scheduler.needs_transitions
    assert algo.scheduler.archive.learning_rate == 1.0
    with pytest.raises(ValueError, match="transitions"):
        algorithms.get("cma-mega-td3-es", tasks.get("sphere"))
    with pytest.raises(ValueError, match="TD3ESGradient"):
        TD3ArborescenceEmitter(
            source=ESGradient(), strategy=es.CMAES(popsize=4, sigma0=1.0), measure_dim=1
        )
    with pytest.raises(ValueError, match="gradient_states"):
        TD3ESGradient(td3=TD3(POLICY), gradient_states=0)


@pytest.mark.slow
def test_cma_mega_td3_es_on_short_hopper():
    """One compilation: 8 iterations of a 20-step hopper, 1 + 10 + 1 + 8 evaluations each."""
    task = tasks.get("hopper", episode_length=20)
    algo = algorithms.get(
        "cma-mega-td3-es",
        task,
        popsize=8,
        es_samples=10,
        gradient_states=256,
        critic_steps=20,
        buffer_size=4096,
    )
    per = algo.scheduler.evaluations_per_iteration
    assert per == 1 + 10 + 1 + 8
    result = cmamae.run(task, algo, evals=8 * per + 5, seeds=1, key=jax.random.key(0))
    np.testing.assert_array_equal(result.final()["evaluations"], [8 * per])
    qd = result.metrics["qd_score"][0]
    assert qd[-1] > qd[0] and np.all(np.diff(qd) >= 0)
    source = result.state.emitters[0].source
    assert int(source.td3.steps[0]) == 8 * 20 and int(source.buffer.size[0]) >= 8 * per
