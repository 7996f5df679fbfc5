"""Rankers: how an evolution-strategy emitter orders its solutions for the ES's ``tell``.

A ranker returns one scalar "ranking fitness" per solution, higher is better, whose descending
order is the ranker's order and which is NaN for solutions the archive rejected as invalid (the
ES ranks NaN last). The ES sees only these numbers, so the order (and the ES's flat-fitness
stopping test) follow the ranker exactly:

* ``"imp"``  (pyribs ``ImprovementRanker``): the archive's improvement value Δ = f − t_e.
* ``"2imp"`` (pyribs ``TwoStageImprovementRanker``): new cells first, then improved cells, then
  rejected solutions, each group by Δ. Encoded by shifting each status group by a constant so
  that it lies strictly above every lower group; within a group the order and spread of Δ are
  unchanged.
* ``"obj"``  (pyribs ``ObjectiveRanker``): the objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmamae import validate

RANKERS = ("imp", "2imp", "obj")


def check_ranker(ranker: str) -> str:
    """``ranker`` when it is one of :data:`RANKERS`; else ValueError."""
    return validate.one_of("ranker", ranker, RANKERS)


def ranking_fitness(
    ranker: str, objectives: jax.Array, status: jax.Array, value: jax.Array, valid: jax.Array
) -> jax.Array:
    """Ranking fitness ``(batch,)`` from the archive's ``status``/``value`` ``(batch,)``.

    ``valid`` ``(batch,)`` marks solutions with finite objective and measures; the others get
    NaN.
    """
    if ranker == "obj":
        fitness = objectives
    elif ranker == "imp":
        fitness = value
    else:
        fitness = value
        for tier in (1, 2):
            below = jnp.max(jnp.where((status < tier) & valid, fitness, -jnp.inf))
            lowest = jnp.min(jnp.where(status == tier, fitness, jnp.inf))
            shift = jnp.where(below >= lowest, below - lowest + 1, 0).astype(fitness.dtype)
            fitness = jnp.where(status == tier, fitness + shift, fitness)
    return jnp.where(valid, fitness, jnp.nan)
