"""OpenAI-ES against a hand-written NumPy update and pyribs' OpenAIEvolutionStrategy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmamae import es as es_module
from cmamae.es import _common
from cmamae.es.openai_es import OpenAIES


class NumpyOpenAIES:
    """One OpenAI-ES update written out in NumPy, following pyribs 0.12 (float64).

    Centered ranks in [-0.5, 0.5] (NaN treated as the worst), mirrored-pair gradient
    1/(hσ) Σ_j (u_j - u_{j+h}) ε_j, then Adam (Kingma & Ba 2015, Algorithm 1) on the descent
    direction -g + l2 θ, the L2 term added to the gradient as pyribs' AdamOpt does.
    """

    def __init__(self, x0, sigma, lr=0.01, l2=0.005, b1=0.9, b2=0.999, eps=1e-8):
        self.theta = np.array(x0, np.float64)
        self.sigma, self.lr, self.l2, self.b1, self.b2, self.eps = sigma, lr, l2, b1, b2, eps
        self.m = np.zeros_like(self.theta)
        self.v = np.zeros_like(self.theta)
        self.t = 0

    def update(self, noise_half, f):
        lam = len(f)
        h = lam // 2
        f = np.where(np.isnan(f), -np.inf, f)
        order = np.argsort(-f, kind="stable")  # best first
        ranks = np.empty(lam)
        ranks[order[::-1]] = np.arange(lam)  # worst 0 ... best lam - 1
        u = ranks / (lam - 1) - 0.5
        g = np.sum(noise_half * (u[:h] - u[h:])[:, None], axis=0) / (h * self.sigma)
        grad = -g + self.l2 * self.theta
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad**2
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        self.theta = self.theta - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


REF = OpenAIES(popsize=10, sigma0=0.1)
ref_ask = jax.jit(REF.ask)
ref_tell = jax.jit(REF.tell)


def _fitness(x):
    return -np.sum((x - 0.5) ** 2 * np.arange(1, x.shape[1] + 1), axis=1)


def test_tell_matches_numpy_update():
    """Three steps (the third with two NaN fitness values) equal the NumPy update, float64."""
    n, lam = 30, REF.popsize
    with jax.enable_x64(True):
        x0 = np.linspace(-1, 1, n)
        state = REF.init(jax.random.key(0), jnp.asarray(x0))
        ref = NumpyOpenAIES(x0, 0.1)
        for i in range(3):
            key = jax.random.key(20 + i)
            x, state = ref_ask(key, state)
            eps = np.asarray(_common.standard_normal(key, state.noise, (lam // 2, n), jnp.float64))
            np.testing.assert_allclose(
                np.asarray(x), ref.theta + 0.1 * np.concatenate([eps, -eps]), rtol=1e-12
            )
            f = _fitness(np.asarray(x))
            if i == 2:
                f[[1, 6]] = np.nan
            state = ref_tell(state, x, jnp.asarray(f))
            ref.update(eps, f)
            np.testing.assert_allclose(np.asarray(state.mean), ref.theta, rtol=1e-9, atol=1e-12)
        assert float(state.sigma) == 0.1
        assert int(state.opt_state[0].count) == 3


def test_tell_matches_pyribs():
    """pyribs' OpenAIEvolutionStrategy (Adam lr 0.01, l2_coeff 0.005) fed the same noise.

    pyribs places Adam's ε differently (ε / sqrt(1 - β₂^t)); with ε = 1e-14 on both sides that
    difference (relative ~ε / sqrt(v̂)) is far below the tolerances, so they check the update.
    """
    opt = pytest.importorskip("ribs.emitters.opt")
    n, lam = 30, REF.popsize
    with jax.enable_x64(True):
        x0 = np.linspace(1, -1, n)
        ribs_es = opt.OpenAIEvolutionStrategy(
            sigma0=0.1,
            solution_dim=n,
            batch_size=lam,
            seed=0,
            lr=0.01,
            l2_coeff=0.005,
            epsilon=1e-14,
        )
        strategy = OpenAIES(popsize=REF.popsize, sigma0=0.1, epsilon=1e-14)
        ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
        state = strategy.init(jax.random.key(1), jnp.asarray(x0))
        ribs_es.reset(x0)

        class Injected:  # pyribs draws its noise through rng.standard_normal(shape, dtype)
            eps = None

            def standard_normal(self, shape, dtype=None):
                assert shape == self.eps.shape
                return self.eps.copy()

        ribs_es._rng = Injected()
        for i in range(4):
            key = jax.random.key(40 + i)
            x, state = ask(key, state)
            ribs_es._rng.eps = np.asarray(
                _common.standard_normal(key, state.noise, (lam // 2, n), jnp.float64)
            )
            x_ribs = np.asarray(ribs_es.ask())
            np.testing.assert_allclose(np.asarray(x), x_ribs, rtol=1e-6, atol=1e-7)
            f = _fitness(x_ribs)
            order = np.argsort(-f, kind="stable")
            state = tell(state, x, jnp.asarray(f))
            ribs_es.tell(order, f[order], lam // 2)
            np.testing.assert_allclose(
                np.asarray(state.mean), ribs_es.adam_opt.theta, rtol=1e-6, atol=1e-7
            )
            np.testing.assert_allclose(
                float(state.last_update_ratio), ribs_es.last_update_ratio, rtol=1e-6
            )


@pytest.mark.parametrize("noise", ["table", "normal"])
def test_sphere_n1000_steady_progress(noise):
    """Paper settings (λ = 40, σ = 0.02, Adam 0.01, L2 0.005) on the sphere, n = 1,000, float32:
    the mean's f falls in every window of 50 iterations over 800 iterations, to < 5 % of f(x0)."""
    n = 1000
    strategy = OpenAIES(popsize=40, sigma0=0.02, noise=noise)

    def step(state, key):
        x, state = strategy.ask(key, state)
        state = strategy.tell(state, x, -jnp.sum(x**2, axis=1))
        return state, jnp.sum(state.mean**2)

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        state = strategy.init(k0, jnp.ones((n,), jnp.float32))
        return jax.lax.scan(step, state, jax.random.split(k1, 800))

    state, f = run(jax.random.key(0))
    f = np.asarray(f)
    windows = f.reshape(-1, 50).mean(axis=1)
    assert np.all(np.diff(windows) < 0), windows
    assert f[-1] < 0.05 * n, f[-1]
    assert state.mean.dtype == jnp.float32
    assert not bool(strategy.converged(state))


def test_registered():
    assert es_module.get("openai-es", popsize=8) == OpenAIES(popsize=8)
    assert es_module.OpenAIES is OpenAIES
    assert OpenAIES().learning_rate == 0.01 and OpenAIES().l2_coeff == 0.005


SMALL = OpenAIES(popsize=6, sigma0=0.1)
small_ask = jax.jit(SMALL.ask)
small_tell = jax.jit(SMALL.tell)


def test_nan_fitness_and_converged():
    state = SMALL.init(jax.random.key(0), jnp.ones(8))
    assert not bool(SMALL.converged(state))
    x, state = small_ask(jax.random.key(1), state)
    f = -jnp.sum(x**2, axis=1)
    # NaN ranks last: same update as giving those entries the lowest fitness.
    with_nan = small_tell(state, x, f.at[jnp.array([0, 4])].set(jnp.nan))
    with_low = small_tell(state, x, f.at[jnp.array([0, 4])].set(-1e30))
    np.testing.assert_array_equal(np.asarray(with_nan.mean), np.asarray(with_low.mean))
    for leaf in jax.tree.leaves(with_nan):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    all_nan = small_tell(state, x, jnp.full(6, jnp.nan))
    assert bool(jnp.all(jnp.isfinite(all_nan.mean))) and not bool(SMALL.converged(all_nan))
    assert bool(SMALL.converged(small_tell(state, x, jnp.full(6, 2.0))))  # flat fitness
    assert not bool(SMALL.converged(with_nan))
    tiny = with_nan.replace(last_update_ratio=jnp.asarray(1e-10, jnp.float32))
    assert bool(SMALL.converged(tiny))


@jax.jit
def _property_step(key, scale):
    state = SMALL.init(jax.random.fold_in(key, 0), jax.random.normal(key, (8,)))
    x, state = SMALL.ask(jax.random.fold_in(key, 1), state)
    f = scale * jax.random.normal(jax.random.fold_in(key, 2), (6,))
    a = SMALL.tell(state, x, f)
    b = SMALL.tell(state, x, f * jnp.abs(f))  # strictly increasing, no float32 ties
    return state, a, b


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_property_rank_invariance_and_bounded_step(seed, scale):
    """Only ranks matter; σ stays σ₀; Adam's first step moves each coordinate by at most lr."""
    state, a, b = _property_step(jax.random.key(seed), scale)
    np.testing.assert_array_equal(np.asarray(a.mean), np.asarray(b.mean))
    assert float(a.sigma) == pytest.approx(SMALL.sigma0)
    step = np.abs(np.asarray(a.mean) - np.asarray(state.mean))
    assert np.all(np.isfinite(step)) and np.all(step <= SMALL.learning_rate * (1 + 1e-5))
