"""Selection and restart rules of the ES emitter against pyribs 0.12's EvolutionStrategyEmitter.

Both emitters run LM-MA-ES (whose update equals pyribs' to rounding, tests/es/test_lm_ma_es.py)
on the same problem with injected noise: pyribs' ES draws the z our ES draws, both archives get
the same batch, and when our emitter restarts, pyribs' archive is made to hand out the elite
ours drew (after checking that pyribs' archive holds it). Every iteration compares solutions,
archive statuses, the number of restarts and the ES state, in float64. The ES-level pieces
(weights and rates per number of parents, for CMA-ES and sep-CMA-ES too) are in
tests/es/test_selection.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.archives import GridArchive
from cmamae.emitters import EvaluatedBatch, EvolutionStrategyEmitter
from cmamae.es import CMAES, LMMAES, OpenAIES, SepCMAES
from cmamae.es.noise import standard_normal

ribs_archives = pytest.importorskip("ribs.archives")
ribs_emitters = pytest.importorskip("ribs.emitters")

N, LAM, K, SIGMA0 = 12, 8, 3, 0.3
ALPHA, THRESHOLD_MIN = 0.3, -4.0
DIMS, RANGES = (5, 5), ((-1.0, 1.0), (-1.0, 1.0))
ITERS = 30


def _problem(x):
    """Objective peaking at 0.4 and measures from the first two coordinates (NumPy)."""
    return -np.sum((x - 0.4) ** 2, axis=1), np.tanh(x[:, :2])


class _Injected:
    """Stands in for pyribs' ES ``_rng``: returns the z it is given."""

    z = None

    def standard_normal(self, shape, dtype=None):
        assert shape == self.z.shape
        return self.z.copy()


def _ours(ranker, restart_rule):
    strategy = LMMAES(popsize=LAM, sigma0=SIGMA0, k=K, noise="normal")
    emitter = EvolutionStrategyEmitter(
        strategy,
        num_emitters=1,
        ranker=ranker,
        restart_rule=restart_rule,
        selection_rule="filter",
        batching="vmap",
    )
    archive = GridArchive(
        solution_dim=N,
        dims=DIMS,
        ranges=RANGES,
        learning_rate=ALPHA,
        threshold_min=THRESHOLD_MIN,
        dtype=np.float64,
    )
    ask = jax.jit(lambda k, s: emitter.ask(k, s))
    add = jax.jit(archive.add)
    tell = jax.jit(
        lambda k, s, a, x, f, m, i: emitter.tell(k, s, archive, a, EvaluatedBatch(x, f, m, i))
    )
    return emitter, archive, ask, add, tell


@pytest.mark.parametrize(
    ("ranker", "restart_rule", "empty_batches"),
    [
        ("2imp", "no_improvement", True),
        ("imp", "basic", True),
        ("imp", 7, False),  # its restarts keep the acceptance high
        ("obj", "basic", False),  # climbs the objective, so most solutions open or improve
    ],
)
def test_filter_emitter_equals_pyribs(ranker, restart_rule, empty_batches):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        emitter, archive, ask, add, tell = _ours(ranker, restart_rule)
        x0 = rng.uniform(-0.5, 0.5, N)
        state, astate = emitter.init(jax.random.key(0), jnp.asarray(x0)), archive.init()

        ribs_archive = ribs_archives.GridArchive(
            solution_dim=N,
            dims=DIMS,
            ranges=RANGES,
            learning_rate=ALPHA,
            threshold_min=THRESHOLD_MIN,
            dtype=np.float64,
        )
        ribs_em = ribs_emitters.EvolutionStrategyEmitter(
            ribs_archive,
            x0=x0,
            sigma0=SIGMA0,
            ranker=ranker,
            es="lm_ma_es",
            es_kwargs={"n_vectors": K},
            selection_rule="filter",
            restart_rule=restart_rule,
            batch_size=LAM,
            seed=0,
        )
        ribs_em._opt._rng = _Injected()

        parents_seen, restarts_seen = [], 0
        for i in range(ITERS):
            k_ask, k_tell = jax.random.split(jax.random.key(100 + i))
            x, state = ask(k_ask, state)
            key0 = jax.random.split(k_ask, 1)[0]  # the emitter's key for its one instance
            z = standard_normal(key0, state.es.noise[0], (LAM, N), jnp.float64)
            ribs_em._opt._rng.z = np.asarray(z)
            x_ribs = np.asarray(ribs_em.ask())
            np.testing.assert_allclose(np.asarray(x), x_ribs, rtol=1e-10, atol=1e-12)

            f, meas = _problem(x_ribs)
            astate, info = add(astate, x, jnp.asarray(f), jnp.asarray(meas))
            add_info = ribs_archive.add(x_ribs, f, meas)
            np.testing.assert_array_equal(np.asarray(info.status), add_info["status"])
            parents_seen.append(int(np.sum(add_info["status"] > 0)))

            before = int(state.restarts[0])
            state = tell(k_tell, state, astate, x, jnp.asarray(f), jnp.asarray(meas), info)
            restarted = int(state.restarts[0]) > before
            if restarted:  # pyribs must draw the elite our emitter drew (its own RNG differs)
                elite = np.asarray(state.es.mean[0])
                stored = ribs_archive.data("solution")
                assert np.any(np.all(np.isclose(stored, elite, rtol=0, atol=1e-12), axis=1))
                ribs_archive.sample_elites = lambda n, e=elite: {"solution": e[None]}
            else:
                ribs_archive.sample_elites = _no_restart_expected
            ribs_em.tell(x_ribs, f, meas, add_info)
            restarts_seen += restarted

            assert ribs_em.restarts == int(state.restarts[0]), i
            ref = ribs_em._opt
            np.testing.assert_allclose(np.asarray(state.es.mean[0]), ref.mean, rtol=1e-9)
            assert float(state.es.sigma[0]) == pytest.approx(ref.sigma, rel=1e-9)
            np.testing.assert_allclose(np.asarray(state.es.vectors[0]), ref.m, atol=1e-9)
            assert int(state.es.t[0]) == ref.current_gens
        # The run went through the cases that matter: more than λ/2 parents, no parent at all
        # (where expected), restarts.
        assert max(parents_seen) > LAM // 2, parents_seen
        assert (0 in parents_seen) == empty_batches, parents_seen
        if restart_rule != "basic":
            assert restarts_seen >= 2
        if restart_rule == 7:
            assert int(state.iterations) == ITERS


def _no_restart_expected(n):
    raise AssertionError("pyribs restarted where our emitter did not")


def test_integer_restart_rule_counts_tells_from_creation():
    """Rule n restarts on tells n, 2n, ... (pyribs' itrs % n == 0), however else it restarts."""
    emitter = EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1), restart_rule=3)
    archive = GridArchive(solution_dim=N, dims=DIMS, ranges=RANGES)
    state, astate = emitter.init(jax.random.key(0), jnp.zeros(N)), archive.init()
    restarts = []
    for i in range(7):
        x, state = emitter.ask(jax.random.key(i), state)
        f = -jnp.sum((x - 0.5) ** 2, axis=1) - jnp.arange(4.0)  # not flat: no ES restart
        meas = jnp.tanh(x[:, :2])
        astate, info = archive.add(astate, x, f, meas)
        batch = EvaluatedBatch(x, f, meas, info)
        state = emitter.tell(jax.random.key(50 + i), state, archive, astate, batch)
        previous = restarts[-1] if restarts else 0
        restarts.append(int(state.restarts[0]))
        if restarts[-1] > previous:  # it starts over at an elite, with σ₀
            elites = np.asarray(astate.solutions)[np.asarray(astate.occupied)]
            assert np.any(np.all(elites == np.asarray(state.es.mean[0]), axis=1))
            assert float(state.es.sigma[0]) == pytest.approx(0.1)
    assert restarts == [0, 0, 1, 1, 1, 2, 2]
    assert int(state.iterations) == 7


def test_default_rules_keep_the_state_leaves():
    """Only the integer rule adds a leaf (its tell counter): the states of the other rules
    have the leaves they had before, so checkpoints of earlier runs still load."""
    strategy = SepCMAES(popsize=4, sigma0=0.1)
    es_leaves = len(jax.tree.leaves(strategy.init(jax.random.key(0), jnp.zeros(N))))
    for rule, extra in (("basic", 0), ("no_improvement", 0), (5, 1)):
        em = EvolutionStrategyEmitter(strategy, restart_rule=rule, selection_rule="filter")
        leaves = jax.tree.leaves(em.init(jax.random.key(0), jnp.zeros(N)))
        assert len(leaves) == es_leaves + 3 + extra  # + x0, restarts, solutions


@pytest.mark.parametrize(
    "strategy", [CMAES(popsize=6, sigma0=0.2), SepCMAES(popsize=6, sigma0=0.2)]
)
def test_filter_runs_under_vmap_and_map(strategy):
    """ψ = 3 emitters, filter selection, both batchings: parent counts are per emitter."""
    archive = GridArchive(
        solution_dim=N, dims=DIMS, ranges=RANGES, learning_rate=0.5, threshold_min=-3.0
    )
    means = []
    for batching in ("vmap", "map"):
        em = EvolutionStrategyEmitter(
            strategy, num_emitters=3, selection_rule="filter", batching=batching
        )
        state, astate = em.init(jax.random.key(0), jnp.zeros(N)), archive.init()

        @jax.jit
        def step(key, state, astate, em=em):
            k_ask, k_tell = jax.random.split(key)
            x, state = em.ask(k_ask, state)
            f = -jnp.sum((x - 0.4) ** 2, axis=1)
            meas = jnp.tanh(x[:, :2])
            astate, info = archive.add(astate, x, f, meas)
            batch = EvaluatedBatch(x, f, meas, info)
            return em.tell(k_tell, state, archive, astate, batch), astate, info

        for i in range(3):
            state, astate, info = step(jax.random.key(i), state, astate)
        means.append(np.asarray(state.es.mean))
        assert np.all(np.isfinite(means[-1]))
    if isinstance(strategy, SepCMAES):  # CMA-ES's eigenvectors differ in sign under vmap
        np.testing.assert_allclose(means[0], means[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(selection_rule="best"), "selection_rule"),
        (dict(restart_rule=0), "restart_rule"),
        (dict(restart_rule=-2), "restart_rule"),
        (dict(restart_rule=True), "restart_rule"),
        (dict(restart_rule=2.5), "restart_rule"),
    ],
)
def test_bad_rules_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvolutionStrategyEmitter(SepCMAES(popsize=4, sigma0=0.1), **kwargs)


def test_filter_is_refused_for_openai_es():
    with pytest.raises(ValueError, match="selection_rule 'filter'.*openai-es"):
        EvolutionStrategyEmitter(OpenAIES(popsize=4, sigma0=0.1), selection_rule="filter")
    EvolutionStrategyEmitter(OpenAIES(popsize=4, sigma0=0.1), selection_rule="mu")


def test_algorithms_expose_the_rules():
    """Every ES recipe takes pyribs' rules as settings ("mu" and its own restart rule by
    default); recipes without an ES emitter have no selection rule."""
    from cmamae import algorithms, tasks

    task = tasks.get("sphere", solution_dim=10)
    for name in ("cma-mae", "sep-cma-mae", "lm-ma-mae", "openai-mae", "cma-me", "cma-es"):
        assert algorithms.defaults(name, task)["selection_rule"] == "mu", name
    assert "selection_rule" not in algorithms.defaults("map-elites", task)
    algo = algorithms.get("cma-me", task, selection_rule="filter", restart_rule=50, popsize=8)
    emitter = algo.scheduler.emitters[0]
    assert (emitter.selection_rule, emitter.restart_rule) == ("filter", 50)
    assert algo.config["selection_rule"] == "filter"
    with pytest.raises(ValueError, match="selection_rule"):
        algorithms.get("openai-mae", task, selection_rule="filter")
