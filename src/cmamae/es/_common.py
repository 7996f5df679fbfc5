"""Pieces the evolution strategies share: argument checks, weights, step size, row loops.

What the emitters share with the strategies lives in public modules and is imported here so the
strategies keep one import: the noise generators (:mod:`cmamae.es.noise`), the ranking rule
(:mod:`cmamae.es.ranking`) and the argument checks (:mod:`cmamae.validate`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import validate
from cmamae.es.noise import (  # noqa: F401  (re-exported for the strategies)
    AUTO_TABLE_FROM,
    ES_NOISE_KINDS,
    NOISE_KINDS,
    NOISE_SETTINGS,
    SHARED_TABLE_SEED,
    check_noise,
    init_noise,
    noise_source,
    noise_table_size,
    resolve_noise,
    shared_table,
    standard_normal,
)
from cmamae.es.ranking import (  # noqa: F401  (re-exported for the strategies)
    centered_ranks,
    rank_order,
)


# --------------------------------------------------------------------------- argument checks
def check_popsize(popsize) -> int:
    """λ as an int >= 2 (:func:`cmamae.validate.integer`)."""
    return validate.integer("popsize", popsize, 2)


def check_positive(name: str, value) -> float:
    """A positive finite number (:func:`cmamae.validate.positive`)."""
    return validate.positive(name, value)


def check_x0(x0) -> jax.Array:
    """``x0`` as a finite floating ``(n,)`` array (:func:`cmamae.validate.vector`)."""
    return validate.vector("x0", x0)


def check_tell_args(popsize: int, n: int, solutions, fitness) -> tuple[jax.Array, jax.Array]:
    """Check the shapes given to ``tell``: solutions ``(popsize, n)``, fitness ``(popsize,)``."""
    solutions = jnp.asarray(solutions)
    fitness = jnp.asarray(fitness)
    if solutions.shape != (popsize, n):
        raise ValueError(f"solutions must have shape ({popsize}, {n}), got {solutions.shape}")
    if fitness.shape != (popsize,):
        raise ValueError(f"fitness must have shape ({popsize},), got {fitness.shape}")
    return solutions, fitness


# --------------------------------------------------------------------------- ranking
def log_weights(popsize: int, mu: int | None = None) -> np.ndarray:
    """Positive recombination weights w_i ∝ ln((λ+1)/2) − ln i, i = 1..μ, summing to 1.

    Hansen (2016), Eq. 49 for the first μ = ⌊λ/2⌋ (positive) weights. Shape ``(μ,)`` float64.
    """
    mu = popsize // 2 if mu is None else mu
    w = math.log((popsize + 1) / 2) - np.log(np.arange(1, mu + 1))
    return w / w.sum()


def mu_eff(weights: np.ndarray) -> float:
    """Variance-effective selection mass (Σ w_i)² / Σ w_i² of the positive weights."""
    w = np.asarray(weights)
    return float(w.sum() ** 2 / (w**2).sum())


def expected_norm(n: int) -> float:
    """E‖N(0, I_n)‖ ≈ √n (1 − 1/(4n) + 1/(21 n²)) (Hansen 2016, p. 21)."""
    return math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))


# --------------------------------------------------------------------------- step size
def csa_update(ps, sigma, whitened_step, generation, dtype, *, cs, damps, mueff, chi_n):
    """Cumulative step-size adaptation of CMA-ES and sep-CMA-ES, and the h_σ indicator.

    ``whitened_step`` is C^{-1/2} <y>_w and ``generation`` the count g + 1 after this update.
    Returns the new p_σ, σ and h_σ (as a ``dtype`` 0/1 scalar). Hansen (2016), Eqs. 43-44;
    the exponent is clipped at 1, as pycma does. ``cs``, ``damps``, ``mueff`` are Python
    floats, or traced scalars when they depend on the number of parents (selection "filter").
    """
    n = ps.shape[-1]
    coef = cs * (2 - cs) * mueff
    coef = math.sqrt(coef) if isinstance(coef, float) else jnp.sqrt(coef)
    ps = (1 - cs) * ps + coef * whitened_step  # Eq. 43
    ps_norm = jnp.linalg.norm(ps)
    sigma = sigma * jnp.exp(jnp.minimum(1.0, (cs / damps) * (ps_norm / chi_n - 1)))  # Eq. 44
    # h_σ (below Eq. 45): ‖p_σ‖ / √(1 − (1 − c_σ)^{2(g+1)}) < (1.4 + 2/(n+1)) E‖N(0, I)‖
    ps_bias = jnp.sqrt(1 - (1 - cs) ** (2 * generation.astype(dtype)))
    hsig = (ps_norm / ps_bias < (1.4 + 2 / (n + 1)) * chi_n).astype(dtype)
    return ps, sigma, hsig


# --------------------------------------------------------------------------- row loops
# Full unrolling up to this many rows: XLA then fuses the whole loop into one pass that reads
# only the selected rows (measured at n = 20,000: ~3x faster than a batched matrix-vector
# product over a gathered copy); longer loops unroll by this much.
ROW_LOOP_UNROLL = 32


def row_loop(count: int, body, init):
    """``jax.lax.fori_loop(0, count, body, init)``, unrolled as :data:`ROW_LOOP_UNROLL` says.

    Used for the weighted sums over ranked rows of a ``(popsize, n)`` batch (recombination),
    which this makes one pass over the μ selected rows with no gathered copy.
    """
    return jax.lax.fori_loop(0, count, body, init, unroll=max(1, min(count, ROW_LOOP_UNROLL)))


def row(rows: jax.Array, i) -> jax.Array:
    """``rows[i]`` for a traced scalar index ``i`` (a dynamic slice, no gather)."""
    return jax.lax.dynamic_index_in_dim(rows, i, axis=0, keepdims=False)


# --------------------------------------------------------------------------- stopping tests
def fitness_range(fitness: jax.Array) -> jax.Array:
    """Best minus worst of the finite entries of ``fitness`` ``(popsize,)``; inf when fewer than
    two are finite. pyribs' "flat fitness" stopping test compares this with 1e-12."""
    finite = jnp.isfinite(fitness)
    hi = jnp.max(jnp.where(finite, fitness, -jnp.inf))
    lo = jnp.min(jnp.where(finite, fitness, jnp.inf))
    return jnp.where(jnp.sum(finite) >= 2, hi - lo, jnp.inf)
