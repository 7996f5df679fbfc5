"""The evolution-strategy emitter (CMA-ME / CMA-MAE family; Algorithm 1 of the scaling paper).

ψ identical emitters form one batched state: each holds one ES instance, asks λ solutions, is
told its solutions ranked by the ranker, and restarts from a uniformly sampled elite when its
restart rule fires. The ψ instances run under ``jax.vmap`` (``batching="vmap"``) or a
sequential ``jax.lax.map`` (``batching="map"``), whichever is faster at the problem size
(REFERENCE.md: at large n on a CPU ``lax.map`` won for the anchors).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import Emitter, sample_parents
from cmamae.emitters.rankers import check_ranker, ranking_fitness
from cmamae.es.base import EvolutionStrategy

RESTART_RULES = ("basic", "no_improvement")
BATCHING_MODES = ("vmap", "map")


@pytree_dataclass
class ESEmitterState:
    """State of ψ evolution-strategy emitters.

    Attributes:
        es: the ES states, every leaf with a leading axis ψ.
        x0: ``(n,)`` the initial solution (restart point while the archive is empty).
        restarts: ``(ψ,)`` int32 restarts so far per emitter.
    """

    es: Any
    x0: jax.Array
    restarts: jax.Array


def batched(fn, mode: str):
    """``fn`` over a leading batch axis of all its arguments, by ``vmap`` or ``lax.map``."""
    if mode == "vmap":
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


@dataclasses.dataclass(frozen=True)
class EvolutionStrategyEmitter(Emitter):
    """ψ = ``num_emitters`` emitters, each running ``strategy`` (λ = ``strategy.popsize``).

    Attributes:
        strategy: any :mod:`cmamae.es` strategy.
        num_emitters: ψ.
        ranker: "imp", "2imp" or "obj" (:mod:`cmamae.emitters.rankers`).
        restart_rule: "basic" (the ES's own convergence test) or "no_improvement" (also restart
            after an iteration in which none of the emitter's solutions entered the archive).
        batching: "vmap" or "map" over the ψ instances.
    """

    strategy: EvolutionStrategy
    num_emitters: int = 1
    ranker: str = "imp"
    restart_rule: str = "basic"
    batching: str = "vmap"

    def __post_init__(self):
        if not isinstance(self.strategy, EvolutionStrategy):
            raise ValueError(f"strategy must be a cmamae.es strategy, got {self.strategy!r}")
        if not isinstance(self.num_emitters, int) or self.num_emitters < 1:
            raise ValueError(f"num_emitters must be an integer >= 1, got {self.num_emitters!r}")
        check_ranker(self.ranker)
        if self.restart_rule not in RESTART_RULES:
            raise ValueError(
                f"restart_rule must be one of {RESTART_RULES}, got {self.restart_rule!r}"
            )
        if self.batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {BATCHING_MODES}, got {self.batching!r}")

    @property
    def batch_size(self) -> int:
        return self.num_emitters * self.strategy.popsize

    def init(self, key, x0) -> ESEmitterState:
        keys = jax.random.split(key, self.num_emitters)
        es = jax.vmap(self.strategy.init, in_axes=(0, None))(keys, x0)
        return ESEmitterState(
            es=es, x0=jnp.asarray(x0), restarts=jnp.zeros(self.num_emitters, jnp.int32)
        )

    def ask(self, key, state, archive=None, archive_state=None):
        keys = jax.random.split(key, self.num_emitters)
        x, es = batched(self.strategy.ask, self.batching)(keys, state.es)
        return x.reshape(self.batch_size, -1), state.replace(es=es)

    def tell(self, key, state, archive, archive_state, solutions, objectives, measures, info):
        psi, lam = self.num_emitters, self.strategy.popsize
        valid = jnp.isfinite(objectives) & jnp.all(jnp.isfinite(measures), axis=-1)
        fitness = ranking_fitness(self.ranker, objectives, info.status, info.value, valid)
        es = batched(self.strategy.tell, self.batching)(
            state.es, solutions.reshape(psi, lam, -1), fitness.reshape(psi, lam)
        )
        restart = batched(self.strategy.converged, self.batching)(es)
        if self.restart_rule == "no_improvement":
            restart = restart | ~jnp.any(info.status.reshape(psi, lam) > 0, axis=1)

        # Line 18-20 of Algorithm 1: a restarted emitter starts over from a random elite.
        k_elite, k_init = jax.random.split(key)
        x0s = sample_parents(k_elite, archive, archive_state, state.x0, psi)
        fresh = jax.vmap(self.strategy.init)(jax.random.split(k_init, psi), x0s)
        # The noise table is a generator, not adapted state: keep it (and skip redrawing it).
        fresh = fresh.replace(noise=es.noise)

        def pick(new, old):
            return jnp.where(restart.reshape((psi,) + (1,) * (old.ndim - 1)), new, old)

        es = jax.tree_util.tree_map(pick, fresh, es)
        return state.replace(es=es, restarts=state.restarts + restart.astype(jnp.int32))
