"""PGA-ME: the emitter's batch composition on a small policy (no physics), then the pga-me
recipe end to end on a 20-step hopper (one compilation), and bad input."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmamae
from cmamae import algorithms, tasks
from cmamae.archives import GridArchive
from cmamae.emitters import EvaluatedBatch
from cmamae.emitters.gaussian import IsoLineEmitter
from cmamae.emitters.pga_me import PGAMEEmitter
from cmamae.rl import TD3
from cmamae.tasks import MLPPolicy, Transitions

POLICY = MLPPolicy((3, 4, 2))
N = POLICY.num_params


def _emitter(**kw):
    settings = dict(
        td3=TD3(POLICY, critic_hidden=(8,), batch_size=16),
        num_solutions=10,
        buffer_size=64,
        critic_steps=3,
        pg_steps=2,
        pg_batch_size=8,
    )
    return PGAMEEmitter(**{**settings, **kw})


def _archive():
    return GridArchive(solution_dim=N, dims=(4,), ranges=[(0, 1)])


def _transitions(key, b=2, t=5):
    k = jax.random.split(key, 3)
    obs = jax.random.normal(k[0], (b, t, 3))
    return Transitions(
        obs=obs,
        actions=jax.random.uniform(k[1], (b, t, 2), minval=-1, maxval=1),
        rewards=obs[..., 0],
        next_obs=obs + 0.1 * jax.random.normal(k[2], (b, t, 3)),
        dones=jnp.zeros((b, t)),
        valid=jnp.ones((b, t), bool).at[1, 3:].set(False),
    )


def test_split_defaults_and_sizes():
    em = _emitter()
    assert (em.num_ga, em.num_pg, em.batch_size, em.needs_transitions) == (5, 5, 10, True)
    assert em.grad_batch_size == 0
    assert em.ga_emitter == IsoLineEmitter(iso_sigma=0.005, line_sigma=0.05, num_solutions=5)
    paper = PGAMEEmitter(td3=TD3(POLICY))
    assert (paper.num_solutions, paper.proportion_ga, paper.critic_steps, paper.pg_steps) == (
        100,
        0.5,
        300,
        10,
    )
    assert (paper.pg_lr, paper.pg_batch_size, paper.buffer_size) == (1e-3, 256, 1_000_000)
    assert _emitter(proportion_ga=0.0).ga_emitter is None
    assert _emitter(proportion_ga=1.0, greedy=False).num_pg == 0


def test_ask_composition_tell_trains():
    em, archive = _emitter(), _archive()
    state = em.init(jax.random.key(0), jnp.zeros(N))
    astate = archive.init()
    ask = jax.jit(em.ask, static_argnums=2)
    # Empty archive: iso+line around x0 (= 0) and a Gaussian around x0 with σ0 = 0.02.
    x, _ = ask(jax.random.key(1), state, archive, astate)
    assert x.shape == (10, N)
    assert 0.01 < float(jnp.std(x[5:])) < 0.03
    # With elites: the first half is exactly the iso+line operator's batch for the same key.
    elites = jax.random.normal(jax.random.key(2), (4, N))
    astate, _ = archive.add(astate, elites, jnp.ones(4), jnp.linspace(0.1, 0.9, 4)[:, None])
    x, _ = ask(jax.random.key(3), state, archive, astate)
    k_ga, _ = jax.random.split(jax.random.key(3))
    ga, _ = em.ga_emitter.ask(k_ga, state.ga, archive, astate)
    np.testing.assert_allclose(x[:5], ga, atol=1e-6)
    # Then the greedy actor, then policy-gradient offspring of elites (moved off them).
    np.testing.assert_allclose(x[5], em.td3.greedy_actor(state.td3), atol=1e-7)
    dist = jnp.min(jnp.linalg.norm(x[6:, None] - elites[None], axis=-1), axis=1)
    assert np.all(np.asarray(dist) > 0) and np.all(np.asarray(dist) < 0.1)
    # tell stores the 9 valid transitions and takes critic_steps TD3 steps.
    batch = EvaluatedBatch(x, None, None, transitions=_transitions(jax.random.key(5)))
    state = em.tell(jax.random.key(4), state, archive, astate, batch)
    assert int(state.buffer.size) == 8 and int(state.td3.steps) == 3
    with pytest.raises(ValueError, match="transitions"):
        em.tell(jax.random.key(4), state, archive, astate, batch.replace(transitions=None))


def test_bad_settings():
    with pytest.raises(ValueError, match="td3"):
        PGAMEEmitter(td3=POLICY)
    with pytest.raises(ValueError, match="proportion_ga"):
        _emitter(proportion_ga=1.5)
    with pytest.raises(ValueError, match="greedy"):
        _emitter(proportion_ga=1.0)
    with pytest.raises(ValueError, match="pg_steps"):
        _emitter(pg_steps=0)
    with pytest.raises(ValueError, match="x0"):
        _emitter().init(jax.random.key(0), jnp.zeros(N + 1))


def test_needs_a_task_with_transitions():
    with pytest.raises(ValueError, match="transitions"):
        algorithms.get("pga-me", tasks.get("sphere"))
    hopper = tasks.get("hopper", episode_length=20)
    algo = algorithms.get("pga-me", hopper, batch_size=8, buffer_size=64)
    # The run-time check when a task lost its transitions (e.g. a user's replacement task).
    blind = dataclasses.replace(hopper, evaluate_transitions=None)
    with pytest.raises(ValueError, match="needs transitions"):
        cmamae.run(blind, algo, evals=16)
    # Algorithms without a critic evaluate with the plain rollout.
    assert not algorithms.get("map-elites", hopper).scheduler.needs_transitions
    assert cmamae.compiled_loop.evaluate_fn(algo.scheduler, hopper) == hopper.evaluate_transitions
    plain = algorithms.get("map-elites", hopper).scheduler
    assert cmamae.compiled_loop.evaluate_fn(plain, hopper) == hopper.evaluate


@pytest.mark.slow
def test_pga_me_on_short_hopper():
    """One compilation: 8 iterations of a 20-step hopper, batch 20 (10 iso+line, the greedy
    actor, 9 policy-gradient offspring), tiny TD3 settings."""
    task = tasks.get("hopper", episode_length=20)
    algo = algorithms.get(
        "pga-me", task, batch_size=20, buffer_size=4096, critic_steps=20, pg_steps=2
    )
    assert algo.scheduler.evaluations_per_iteration == 20
    result = cmamae.run(task, algo, evals=8 * 20 + 7, seeds=1, key=jax.random.key(0))
    np.testing.assert_array_equal(result.final()["evaluations"], [160])
    assert int(result.state.evaluations[0]) == 160
    qd = result.metrics["qd_score"][0]
    assert qd[-1] > qd[0] and np.all(np.diff(qd) >= 0)
    em_state = result.state.emitters[0]
    # Every valid step of the 160 rollouts is in the buffer; TD3 trained 20 steps/iteration.
    assert 160 <= int(em_state.buffer.size[0]) <= 160 * 20
    assert int(em_state.td3.steps[0]) == 8 * 20
