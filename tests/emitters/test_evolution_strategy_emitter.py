"""The evolution-strategy emitter: batching, restarts, rankers, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.archives import GridArchive
from cmamae.emitters import (
    EvaluatedBatch,
    EvolutionStrategyEmitter,
    GaussianEmitter,
    IsoLineEmitter,
)
from cmamae.emitters.evolution_strategy import AUTO_MAP_FROM, batched
from cmamae.es import CMAES, LMMAES, OpenAIES, SepCMAES

N = 6
ARCHIVE = GridArchive(
    solution_dim=N, dims=(5, 5), ranges=[(-1, 1)] * 2, learning_rate=0.5, threshold_min=0.0
)


def _tell(emitter, state, archive_state, x, objectives, measures, key=1):
    archive_state, info = ARCHIVE.add(archive_state, x, objectives, measures)
    batch = EvaluatedBatch(x, objectives, measures, info)
    state = emitter.tell(jax.random.key(key), state, ARCHIVE, archive_state, batch)
    return state, archive_state


def test_ask_shapes_and_vmap_equals_map():
    strategy = SepCMAES(popsize=4, sigma0=0.1)
    outs = []
    for batching in ("vmap", "map"):
        em = EvolutionStrategyEmitter(strategy, num_emitters=3, batching=batching)
        state = em.init(jax.random.key(0), jnp.zeros(N))
        x, state = em.ask(jax.random.key(1), state)
        assert x.shape == (em.batch_size, N) == (12, N)
        # The asked batch is kept in the state (the buffer the next ask writes into).
        np.testing.assert_array_equal(np.asarray(state.solutions), np.asarray(x))
        outs.append(np.asarray(x))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6)


@pytest.mark.parametrize(
    "strategy", [SepCMAES(popsize=6, sigma0=0.3), LMMAES(popsize=4, sigma0=0.3)]
)
def test_vmap_and_map_agree_over_iterations_with_restarts(strategy):
    """Same keys, same results (up to rounding) through ask, insertion, tell and restarts."""
    archive = GridArchive(
        solution_dim=N, dims=(5, 5), ranges=[(-1, 1)] * 2, learning_rate=0.5, threshold_min=0.0
    )
    finals = []
    for batching in ("vmap", "map"):
        em = EvolutionStrategyEmitter(
            strategy, num_emitters=3, restart_rule="no_improvement", batching=batching
        )
        step = jax.jit(lambda k, s, a, em=em: _step(em, archive, k, s, a), donate_argnums=(1, 2))
        state, astate = em.init(jax.random.key(0), jnp.zeros(N)), archive.init()
        for i in range(15):
            state, astate = step(jax.random.key(i), state, astate)
        finals.append((state, astate))
    (s_v, a_v), (s_m, a_m) = finals
    assert int(jnp.sum(s_v.restarts)) > 0  # the restart path ran
    np.testing.assert_array_equal(np.asarray(s_v.restarts), np.asarray(s_m.restarts))
    for a, b in zip(jax.tree.leaves((s_v, a_v)), jax.tree.leaves((s_m, a_m)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-5)


def _step(em, archive, key, state, astate):
    k_ask, k_tell = jax.random.split(key)
    x, state = em.ask(k_ask, state)
    # Objectives peak at a corner, so the archive fills slowly and emitters stall.
    objectives = 1.0 - jnp.sum((x - 0.5) ** 2, axis=1)
    measures = jnp.tanh(x[:, :2])
    astate, info = archive.add(astate, x, objectives, measures)
    state = em.tell(k_tell, state, archive, astate, EvaluatedBatch(x, objectives, measures, info))
    return state, astate


def test_auto_batching_rule():
    """Batching "auto" (the default) is vmap below AUTO_MAP_FROM[es] and the sequential loop
    from it on: the crossover measured on the 2-core CPU (the emitter's module docstring)."""
    assert EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1)).batching == "auto"
    assert AUTO_MAP_FROM == {"cma-es": 500, "sep-cma-es": 1000, "lm-ma-es": 1000, "openai-es": 1000}
    cases = [
        (SepCMAES(popsize=40, sigma0=0.02), {100: "vmap", 999: "vmap", 1000: "map", 20000: "map"}),
        (LMMAES(popsize=40, sigma0=0.02, k=40), {100: "vmap", 1000: "map", 20000: "map"}),
        (OpenAIES(popsize=40, sigma0=0.02), {100: "vmap", 1000: "map"}),
        (CMAES(popsize=36, sigma0=0.5), {100: "vmap", 499: "vmap", 500: "map"}),
    ]
    for strategy, expected in cases:
        em = EvolutionStrategyEmitter(strategy, num_emitters=5)
        assert {n: em.resolved_batching(n) for n in expected} == expected, strategy.name
    for mode in ("vmap", "map"):
        em = EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1), batching=mode)
        assert em.resolved_batching(100) == em.resolved_batching(20000) == mode


def test_map_loop_passes_unchanged_outputs_through_and_fills_into():
    """The loop mode hands back inputs that fn returns unchanged (no copy through the loop),
    writes fn's first output into ``into`` when given, and agrees with vmap."""
    table = jnp.arange(24.0).reshape(3, 2, 4)  # stands for a per-instance noise table

    def fn(key, state):
        x = state["table"] * jax.random.uniform(key, (2, 1))
        return x, {"table": state["table"], "count": state["count"] + 1}

    keys = jax.random.split(jax.random.key(0), 3)
    state = {"table": table, "count": jnp.zeros(3, jnp.int32)}
    x_v, s_v = batched(fn, "vmap")(keys, state)
    x_m, s_m = batched(fn, "map")(keys, state)
    assert s_m["table"] is table
    np.testing.assert_array_equal(np.asarray(s_m["count"]), [1, 1, 1])
    np.testing.assert_allclose(np.asarray(x_m), np.asarray(x_v), rtol=1e-6)
    into = jnp.zeros((6, 4))
    for mode in ("vmap", "map"):
        x_f, _ = batched(fn, mode, into=into)(keys, state)
        np.testing.assert_allclose(np.asarray(x_f), np.asarray(x_v).reshape(6, 4), rtol=1e-6)
    with pytest.raises(ValueError, match="into"):
        batched(fn, "map", into=jnp.zeros((5, 4)))(keys, state)


def test_no_improvement_restart_moves_mean_to_an_elite():
    strategy = SepCMAES(popsize=4, sigma0=0.1)
    em = EvolutionStrategyEmitter(strategy, num_emitters=2, restart_rule="no_improvement")
    state = em.init(jax.random.key(0), jnp.zeros(N))
    astate = ARCHIVE.init()
    # One elite in the archive, far from x0.
    elite = jnp.full((1, N), 0.7)
    astate, _ = ARCHIVE.add(astate, elite, jnp.array([5.0]), jnp.array([[0.5, 0.5]]))
    x, state = em.ask(jax.random.key(1), state)
    # Nothing the emitters made enters the archive (objectives below threshold_min).
    objectives = jnp.full((8,), -1.0)
    measures = jnp.zeros((8, 2))
    state, astate = _tell(em, state, astate, x, objectives, measures)
    np.testing.assert_array_equal(np.asarray(state.restarts), [1, 1])
    np.testing.assert_allclose(np.asarray(state.es.mean), np.full((2, N), 0.7), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.es.sigma), [0.1, 0.1], rtol=1e-6)


def test_basic_rule_does_not_restart_on_no_improvement():
    em = EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1), num_emitters=2)
    state = em.init(jax.random.key(0), jnp.zeros(N))
    x, state = em.ask(jax.random.key(1), state)
    objectives = -jnp.arange(8.0) - 1  # all rejected, but not flat
    state, _ = _tell(em, state, ARCHIVE.init(), x, objectives, jnp.zeros((8, 2)))
    np.testing.assert_array_equal(np.asarray(state.restarts), [0, 0])


def test_restart_with_empty_archive_returns_to_x0():
    em = EvolutionStrategyEmitter(
        SepCMAES(popsize=4, sigma0=0.1), num_emitters=1, restart_rule="no_improvement"
    )
    x0 = jnp.full(N, 0.3)
    state = em.init(jax.random.key(0), x0)
    x, state = em.ask(jax.random.key(1), state)
    state, astate = _tell(em, state, ARCHIVE.init(), x, jnp.full(4, -1.0), jnp.zeros((4, 2)))
    assert not bool(jnp.any(astate.occupied))
    np.testing.assert_allclose(np.asarray(state.es.mean[0]), np.asarray(x0), rtol=1e-6)


def test_nan_objectives_never_reach_the_es():
    em = EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1), num_emitters=1)
    state = em.init(jax.random.key(0), jnp.zeros(N))
    x, state = em.ask(jax.random.key(1), state)
    objectives = jnp.array([jnp.nan, 1.0, 2.0, jnp.nan])
    measures = jnp.array([[0.0, 0.0], [0.1, 0.1], [jnp.inf, 0.0], [0.2, 0.2]])
    state, astate = _tell(em, state, ARCHIVE.init(), x, objectives, measures)
    es = state.es
    for field in ("mean", "sigma", "C", "pc", "ps"):
        assert bool(jnp.all(jnp.isfinite(getattr(es, field)))), field
    # One valid solution: no flat-fitness signal (inf), and never NaN.
    assert float(es.fitness_range[0]) == float("inf")
    assert int(astate.num_invalid) == 3


def test_mutation_emitters_sample_around_elites():
    astate = ARCHIVE.init()
    elite = jnp.full((1, N), 0.5)
    astate, _ = ARCHIVE.add(astate, elite, jnp.array([1.0]), jnp.array([[0.0, 0.0]]))
    for em in (
        GaussianEmitter(sigma=1e-3, num_solutions=7),
        IsoLineEmitter(iso_sigma=1e-3, line_sigma=0.2, num_solutions=7),
    ):
        state = em.init(jax.random.key(0), jnp.zeros(N))
        x, _ = em.ask(jax.random.key(1), state, ARCHIVE, astate)
        assert x.shape == (7, N)
        # One elite: every parent is it, and x_j - x_i = 0 for the line term.
        np.testing.assert_allclose(np.asarray(x), 0.5, atol=0.01)
        # Empty archive: parents are x0.
        x, _ = em.ask(jax.random.key(1), state, ARCHIVE, ARCHIVE.init())
        np.testing.assert_allclose(np.asarray(x), 0.0, atol=0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ranker="best"), "ranker"),
        (dict(restart_rule="sometimes"), "restart_rule"),
        (dict(batching="pmap"), "batching"),
        (dict(batching="unroll"), "batching"),
        (dict(num_emitters=0), "num_emitters"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1), **kwargs)


def test_bad_mutation_settings_are_rejected():
    with pytest.raises(ValueError, match="sigma"):
        GaussianEmitter(sigma=0.0)
    with pytest.raises(ValueError, match="num_solutions"):
        IsoLineEmitter(num_solutions=0)
