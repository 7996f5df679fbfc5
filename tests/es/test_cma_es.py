"""CMA-ES: checked against pycma (`cma`) and the tutorial's parameters, plus its contracts.

The reference runs use float64 (``jax.enable_x64``) and pin BLAS to one thread (pycma's
eigendecompositions are 10x slower when OpenBLAS threads fight over the 2 cores).
"""

from __future__ import annotations

import functools
import math

import cma
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from cmamae import es
from cmamae.es import CMAES
from cmamae.es.cma_es import CMAESState

TARGET = 1e-8  # minimize f until f < TARGET; our strategies maximize -f


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One OpenBLAS thread: pycma's eigh and JAX's CPU eigh (LAPACK through SciPy's OpenBLAS)
    run 5-100x slower on this 2-core machine when OpenBLAS threads compete for the cores."""
    with threadpool_limits(1):
        yield


# --------------------------------------------------------------------------- problems
# Written with array methods only, so one definition serves NumPy (pycma) and JAX (ours).
def sphere(x):
    return (x**2).sum(-1)


def ellipsoid(x):  # axis-parallel, condition number 1e6
    n = x.shape[-1]
    return (10.0 ** (6 * np.arange(n) / (n - 1)) * x**2).sum(-1)


def rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


PROBLEMS = {"sphere": sphere, "ellipsoid": ellipsoid, "rosenbrock": rosenbrock}
PROBLEM_INDEX = {name: i for i, name in enumerate(PROBLEMS)}


def default_popsize(n):
    return 4 + int(3 * math.log(n))


@functools.cache
def runner(strategy):
    """jit(vmap over keys) of a run to f < TARGET: returns (generations, best f) per key.

    The problem is a traced index (``lax.switch``), so one compilation per dimension serves
    all problems.
    """

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


def our_evaluations(strategy, problem, x0, seeds, max_gen):
    """Evaluations each seed needed to reach f < TARGET (inf when it did not)."""
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    gen, best = runner(strategy)(PROBLEM_INDEX[problem], keys, jnp.asarray(x0), max_gen)
    gen, best = np.asarray(gen), np.asarray(best)
    return np.where(best < TARGET, gen * strategy.popsize, np.inf)


def pycma_evaluations(problem, x0, sigma0, popsize, seed, max_evals, **options):
    f = PROBLEMS[problem]
    opts = {"popsize": popsize, "seed": seed, "verbose": -9, "ftarget": TARGET}
    opts.update(maxfevals=max_evals, **options)
    strategy = cma.CMAEvolutionStrategy(x0, sigma0, opts)
    while not strategy.stop():
        x = strategy.ask()
        strategy.tell(x, f(np.asarray(x)).tolist())
    return strategy.countevals if strategy.best.f < TARGET else np.inf


# --------------------------------------------------------------------------- reference: pycma
@pytest.mark.parametrize(
    ("n", "problem"),
    [
        (10, "sphere"),
        (10, "ellipsoid"),
        (10, "rosenbrock"),
        (40, "sphere"),
        pytest.param(40, "ellipsoid", marks=pytest.mark.slow),
        pytest.param(40, "rosenbrock", marks=pytest.mark.slow),
    ],
)
def test_evaluations_to_target_match_pycma(n, problem):
    """Median evaluations to f < 1e-8 over 5 seeds within 1.5x of pycma's (same λ, x0, σ0)."""
    popsize, sigma0, seeds = default_popsize(n), 0.5, 5
    max_gen = 2000 if n <= 10 else 8000
    x0 = np.zeros(n) if problem == "rosenbrock" else np.ones(n)
    with jax.enable_x64(True):
        ours = our_evaluations(CMAES(popsize=popsize, sigma0=sigma0), problem, x0, seeds, max_gen)
    ref = [
        pycma_evaluations(problem, x0, sigma0, popsize, seed + 1, max_gen * popsize)
        for seed in range(seeds)
    ]
    ours_med, ref_med = np.median(ours), np.median(ref)
    assert np.isfinite(ref_med), ref
    assert ours_med <= 1.5 * ref_med, (ours, ref)
    assert ours_med >= ref_med / 1.5, (ours, ref)


@pytest.mark.parametrize("n", [2, 10, 40, 200])
def test_parameters_match_pycma_and_tutorial(n):
    """Weights (with the negative ones of Eq. 53), c1, cμ, cc and μ_eff equal pycma's; cσ and
    dσ are the tutorial's (pycma's own default cσ differs slightly)."""
    popsize = default_popsize(n)
    p = CMAES(popsize=popsize, sigma0=1.0).parameters(n)
    sp = cma.CMAEvolutionStrategy(np.ones(n), 1.0, {"popsize": popsize, "verbose": -9}).sp
    np.testing.assert_allclose(p.weights, np.asarray(sp.weights), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose([p.c1, p.cmu, p.cc], [sp.c1, sp.cmu, sp.cc], rtol=1e-12)
    assert p.mueff == pytest.approx(sp.weights.mueff, rel=1e-12)
    assert p.mu == sp.weights.mu == popsize // 2
    assert p.cs == pytest.approx((p.mueff + 2) / (n + p.mueff + 5))
    damps = 1 + 2 * max(0, math.sqrt((p.mueff - 1) / (n + 1)) - 1) + p.cs
    assert p.damps == pytest.approx(damps)
    # Σ|w⁻| = min(α_μ⁻, α_μeff⁻, α_posdef⁻) ≤ α_μ⁻ = 1 + c1/cμ; from n ≈ 10 on α_μ⁻ binds,
    # so that C does not decay (Eq. 47: 1 − c1 − cμ Σw = 1).
    assert sum(p.weights) >= -p.c1 / p.cmu - 1e-12
    if n >= 10:
        assert sum(p.weights) == pytest.approx(-p.c1 / p.cmu)
    assert p.eigen_gap == max(1, int(1 / (10 * n * (p.c1 + p.cmu))))


def test_lazy_eigendecomposition():
    """Above n ≈ 100 the eigendecomposition is refreshed every eigen_gap generations only."""
    n = 200
    strategy = CMAES(popsize=default_popsize(n), sigma0=0.5)
    gap = strategy.parameters(n).eigen_gap
    assert gap == 2
    ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
    key = jax.random.key(0)
    state = strategy.init(key, jnp.ones(n))
    for gen in range(1, 5):
        key, k = jax.random.split(key)
        x, state = ask(k, state)
        old_B = state.B
        state = tell(state, x, -sphere(x))
        if gen % gap:
            assert int(state.eigen_generation) == gen - 1
            assert np.array_equal(state.B, old_B)
        else:
            assert int(state.eigen_generation) == gen
            rebuilt = (state.B * state.D**2) @ state.B.T
            np.testing.assert_allclose(rebuilt, state.C, atol=1e-5)


# --------------------------------------------------------------------------- contracts
def test_shapes_dtypes_and_registry():
    strategy = es.get("cma-es", popsize=7, sigma0=0.3)
    assert isinstance(strategy, CMAES) and "cma-es" in es.names()
    init, ask, tell = jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)
    state = init(jax.random.key(0), jnp.zeros(3))
    assert isinstance(state, CMAESState)
    x, state = ask(jax.random.key(1), state)
    assert x.shape == (7, 3) and x.dtype == jnp.float32
    state = tell(state, x, -sphere(x))
    assert state.C.shape == (3, 3) and state.mean.dtype == jnp.float32
    assert int(state.generation) == 1
    with jax.enable_x64(True):
        state = init(jax.random.key(0), np.zeros(3, np.float64))
        x, state = ask(jax.random.key(1), state)
        assert x.dtype == jnp.float64 and state.C.dtype == jnp.float64
        assert tell(state, x, -sphere(x)).C.dtype == jnp.float64


def test_nan_fitness_ranks_last_and_state_stays_finite():
    strategy = CMAES(popsize=8, sigma0=0.5)
    tell = jax.jit(strategy.tell)
    state = strategy.init(jax.random.key(0), jnp.ones(5))
    x, state = jax.jit(strategy.ask)(jax.random.key(1), state)
    f = -sphere(x)
    bad = jnp.array([1, 4, 6])
    with_nan = tell(state, x, f.at[bad].set(jnp.nan))
    # The same solutions given the lowest finite values, in batch order, rank identically.
    lowest = jnp.min(f) - jnp.array([1.0, 2.0, 3.0])
    with_low = tell(state, x, f.at[bad].set(lowest))
    for field in ("mean", "sigma", "C", "pc", "ps"):
        a, b = getattr(with_nan, field), getattr(with_low, field)
        assert bool(jnp.all(jnp.isfinite(a))), field
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=field)
    all_nan = tell(state, x, jnp.full(8, jnp.nan))
    for field in ("mean", "sigma", "C", "B", "D", "pc", "ps"):
        assert bool(jnp.all(jnp.isfinite(getattr(all_nan, field)))), field


@functools.cache
def _random_tells(popsize, n):
    strategy = CMAES(popsize=popsize, sigma0=0.5)

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


@pytest.mark.parametrize(("popsize", "n"), [(2, 3), (7, 5)])
@settings(max_examples=12, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_covariance_stays_symmetric_positive_definite(popsize, n, data, seed):
    """Whatever the fitness (ties, NaN, ±inf, huge values), C stays SPD and σ finite."""
    fitness = np.array(
        data.draw(st.lists(FITNESS, min_size=6 * popsize, max_size=6 * popsize)), np.float32
    ).reshape(6, popsize)
    state = _random_tells(popsize, n)(jax.random.key(seed), jnp.asarray(fitness))
    C = np.asarray(state.C, np.float64)
    assert np.all(np.isfinite(C)) and np.array_equal(C, C.T)
    assert np.linalg.eigvalsh(C).min() > 0
    sigma = float(state.sigma)
    assert math.isfinite(sigma) and sigma > 0
    assert np.all(np.isfinite(state.mean)) and np.all(np.asarray(state.D) > 0)


def test_converged():
    strategy = CMAES(popsize=6, sigma0=0.5)
    tell = jax.jit(strategy.tell)
    state = strategy.init(jax.random.key(0), jnp.ones(4))
    assert not bool(strategy.converged(state))
    x, state = jax.jit(strategy.ask)(jax.random.key(1), state)
    assert not bool(strategy.converged(tell(state, x, -sphere(x))))
    # Flat fitness: best − worst < 1e-12.
    assert bool(strategy.converged(tell(state, x, jnp.full(6, 3.0))))
    # NaN entries are ignored by the flatness test (the finite ones are flat).
    flat_nan = jnp.full(6, 3.0).at[2].set(jnp.nan)
    assert bool(strategy.converged(tell(state, x, flat_nan)))
    # Distribution too small, or C too ill-conditioned.
    assert bool(strategy.converged(state.replace(sigma=jnp.float32(1e-12))))
    ill = state.replace(D=jnp.array([1.0, 1.0, 1.0, 1e-8], jnp.float32))
    assert bool(strategy.converged(ill))
    # Batched states give one flag each.
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), state, ill)
    np.testing.assert_array_equal(jax.vmap(strategy.converged)(both), [False, True])
