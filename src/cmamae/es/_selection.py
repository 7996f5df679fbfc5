"""Parent selection for weighted recombination: pyribs' ``selection_rule="filter"``.

pyribs 0.12's ``EvolutionStrategyEmitter.tell`` passes its ES a number of parents m: ⌊λ/2⌋
under ``selection_rule="mu"``, under ``"filter"`` the number of the emitter's solutions the
archive accepted (status > 0). Its CMA-ES, sep-CMA-ES and LM-MA-ES (``ribs/emitters/opt``:
``_cma_es.py``, ``_sep_cma_es.py``, ``_lm_ma_es.py``, ``tell`` and ``_calc_strat_params``)
then recombine the m best solutions of the ranking with fresh weights

    w_i = (ln(m + ½) − ln i) / Σ_{j ≤ m} (ln(m + ½) − ln j),  i = 1..m,

recompute μ_eff = 1 / Σ w_i² and every rate derived from it for that m, and with m = 0 leave
the distribution as it is (only the generation counter advances).

m is data (the archive's answer), so the strategies take it as an int32 scalar that may be
traced, and read the per-m values from a :class:`ParentTable` over m = 0..λ computed once per
(λ, n) on the host.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import validate


def parent_weights(popsize: int) -> np.ndarray:
    """``(λ + 1, λ)`` float64: row m holds the weights of m parents (pyribs' formula, module
    docstring) in its first m entries and zeros after; row 0 is all zeros."""
    table = np.zeros((popsize + 1, popsize))
    for m in range(1, popsize + 1):
        w = np.log(m + 0.5) - np.log(np.arange(1, m + 1))
        table[m, :m] = w / w.sum()
    return table


@dataclasses.dataclass(frozen=True, eq=False)
class ParentTable:
    """Recombination weights and the values derived from them for m = 0..λ parents.

    Attributes:
        weights: ``(λ + 1, λ)`` float64, :func:`parent_weights`.
        values: name → ``(λ + 1, ...)`` float64 array; row m is the value for m parents
            (always ``"mueff"``; row 0 repeats row 1: with m = 0 the update is discarded).
    """

    weights: np.ndarray
    values: dict[str, np.ndarray]

    def row(self, num_parents: jax.Array, dtype) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The weights ``(λ,)`` and every value for ``num_parents`` parents, in ``dtype``."""
        w = jnp.asarray(self.weights, dtype)[num_parents]
        return w, {k: jnp.asarray(v, dtype)[num_parents] for k, v in self.values.items()}


def parent_table(
    popsize: int, values_of_mueff: Callable[[float], dict[str, float | np.ndarray]]
) -> ParentTable:
    """A :class:`ParentTable` whose ``values`` are μ_eff and ``values_of_mueff(μ_eff)`` of each
    row (a strategy's learning rates as functions of μ_eff)."""
    weights = parent_weights(popsize)
    mueff = np.ones(popsize + 1)
    mueff[1:] = weights[1:].sum(axis=1) ** 2 / (weights[1:] ** 2).sum(axis=1)
    mueff[0] = mueff[1]
    rows = [values_of_mueff(float(m)) for m in mueff]
    values = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    values["mueff"] = mueff
    return ParentTable(weights=weights, values=values)


def cma_rates(p) -> dict[str, float]:
    """The rates of a CMA-ES family's parameters ``p`` (μ_eff, c_σ, d_σ, c_c, c₁, c_μ, and
    √(c_c (2 − c_c) μ_eff), the coefficient of the rank-one path) as its ``tell`` reads them
    for the full μ parents: the ``r`` of a :class:`ParentTable` row."""
    return dict(
        mueff=p.mueff,
        cs=p.cs,
        damps=p.damps,
        cc=p.cc,
        c1=p.c1,
        cmu=p.cmu,
        pc_coef=math.sqrt(p.cc * (2 - p.cc) * p.mueff),
    )


def check_num_parents(num_parents, popsize: int) -> jax.Array:
    """``num_parents`` as an int32 scalar; a concrete value must lie in [0, popsize] (the
    popsize λ)."""
    m = jnp.asarray(num_parents)
    if m.shape != () or not jnp.issubdtype(m.dtype, jnp.integer):
        raise ValueError(f"num_parents must be an integer scalar or None, got {num_parents!r}")
    if not isinstance(m, jax.core.Tracer):
        validate.integer("num_parents", int(m), 0, popsize)
    return m.astype(jnp.int32)


def hold_without_parents(num_parents, updated, old, counters: tuple[str, ...]):
    """``updated`` when ``num_parents`` > 0; else ``old`` with the fields named in
    ``counters`` (generation count, last fitness range) taken from ``updated`` (pyribs' m = 0
    tell). ``num_parents = None`` (selection "mu") returns ``updated``. The states' ``noise``
    table passes through untouched."""
    if num_parents is None:
        return updated
    empty = num_parents == 0
    merged = jax.tree_util.tree_map(
        lambda new, kept: jnp.where(empty, kept, new),
        updated.replace(noise=None),
        old.replace(noise=None),
    )
    return merged.replace(noise=updated.noise, **{k: getattr(updated, k) for k in counters})
