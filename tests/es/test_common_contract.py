"""The contract every evolution strategy in ``cmamae.es`` keeps, checked for each of them.

Bad settings, bad ``x0`` and bad ``tell`` shapes raise a ValueError naming the argument (issue 2's
acceptance list), the table noise generator gives standard-normal samples, and ``vmap`` over a
batch of states equals separate runs with the same keys. Each strategy's own file tests its
algorithm against its reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae import es
from cmamae.es import _common

NAMES = es.names()


def test_all_four_strategies_registered():
    assert NAMES == ["cma-es", "lm-ma-es", "openai-es", "sep-cma-es"]


# --------------------------------------------------------------------------- bad settings
COMMON_BAD_SETTINGS = [
    (dict(popsize=1), "popsize"),
    (dict(popsize=2.5), "popsize"),
    (dict(popsize=10.5), "popsize"),
    (dict(sigma0=0.0), "sigma0"),
    (dict(sigma0=-1.0), "sigma0"),
    (dict(sigma0=-0.1), "sigma0"),
    (dict(sigma0=float("nan")), "sigma0"),
    (dict(noise="sobol"), "noise"),
    (dict(noise="uniform"), "noise"),
]
OWN_BAD_SETTINGS = {
    "lm-ma-es": [(dict(k=0), "k")],
    "openai-es": [
        (dict(popsize=7), "popsize"),  # mirrored sampling needs an even λ
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(l2_coeff=-0.1), "l2_coeff"),
        (dict(beta1=1.0), "beta1"),
    ],
}
BAD_SETTINGS = [
    pytest.param(name, kwargs, match, id=f"{name}-{'-'.join(map(str, kwargs.items()))}")
    for name in NAMES
    for kwargs, match in COMMON_BAD_SETTINGS + OWN_BAD_SETTINGS.get(name, [])
]


@pytest.mark.parametrize(("name", "kwargs", "match"), BAD_SETTINGS)
def test_bad_settings(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        es.get(name, **kwargs)


# --------------------------------------------------------------------------- bad x0
BAD_X0 = {
    "2-d": lambda: jnp.zeros((2, 3)),
    "2-d-wide": lambda: jnp.zeros((3, 10)),
    "scalar": lambda: jnp.asarray(1.0),
    "empty": lambda: jnp.zeros(0),
    "nan": lambda: jnp.array([0.0] * 9 + [jnp.nan]),
    "inf": lambda: jnp.array([0.0] * 9 + [jnp.inf]),
    "-inf": lambda: jnp.array([-jnp.inf] + [0.0] * 9),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x0", list(BAD_X0))
def test_bad_x0(name, x0):
    with pytest.raises(ValueError, match="x0"):
        es.get(name, popsize=4).init(jax.random.key(0), BAD_X0[x0]())


def test_lm_ma_es_needs_popsize_below_n():
    with pytest.raises(ValueError, match="popsize"):
        es.get("lm-ma-es", popsize=6).init(jax.random.key(0), jnp.zeros(6))


# --------------------------------------------------------------------------- bad tell shapes
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("noise", ["table", "normal"])
def test_bad_tell_shapes(name, noise):
    n, lam = 8, 4
    strategy = es.get(name, popsize=lam, sigma0=0.5, noise=noise)
    state = strategy.init(jax.random.key(0), jnp.zeros(n))
    x, state = strategy.ask(jax.random.key(1), state)
    assert x.shape == (lam, n)
    bad = [
        (x[:3], jnp.zeros(lam), "solutions"),  # too few rows
        (x[:, :-1], jnp.zeros(lam), "solutions"),  # wrong dimension
        (x.T, jnp.zeros(lam), "solutions"),
        (x, jnp.zeros(lam + 1), "fitness"),
        (x, jnp.zeros(lam - 1), "fitness"),
        (x, jnp.zeros((lam, 1)), "fitness"),
        (x, jnp.zeros(()), "fitness"),
    ]
    for solutions, fitness, match in bad:
        with pytest.raises(ValueError, match=match):
            strategy.tell(state, solutions, fitness)


# --------------------------------------------------------------------------- noise table
def test_table_noise_is_standard_normal():
    """Table samples: mean 0, variance 1, uncorrelated across and within rows."""
    n, m = 3000, 400
    table = _common.init_noise(jax.random.key(0), "table", n, jnp.float32)
    assert table.shape == (_common.noise_table_size(n),)
    z = np.asarray(_common.standard_normal(jax.random.key(1), table, (m, n), jnp.float32))
    assert z.shape == (m, n) and np.all(np.isfinite(z))
    assert abs(z.mean()) < 5e-3 and abs(z.var() - 1) < 1e-2
    corr = np.corrcoef(z[:, :200])  # rows
    off = corr[~np.eye(m, dtype=bool)]
    assert np.abs(off).max() < 0.35 and abs(off.mean()) < 5e-3
    assert abs(np.mean(z[:, 1:] * z[:, :-1])) < 5e-3  # neighbours within a row
    # Another key gives other samples; the same key the same ones.
    again = _common.standard_normal(jax.random.key(1), table, (m, n), jnp.float32)
    np.testing.assert_array_equal(np.asarray(again), z)
    other = np.asarray(_common.standard_normal(jax.random.key(2), table, (m, n), jnp.float32))
    assert np.mean(other == z) < 0.01
    # The stream depends only on the key, not on JAX's global threefry layout setting.
    for partitionable in (False, True):
        with jax.threefry_partitionable(partitionable):
            again = _common.standard_normal(jax.random.key(1), table, (m, n), jnp.float32)
        np.testing.assert_array_equal(np.asarray(again), z)


@pytest.mark.parametrize("name", NAMES)
def test_shared_noise_keeps_the_table_out_of_the_state(name):
    """noise="shared": an empty noise leaf, samples that are slices of the one process-wide
    table times signs (standard normal, key-dependent), and "auto" picks it for an ES from
    AUTO_TABLE_FROM numbers per ask on, while resolve_noise (the QD algorithms) keeps "table"."""
    n, lam = 1000, 10
    strategy = es.get(name, popsize=lam, sigma0=1.0, **SMALL.get(name, {}))
    assert strategy.resolved_noise(n) == "shared"
    assert strategy.resolved_noise(_common.AUTO_TABLE_FROM // lam - 1) == "normal"
    assert _common.resolve_noise("auto", lam, n) == "table"
    with pytest.raises(ValueError, match="noise"):
        _common.resolve_noise("shared", lam, n)  # not a QD algorithm setting
    state = strategy.init(jax.random.key(0), jnp.zeros(n))
    assert state.noise.shape == (0,)
    table = _common.shared_table(n, jnp.float32)
    assert table is _common.shared_table(n, jnp.float32)  # made once, read-only
    assert table.shape == (_common.noise_table_size(n),) and not table.flags.writeable
    assert abs(table.mean()) < 5e-3 and abs(table.var() - 1) < 1e-2
    z = np.asarray(
        jax.jit(strategy.standard_normal, static_argnums=(2, 3))(
            jax.random.key(1), state.noise, (400, n), jnp.float32
        )
    )
    expected = _common.standard_normal(jax.random.key(1), jnp.asarray(table), (400, n), jnp.float32)
    np.testing.assert_array_equal(z, np.asarray(expected))
    assert abs(z.mean()) < 5e-3 and abs(z.var() - 1) < 1e-2
    corr = np.corrcoef(z[:, :200])
    assert abs(corr[~np.eye(400, dtype=bool)].mean()) < 5e-3
    other = np.asarray(
        strategy.standard_normal(jax.random.key(2), state.noise, (400, n), jnp.float32)
    )
    assert np.mean(other == z) < 0.01
    # ask draws exactly these samples: x = mean + σ · (transform of) z, here from the mean 0
    # with the initial distribution N(0, σ₀² I) (OpenAI-ES: rows ±ε of the first λ/2 samples).
    x, _ = jax.jit(strategy.ask)(jax.random.key(1), state)
    rows = lam // 2 if name == "openai-es" else lam
    z_ask = np.asarray(
        strategy.standard_normal(jax.random.key(1), state.noise, (rows, n), jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(x)[:rows], z_ask, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- vmap
SMALL = {"lm-ma-es": dict(k=4)}
# CMA-ES at n = 4 < λ: for n > λ the first updates of C leave an eigenvalue of multiplicity
# n - λ, whose eigenvectors eigh may return in any basis (batched or not), giving other samples.
DIM = {"cma-es": 4}
TOLERANCE = {jnp.float64: dict(rtol=1e-9, atol=1e-12), jnp.float32: dict(rtol=2e-5, atol=1e-6)}
# CMA-ES in float64 only: float32 eigh (its B, D) differs between batched and single calls by
# ~1e-6, which twelve generations amplify to ~1e-5 in the mean.
VMAP_CASES = [
    pytest.param(name, dtype, id=f"{name}-{jnp.dtype(dtype).name}")
    for name in NAMES
    for dtype in (jnp.float32, jnp.float64)
    if not (name == "cma-es" and dtype == jnp.float32)
]


@pytest.mark.parametrize(("name", "dtype"), VMAP_CASES)
def test_vmap_equals_separate_runs(name, dtype):
    """ψ = 5 states under ``vmap`` give the same states and solutions as 5 separate runs."""
    strategy = es.get(name, popsize=6, sigma0=0.3, **SMALL.get(name, {}))
    n, iters, b = DIM.get(name, 16), 12, 5  # iters > k: LM-MA-ES's active-vector mask is exercised

    def fit(x):
        return -jnp.sum(jnp.cumsum(x, axis=1) ** 2, axis=1)

    def run(key, x0):
        k_init, key = jax.random.split(key)
        state = strategy.init(k_init, x0)

        def body(state, k):
            x, state = strategy.ask(k, state)
            return strategy.tell(state, x, fit(x)), x

        return jax.lax.scan(body, state, jax.random.split(key, iters))

    tol = TOLERANCE[dtype]
    with jax.enable_x64(dtype == jnp.float64):
        keys = jax.random.split(jax.random.key(3), b)
        x0s = jax.random.normal(jax.random.key(4), (b, n), dtype)
        batched = jax.jit(jax.vmap(run))(keys, x0s)
        single = jax.jit(run)
        for i in range(b):
            one = single(keys[i], x0s[i])
            for a, c in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
                if jnp.issubdtype(c.dtype, jnp.floating):
                    assert c.dtype == dtype
                np.testing.assert_allclose(np.asarray(a[i]), np.asarray(c), **tol)
        state, _ = batched
        counter = getattr(state, "t", getattr(state, "generation", None))
        if counter is not None:
            assert bool(jnp.all(counter == iters))
