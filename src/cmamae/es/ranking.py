"""Orders and rank utilities of a batch of fitness values (higher is better, NaN worst).

One ranking rule for the whole library, :func:`rank_order`, and one centered-rank transform,
:func:`centered_ranks` (OpenAI-ES's utilities and the ES gradient estimates of ME-ES and
CMA-MEGA (ES)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rank_order(fitness: jax.Array) -> jax.Array:
    """Indices that sort ``fitness`` from best (highest) to worst along the last axis; NaN
    ranks last.

    Ties keep their batch order (stable sort). Shape ``(popsize,)`` (or ``fitness``' shape)
    int32.
    """
    key = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    # Stable descending sort: sort ascending on the negation.
    return jnp.argsort(-key, axis=-1, stable=True)


def centered_ranks(values: jax.Array, dtype=None) -> jax.Array:
    """Centered ranks along the last axis of ``values (..., N)``, N >= 2: the best (highest)
    value gets +0.5, the worst −0.5, evenly spaced: u_i = (N − 1 − p_i) / (N − 1) − 0.5 with
    p_i the position of entry i in :func:`rank_order`. NaN ranks lowest.

    Ties, as the reference, pyribs 0.12's ``OpenAIEvolutionStrategy``, treats them: every
    entry gets a distinct rank, its position in the ranking order it is given (ties are not
    averaged, so all-equal values give evenly spaced utilities, not zeros). The order among
    equal values is the library's one ranking rule, :func:`rank_order` (the earlier entry
    first), which every strategy's recombination uses too; pyribs' rankers hand it the later
    of two equal values first, so on exact ties the two differ in which tied entry gets the
    higher rank (tests/es/test_ranking.py compares both).

    ``dtype``: of the result (default: ``values``' floating dtype, else the default float).
    """
    n = values.shape[-1]
    if n < 2:
        raise ValueError(f"values must have at least 2 entries along the last axis, got {n}")
    if dtype is None:
        floating = jnp.issubdtype(values.dtype, jnp.floating)
        dtype = values.dtype if floating else jnp.result_type(float)
    position = jnp.argsort(rank_order(values), axis=-1, stable=True)  # p_i
    return (n - 1 - position).astype(dtype) / (n - 1) - 0.5
