"""Hyperparameters as data (issue 17, item 6): ``default_params()`` pytrees passed to
``init``/``ask``/``tell`` change σ₀ and the learning rates without recompiling, and one strategy
``vmap``-ed over a batch of σ₀ equals separate runs of strategies built with each σ₀.

How equal. ``vmap`` makes XLA compile batched kernels (batched products and reductions, other
fusions), and a σ₀ that is a Python float is a compile-time constant that XLA's simplifier may
move through products, so an instance of the batch and its separate run can differ in the last
bits; the strategy's feedback then grows such differences over the generations, CMA-ES's most
(its eigendecomposition amplifies them, without bound where C has repeated eigenvalues, which
is why CMA-ES runs at n = 4 < λ here). Measured on the 2-core CPU after 12 generations, as a
fraction of each state leaf's largest magnitude: OpenAI-ES identical, sep-CMA-ES ≤ 2.5e-6,
LM-MA-ES ≤ 2.4e-6, CMA-ES ≤ 1.7e-5. The tests allow ``RTOL`` = 2e-4 of it, and check that the
three runs' means differ from each other by more than 10 ``RTOL`` (measured: ≥ 1.3e-2), so the
batch is not three copies of one run. Integer leaves (generation counters, Adam's count) must
be equal. Without ``params`` (the defaults) nothing changed: the same Python floats enter the
same operations as before params existed (``test_default_params_are_the_settings``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae import es

NAMES = es.names()
POPSIZE, GENERATIONS = 8, 12
DIMS = {"cma-es": 4, "sep-cma-es": 16, "lm-ma-es": 16, "openai-es": 16}
SIGMAS = (0.05, 0.3, 1.2)
RTOL = 2e-4
# The learning-rate field each strategy has, if any, and three values of it.
RATES = {"cma-es": "c_mean", "sep-cma-es": "c_mean", "openai-es": "learning_rate"}
RATE_VALUES = (0.3, 0.7, 1.0)


def strategy(name: str, **settings) -> es.EvolutionStrategy:
    return es.get(name, popsize=POPSIZE, noise="normal", **settings)


def final_state(s: es.EvolutionStrategy, params=None):
    """The state after GENERATIONS ask/tell steps on a shifted sphere (fixed keys)."""
    x0 = jnp.linspace(-1.0, 1.0, DIMS[s.name])

    def generation(state, key):
        x, state = s.ask(key, state, params)
        fitness = -jnp.sum((x - 0.5) ** 2, axis=1)
        return s.tell(state, x, fitness, params=params), None

    state = s.init(jax.random.key(0), x0, params)
    keys = jax.random.split(jax.random.key(1), GENERATIONS)
    return jax.lax.scan(generation, state, keys)[0]


def separate_runs(strategies):
    """:func:`final_state` of each strategy (its settings compile-time constants), each run
    on its own but compiled as one program (half the compile time of one per strategy)."""
    return jax.jit(lambda: [final_state(s) for s in strategies])()


def assert_instance_matches(batched, i, single):
    """Instance ``i`` of a batched state equals a separate run's state (module docstring)."""
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
        a, b = np.asarray(a)[i], np.asarray(b)
        if np.issubdtype(b.dtype, np.floating) and b.size:
            np.testing.assert_allclose(a, b, rtol=0, atol=RTOL * np.max(np.abs(b)))
        else:
            np.testing.assert_array_equal(a, b)


def assert_runs_differ(batched):
    """The batch's means differ pairwise by more than 10 ``RTOL`` of their scale."""
    means = np.asarray(batched.mean)
    scale = np.max(np.abs(means))
    for i in range(len(means)):
        for j in range(i):
            assert np.max(np.abs(means[i] - means[j])) > 10 * RTOL * scale


@pytest.mark.parametrize("name", NAMES)
def test_sigma0_vmapped_over_three_values_equals_three_separate_runs(name):
    s = strategy(name)

    def run(sigma0):
        return final_state(s, s.default_params().replace(sigma0=sigma0))

    batched = jax.jit(jax.vmap(run))(jnp.asarray(SIGMAS, jnp.float32))
    assert batched.mean.shape == (3, DIMS[name])
    singles = separate_runs([strategy(name, sigma0=sigma0) for sigma0 in SIGMAS])
    for i, single in enumerate(singles):
        assert_instance_matches(batched, i, single)
    assert_runs_differ(batched)


@pytest.mark.parametrize("name", sorted(RATES))
def test_learning_rate_vmapped_equals_separate_runs(name):
    field, s = RATES[name], strategy(name)

    def run(rate):
        return final_state(s, s.default_params().replace(**{field: rate}))

    batched = jax.jit(jax.vmap(run))(jnp.asarray(RATE_VALUES, jnp.float32))
    singles = separate_runs([strategy(name, **{field: rate}) for rate in RATE_VALUES])
    for i, single in enumerate(singles):
        assert_instance_matches(batched, i, single)
    assert_runs_differ(batched)


@pytest.mark.parametrize("name", NAMES)
def test_changing_params_does_not_recompile(name):
    s = strategy(name)
    run = jax.jit(lambda params: final_state(s, params))
    p = s.default_params()
    changed = p.replace(sigma0=0.7)
    if name in RATES:
        changed = changed.replace(**{RATES[name]: 0.5})
    first, second = run(p), run(changed)
    assert run._cache_size() == 1
    assert not np.array_equal(np.asarray(first.mean), np.asarray(second.mean))


@pytest.mark.parametrize("name", NAMES)
def test_default_params_are_the_settings(name):
    s = strategy(name, sigma0=0.25)
    p = s.default_params()
    assert type(p) is s.params_type and p.sigma0 == 0.25
    for field in dataclasses.fields(p):
        assert getattr(p, field.name) == getattr(s, field.name)
    # params=None and the default pytree (Python floats, outside jit) give the same run
    a, b = final_state(s), final_state(s, p)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", NAMES)
def test_bad_params(name):
    s = strategy(name)
    key, x0 = jax.random.key(0), jnp.zeros(DIMS[name])
    with pytest.raises(ValueError, match="params must be a"):
        s.init(key, x0, {"sigma0": 0.1})
    with pytest.raises(ValueError, match=r"params\.sigma0"):
        s.init(key, x0, s.default_params().replace(sigma0=-0.1))
    with pytest.raises(ValueError, match=r"params\.sigma0"):  # one bad value in a batch
        s.init(key, x0, s.default_params().replace(sigma0=jnp.array([0.1, jnp.nan])))
    other = es.ESParams(sigma0=0.1) if name == "openai-es" else es.OpenAIES().default_params()
    state = s.init(key, x0)
    x, _ = s.ask(key, state)
    with pytest.raises(ValueError, match="params must be a"):
        s.tell(state, x, jnp.zeros(POPSIZE), params=other)


def test_bad_learning_rate_params():
    s = strategy("openai-es")
    state = s.init(jax.random.key(0), jnp.zeros(DIMS["openai-es"]))
    x, _ = s.ask(jax.random.key(1), state)
    for field, value in [("learning_rate", 0.0), ("beta1", 1.0), ("l2_coeff", -1.0)]:
        with pytest.raises(ValueError, match=rf"params\.{field}"):
            s.tell(
                state, x, jnp.zeros(POPSIZE), params=s.default_params().replace(**{field: value})
            )
    with pytest.raises(ValueError, match="c_mean"):
        es.CMAES(c_mean=0.0)
