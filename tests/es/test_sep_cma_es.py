"""sep-CMA-ES: learning rates against pycma's ``CMA_diagonal``, performance against pycma's
diagonal CMA-ES and our full CMA-ES, plus its contracts.

The reference runs use float64 (``jax.enable_x64``) and pin BLAS to one thread.
"""

from __future__ import annotations

import functools
import math
import warnings

import cma
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from cmamae import es
from cmamae.es import CMAES, SepCMAES
from cmamae.es.sep_cma_es import SepCMAESState

TARGET = 1e-8  # minimize f until f < TARGET; our strategies maximize -f


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One OpenBLAS thread: pycma's eigh and JAX's CPU eigh (LAPACK through SciPy's OpenBLAS)
    run 5-100x slower on this 2-core machine when OpenBLAS threads compete for the cores."""
    with threadpool_limits(1):
        yield


def sphere(x):
    return (x**2).sum(-1)


def ellipsoid(x):  # separable (axis-parallel), condition number 1e6
    n = x.shape[-1]
    return (10.0 ** (6 * np.arange(n) / (n - 1)) * x**2).sum(-1)


PROBLEMS = {"sphere": sphere, "ellipsoid": ellipsoid}
PROBLEM_INDEX = {name: i for i, name in enumerate(PROBLEMS)}


def default_popsize(n):
    return 4 + int(3 * math.log(n))


@functools.cache
def runner(strategy):
    """jit(vmap over keys) of a run to f < TARGET: (generations, best f) per key."""

    def run(problem, key, x0, max_gen):
        k_init, key = jax.random.split(key)
        state = strategy.init(k_init, x0)

        def cond(carry):
            _, _, gen, best = carry
            return (gen < max_gen) & (best >= TARGET)

        def body(carry):
            state, key, gen, best = carry
            key, k_ask = jax.random.split(key)
            x, state = strategy.ask(k_ask, state)
            f = jax.lax.switch(problem, list(PROBLEMS.values()), x)
            state = strategy.tell(state, x, -f)
            return state, key, gen + 1, jnp.minimum(best, jnp.min(f))

        init = (state, key, jnp.int32(0), jnp.asarray(jnp.inf, x0.dtype))
        _, _, gen, best = jax.lax.while_loop(cond, body, init)
        return gen, best

    return jax.jit(jax.vmap(run, in_axes=(None, 0, None, None)))


def run_ours(strategy, problem, x0, seeds, max_gen):
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    gen, best = runner(strategy)(PROBLEM_INDEX[problem], keys, jnp.asarray(x0), max_gen)
    return np.asarray(gen), np.asarray(best)


def pycma_diagonal_evaluations(problem, x0, sigma0, popsize, seed, max_evals):
    f = PROBLEMS[problem]
    opts = {"popsize": popsize, "seed": seed, "verbose": -9, "ftarget": TARGET}
    opts.update(maxfevals=max_evals, CMA_diagonal=True)
    strategy = cma.CMAEvolutionStrategy(x0, sigma0, opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycma's diagonal decoding warns about large z²
        while not strategy.stop():
            x = strategy.ask()
            strategy.tell(x, f(np.asarray(x)).tolist())
    return strategy.countevals if strategy.best.f < TARGET else np.inf


# --------------------------------------------------------------------------- reference: pycma
@pytest.mark.parametrize("popsize", [None, 40])
@pytest.mark.parametrize("n", [2, 10, 100, 1000])
def test_learning_rates_match_pycma_diagonal(n, popsize):
    """c1, cμ, cc and μ_eff equal pycma's ``sp.c1_sep``, ``sp.cmu_sep``, ``sp.cc_sep``."""
    popsize = popsize or default_popsize(n)
    p = SepCMAES(popsize=popsize, sigma0=1.0).parameters(n)
    opts = {"popsize": popsize, "verbose": -9, "CMA_diagonal": True}
    sp = cma.CMAEvolutionStrategy(np.ones(n), 1.0, opts).sp
    np.testing.assert_allclose([p.c1, p.cmu, p.cc], [sp.c1_sep, sp.cmu_sep, sp.cc_sep], rtol=1e-12)
    assert p.mueff == pytest.approx(sp.weights.mueff, rel=1e-12)
    assert p.mu == sp.weights.mu
    np.testing.assert_allclose(p.weights, np.asarray(sp.weights)[: p.mu], rtol=1e-12)
    # Ros & Hansen (2008): the diagonal learns about (n + 2) / 3 times faster than a full C.
    full = CMAES(popsize=popsize, sigma0=1.0).parameters(n)
    if n >= 10:
        ratio = (p.c1 + p.cmu) / (full.c1 + full.cmu)
        assert 0.5 * (n + 2) / 3 < ratio < 3 * (n + 2) / 3


@pytest.mark.parametrize(
    ("n", "problem"),
    [(10, "sphere"), (10, "ellipsoid"), pytest.param(100, "ellipsoid", marks=pytest.mark.slow)],
)
def test_evaluations_to_target_match_pycma_diagonal(n, problem):
    """Median evaluations to f < 1e-8 over 5 seeds within 1.5x of pycma with
    ``CMA_diagonal=True`` (same λ, x0, σ0; pycma's diagonal update is multiplicative and
    active, ours the additive one of Ros & Hansen, so only the speed is compared)."""
    popsize, sigma0, seeds, max_gen = default_popsize(n), 0.5, 5, 4000
    x0 = np.ones(n)
    with jax.enable_x64(True):
        strategy = SepCMAES(popsize=popsize, sigma0=sigma0)
        gen, best = run_ours(strategy, problem, x0, seeds, max_gen)
    ours = np.where(best < TARGET, gen * popsize, np.inf)
    ref = [
        pycma_diagonal_evaluations(problem, x0, sigma0, popsize, seed + 1, max_gen * popsize)
        for seed in range(seeds)
    ]
    ours_med, ref_med = np.median(ours), np.median(ref)
    assert np.isfinite(ref_med), ref
    assert ref_med / 1.5 <= ours_med <= 1.5 * ref_med, (ours, ref)


def test_faster_than_full_cma_on_separable_ellipsoid():
    """n = 100: sep-CMA-ES reaches 1e-8 on the separable ellipsoid before full CMA-ES does
    (our CMA-ES gets the same number of generations and has not reached it)."""
    n, seeds = 100, 2
    popsize, x0 = default_popsize(n), np.ones(n)
    with jax.enable_x64(True):
        gen, best = run_ours(SepCMAES(popsize=popsize, sigma0=0.5), "ellipsoid", x0, seeds, 3000)
        assert np.all(best < TARGET), best
        budget = int(gen.max())
        full_gen, full_best = run_ours(
            CMAES(popsize=popsize, sigma0=0.5), "ellipsoid", x0, seeds, budget
        )
    assert np.all(full_gen == budget)
    assert np.all(full_best > 1e3 * TARGET), (full_best, budget * popsize)


# --------------------------------------------------------------------------- contracts
def test_shapes_dtypes_and_registry():
    strategy = es.get("sep-cma-es", popsize=7, sigma0=0.3)
    assert isinstance(strategy, SepCMAES) and "sep-cma-es" in es.names()
    init, ask, tell = jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)
    state = init(jax.random.key(0), jnp.zeros(3))
    assert isinstance(state, SepCMAESState)
    x, state = ask(jax.random.key(1), state)
    assert x.shape == (7, 3) and x.dtype == jnp.float32
    state = tell(state, x, -sphere(x))
    assert state.C.shape == (3,) and state.mean.dtype == jnp.float32
    assert int(state.generation) == 1
    # Θ(n) memory: no leaf of the state but the noise table grows faster than n.
    big = jax.eval_shape(strategy.init, jax.random.key(0), jax.ShapeDtypeStruct((5000,), "f4"))
    assert all(leaf.size <= 5000 for leaf in jax.tree.leaves(big.replace(noise=big.mean)))
    with jax.enable_x64(True):
        state = init(jax.random.key(0), np.zeros(3, np.float64))
        x, state = ask(jax.random.key(1), state)
        assert x.dtype == jnp.float64 and tell(state, x, -sphere(x)).C.dtype == jnp.float64


def test_nan_fitness_ranks_last_and_state_stays_finite():
    strategy = SepCMAES(popsize=8, sigma0=0.5)
    tell = jax.jit(strategy.tell)
    state = strategy.init(jax.random.key(0), jnp.ones(5))
    x, state = jax.jit(strategy.ask)(jax.random.key(1), state)
    f = -ellipsoid(x)
    bad = jnp.array([0, 3, 7])  # includes the best solution
    with_nan = tell(state, x, f.at[bad].set(jnp.nan))
    lowest = jnp.min(f) - jnp.array([1.0, 2.0, 3.0])
    with_low = tell(state, x, f.at[bad].set(lowest))
    for field in ("mean", "sigma", "C", "pc", "ps"):
        a, b = getattr(with_nan, field), getattr(with_low, field)
        assert bool(jnp.all(jnp.isfinite(a))), field
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=field)
    all_nan = tell(state, x, jnp.full(8, jnp.nan))
    for field in ("mean", "sigma", "C", "pc", "ps"):
        assert bool(jnp.all(jnp.isfinite(getattr(all_nan, field)))), field


@functools.cache
def _random_tells(popsize, n):
    strategy = SepCMAES(popsize=popsize, sigma0=0.5)

    def run(key, fitness):  # fitness: (tells, popsize), arbitrary values incl. NaN / inf
        state = strategy.init(key, jnp.linspace(-1.0, 1.0, n))

        def body(state, args):
            k, f = args
            x, state = strategy.ask(k, state)
            return strategy.tell(state, x, f), None

        keys = jax.random.split(key, fitness.shape[0])
        return jax.lax.scan(body, state, (keys, fitness))[0]

    return jax.jit(run)


FITNESS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@pytest.mark.parametrize(("popsize", "n"), [(2, 3), (9, 6)])
@settings(max_examples=12, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_diagonal_stays_positive(popsize, n, data, seed):
    """Whatever the fitness (ties, NaN, ±inf, huge values), diag(C) > 0 and σ finite."""
    fitness = np.array(
        data.draw(st.lists(FITNESS, min_size=8 * popsize, max_size=8 * popsize)), np.float32
    ).reshape(8, popsize)
    state = _random_tells(popsize, n)(jax.random.key(seed), jnp.asarray(fitness))
    C = np.asarray(state.C)
    assert np.all(np.isfinite(C)) and np.all(C > 0)
    sigma = float(state.sigma)
    assert math.isfinite(sigma) and sigma > 0
    assert np.all(np.isfinite(state.mean))


def test_converged():
    strategy = SepCMAES(popsize=6, sigma0=0.5)
    tell = jax.jit(strategy.tell)
    state = strategy.init(jax.random.key(0), jnp.ones(4))
    assert not bool(strategy.converged(state))
    x, state = jax.jit(strategy.ask)(jax.random.key(1), state)
    assert not bool(strategy.converged(tell(state, x, -sphere(x))))
    assert bool(strategy.converged(tell(state, x, jnp.full(6, -2.5))))  # flat fitness
    assert bool(strategy.converged(state.replace(sigma=jnp.float32(1e-12))))
    ill = state.replace(C=jnp.array([1.0, 1.0, 1e-15, 1.0], jnp.float32))
    assert bool(strategy.converged(ill))
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), state, ill)
    np.testing.assert_array_equal(jax.vmap(strategy.converged)(both), [False, True])


def test_one_tell_matches_the_equations_in_numpy():
    """One ``tell`` (float64) against a NumPy transcription of Eqs. 41-47 in diagonal form
    (Ros & Hansen 2008), from a non-trivial state, with a NaN fitness that must rank last."""
    n, lam = 7, 10
    strategy = SepCMAES(popsize=lam, sigma0=0.3)
    p = strategy.parameters(n)
    rng = np.random.default_rng(3)
    mean, C = rng.normal(size=n), rng.uniform(0.5, 2.0, n)
    pc, ps = 0.3 * rng.normal(size=n), 0.3 * rng.normal(size=n)
    sigma, gen = 0.7, 4
    x = mean + sigma * np.sqrt(C) * rng.normal(size=(lam, n))
    f = rng.normal(size=lam)
    f[2] = np.nan
    with jax.enable_x64(True):
        state = SepCMAESState(
            mean=jnp.asarray(mean),
            sigma=jnp.asarray(sigma),
            C=jnp.asarray(C),
            pc=jnp.asarray(pc),
            ps=jnp.asarray(ps),
            generation=jnp.int32(gen),
            fitness_range=jnp.asarray(np.inf),
            noise=jnp.zeros((0,)),
        )
        new = jax.jit(strategy.tell)(state, jnp.asarray(x), jnp.asarray(f))
    order = np.argsort(-np.where(np.isnan(f), -np.inf, f), kind="stable")[: p.mu]
    y = (x[order] - mean) / sigma
    y_w = p.weights @ y  # Eq. 41
    ps_new = (1 - p.cs) * ps + math.sqrt(p.cs * (2 - p.cs) * p.mueff) * y_w / np.sqrt(C)  # 43
    norm = np.linalg.norm(ps_new)
    sigma_new = sigma * math.exp(min(1.0, p.cs / p.damps * (norm / p.chi_n - 1)))  # Eq. 44
    hsig = norm / math.sqrt(1 - (1 - p.cs) ** (2 * (gen + 1))) < (1.4 + 2 / (n + 1)) * p.chi_n
    pc_new = (1 - p.cc) * pc + hsig * math.sqrt(p.cc * (2 - p.cc) * p.mueff) * y_w  # Eq. 45
    delta_h = (1 - hsig) * p.cc * (2 - p.cc)
    C_new = (1 + p.c1 * delta_h - p.c1 - p.cmu) * C + p.c1 * pc_new**2 + p.cmu * (p.weights @ y**2)
    expected = dict(mean=mean + sigma * y_w, sigma=sigma_new, C=C_new, pc=pc_new, ps=ps_new)
    for field, want in expected.items():
        np.testing.assert_allclose(getattr(new, field), want, rtol=1e-12, atol=1e-14, err_msg=field)
    assert int(new.generation) == gen + 1
