"""Selection rule "filter" (``num_parents``) against pyribs 0.12's ES optimizers (float64).

pyribs' CMA-ES, sep-CMA-ES and LM-MA-ES recombine the ``num_parents`` best of a ranking with
weights recomputed for that number. Fed the same solutions, ranking and number of parents, our
strategies must move the mean to the very same point every generation, whatever the number
(0, 1, more than λ/2, λ). Rates derived from μ_eff are compared where both libraries use the
same formula; where pyribs' formula differs on purpose (cma_es.py / sep_cma_es.py docstrings)
they are checked against the formula we use.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cmamae import es
from cmamae.es import _common, _selection

opt = pytest.importorskip("ribs.emitters.opt")

N, LAM = 12, 8
# Parent counts of consecutive tells: none, one, fewer and more than λ/2, all λ.
PARENTS = [3, 0, 1, 8, 5, 0, 0, 7, 2, 4, 6, 1]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _ribs_es(name):
    if name == "cma-es":
        return opt.CMAEvolutionStrategy(sigma0=0.3, solution_dim=N, batch_size=LAM, seed=0)
    if name == "sep-cma-es":
        return opt.SeparableCMAEvolutionStrategy(sigma0=0.3, solution_dim=N, batch_size=LAM, seed=0)
    return opt.LMMAEvolutionStrategy(
        sigma0=0.3, solution_dim=N, batch_size=LAM, seed=0, n_vectors=3
    )


def _ours(name):
    kw = {"k": 3} if name == "lm-ma-es" else {}
    return es.get(name, popsize=LAM, sigma0=0.3, noise="normal", **kw)


@functools.cache
def _jitted(name):
    s = _ours(name)
    return s, jax.jit(s.ask), jax.jit(s.tell)


@pytest.mark.parametrize("popsize", [2, 7, 8, 36])
def test_parent_weights_and_mueff_equal_pyribs(popsize):
    table = _selection.parent_weights(popsize)
    assert table.shape == (popsize + 1, popsize)
    assert np.all(table[0] == 0)
    mueff = _selection.parent_table(popsize, lambda m: {}).values["mueff"]
    cma = opt.CMAEvolutionStrategy(sigma0=1.0, solution_dim=40, batch_size=popsize)
    for m in range(1, popsize + 1):
        weights, ref_mueff, *_ = cma._calc_strat_params(m)
        np.testing.assert_allclose(table[m, :m], weights, rtol=1e-14)
        assert np.all(table[m, m:] == 0)
        assert mueff[m] == pytest.approx(ref_mueff, rel=1e-13)
        lm_weights, lm_mueff = opt.LMMAEvolutionStrategy._calc_strat_params(m)
        np.testing.assert_allclose(table[m, :m], lm_weights, rtol=1e-14)
        assert mueff[m] == pytest.approx(lm_mueff, rel=1e-13)


@pytest.mark.parametrize("n", [12, 100])
def test_rates_per_parent_count(n):
    """CMA-ES: c_σ, d_σ, c_c, c_1 per m equal pyribs'; c_μ is the tutorial's Eq. 58 (pyribs
    leaves out its 1/4). sep-CMA-ES: c_σ, d_σ, c_c equal pyribs'; c_1, c_μ are the separable
    rates of our module docstring (pyribs multiplies c_1 by the full-CMA c_1)."""
    cma = _ours("cma-es").parent_table(n).values
    sep = _ours("sep-cma-es").parent_table(n).values
    ribs_cma = opt.CMAEvolutionStrategy(sigma0=1.0, solution_dim=n, batch_size=LAM)
    ribs_sep = opt.SeparableCMAEvolutionStrategy(sigma0=1.0, solution_dim=n, batch_size=LAM)
    for m in range(1, LAM + 1):
        _, mueff, cc, cs, c1, _ = ribs_cma._calc_strat_params(m)
        damps = 1 + 2 * max(0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
        got = {k: cma[k][m] for k in ("cc", "cs", "c1", "damps")}
        np.testing.assert_allclose(list(got.values()), [cc, cs, c1, damps], rtol=1e-13)
        cmu = min(1 - c1, 2 * (0.25 + mueff + 1 / mueff - 2) / ((n + 2) ** 2 + mueff))
        assert cma["cmu"][m] == pytest.approx(cmu, rel=1e-13)
        assert cma["weight_sum"][m] == 1.0
        assert cma["pc_coef"][m] == pytest.approx(math.sqrt(cc * (2 - cc) * mueff), rel=1e-13)

        _, mueff, cc, cs, _, _ = ribs_sep._calc_strat_params(n, m)
        got = [sep[k][m] for k in ("cc", "cs", "damps")]
        np.testing.assert_allclose(got, [cc, cs, damps], rtol=1e-13)
        c1 = 1 / (n + 2 * math.sqrt(n) + mueff / n)
        assert sep["c1"][m] == pytest.approx(c1, rel=1e-13)


@pytest.mark.parametrize("name", ["cma-es", "sep-cma-es", "lm-ma-es"])
def test_filter_mean_equals_pyribs(name):
    """Same solutions, ranking and parent counts: the mean after every tell equals pyribs',
    m = 0 leaves it (and the rest of the distribution) in place, and the generation counter
    advances on every tell, as pyribs' does."""
    strategy, ask, tell = _jitted(name)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        x0 = rng.normal(size=N)
        state = strategy.init(jax.random.key(0), jnp.asarray(x0))
        ref = _ribs_es(name)
        ref.reset(x0)
        ref.ask()  # allocates its solution buffer
        first_tell = True
        for g, m in enumerate(PARENTS):
            x, _ = ask(jax.random.key(g), state)
            x = np.asarray(x)
            fitness = rng.normal(size=LAM)
            order = np.argsort(-fitness, kind="stable")
            ref._solutions = x.copy()
            if name == "lm-ma-es":  # its tell also reads each solution's z (not the mean's)
                ref._solution_z = np.zeros_like(x)
            before = state
            state = tell(state, x, jnp.asarray(fitness), jnp.int32(m))
            ref.tell(order, fitness[order], m)
            np.testing.assert_allclose(np.asarray(state.mean), ref.mean, rtol=1e-12, atol=1e-14)
            if m == 0:
                for field in ("mean", "sigma"):
                    assert np.array_equal(getattr(state, field), getattr(before, field)), field
            elif first_tell and name != "lm-ma-es":
                # From identical (σ₀, C = I, p_σ = 0) states p_σ agrees too.
                np.testing.assert_allclose(np.asarray(state.ps), ref.ps, rtol=1e-12)
            first_tell = first_tell and m == 0
            if name == "lm-ma-es":
                assert int(state.t) == ref.current_gens == g + 1
            else:
                assert int(state.generation) == ref.current_eval // LAM == g + 1


def test_lm_ma_es_filter_state_equals_pyribs_with_injected_noise():
    """LM-MA-ES, whose update is pyribs' to rounding: ask with the same z, tell with the same
    ranking and parent counts; solutions, mean, σ, p_σ and the direction vectors agree."""
    strategy, ask, tell = _jitted("lm-ma-es")
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        x0 = rng.normal(size=N)
        state = strategy.init(jax.random.key(0), jnp.asarray(x0))
        ref = _ribs_es("lm-ma-es")
        ref.reset(x0)
        ref._rng = _Injected()
        for g, m in enumerate(PARENTS):
            key = jax.random.key(10 + g)
            x, state = ask(key, state)
            ref._rng.z = np.asarray(_common.standard_normal(key, state.noise, (LAM, N), x.dtype))
            np.testing.assert_allclose(np.asarray(x), ref.ask(), rtol=1e-11, atol=1e-12)
            fitness = -np.sum(np.asarray(x) ** 2, axis=1) + rng.normal(size=LAM)
            order = np.argsort(-fitness, kind="stable")
            state = tell(state, x, jnp.asarray(fitness), jnp.int32(m))
            ref.tell(order, fitness[order], m)
            np.testing.assert_allclose(np.asarray(state.mean), ref.mean, rtol=1e-11)
            assert float(state.sigma) == pytest.approx(ref.sigma, rel=1e-11)
            np.testing.assert_allclose(np.asarray(state.p_sigma), ref.ps, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.asarray(state.vectors), ref.m, rtol=1e-9, atol=1e-12)


class _Injected:
    """Stands in for pyribs' ``_rng``: returns the z it is given."""

    z = None

    def standard_normal(self, shape, dtype=None):
        assert shape == self.z.shape
        return self.z.copy()


@pytest.mark.parametrize("name", ["sep-cma-es", "lm-ma-es"])
def test_filter_with_half_the_parents_is_selection_mu(name):
    """Without negative weights, m = λ/2 parents (λ even) is rule "mu": same state."""
    strategy, ask, tell = _jitted(name)
    state = strategy.init(jax.random.key(0), jnp.linspace(-1.0, 1.0, N))
    for g in range(4):
        x, state = ask(jax.random.key(g), state)
        fitness = -jnp.sum(x**2, axis=1)
        mu_state = tell(state, x, fitness)
        filtered = tell(state, x, fitness, jnp.int32(LAM // 2))
        for a, b in zip(jax.tree.leaves(mu_state), jax.tree.leaves(filtered), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-7)
        state = mu_state


def test_bad_num_parents_is_rejected():
    strategy = _ours("sep-cma-es")
    state = strategy.init(jax.random.key(0), jnp.zeros(N))
    x, _ = strategy.ask(jax.random.key(1), state)
    f = -jnp.sum(x**2, axis=1)
    for bad in (LAM + 1, -1):
        with pytest.raises(ValueError, match="num_parents"):
            strategy.tell(state, x, f, bad)
    with pytest.raises(ValueError, match="num_parents"):
        strategy.tell(state, x, f, 2.5)
    openai = es.OpenAIES(popsize=LAM, sigma0=0.1)
    ostate = openai.init(jax.random.key(0), jnp.zeros(N))
    with pytest.raises(ValueError, match="num_parents"):
        openai.tell(ostate, x, f, 3)
    assert {n for n in es.names() if es.get(n).weighted_recombination} == {
        "cma-es",
        "sep-cma-es",
        "lm-ma-es",
    }
