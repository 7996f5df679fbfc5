"""The evolution-strategy emitter: batching, restarts, rankers, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter, GaussianEmitter, IsoLineEmitter
from cmamae.es import SepCMAES

N = 6
ARCHIVE = GridArchive(
    solution_dim=N, dims=(5, 5), ranges=[(-1, 1)] * 2, learning_rate=0.5, threshold_min=0.0
)


def _tell(emitter, state, archive_state, x, objectives, measures, key=1):
    archive_state, info = ARCHIVE.add(archive_state, x, objectives, measures)
    state = emitter.tell(
        jax.random.key(key), state, ARCHIVE, archive_state, x, objectives, measures, info
    )
    return state, archive_state


def test_ask_shapes_and_vmap_equals_map():
    strategy = SepCMAES(popsize=4, sigma0=0.1)
    outs = []
    for batching in ("vmap", "map"):
        em = EvolutionStrategyEmitter(strategy, num_emitters=3, batching=batching)
        state = em.init(jax.random.key(0), jnp.zeros(N))
        x, state = em.ask(jax.random.key(1), state)
        assert x.shape == (em.batch_size, N) == (12, N)
        outs.append(np.asarray(x))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6)


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
