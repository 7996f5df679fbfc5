"""The evolution-strategy emitter (CMA-ME / CMA-MAE family; Algorithm 1 of the scaling paper).

ψ identical emitters form one batched state: each holds one ES instance, asks λ solutions, is
told its solutions ranked by the ranker, and restarts from a uniformly sampled elite when its
restart rule fires. The ψ instances run under ``jax.vmap`` (``batching="vmap"``) or a
sequential loop (``batching="map"``, like ``jax.lax.map``; see :func:`batched`), and
``batching="auto"`` (the default) picks whichever measured faster at the problem size.

The "auto" rule (:meth:`EvolutionStrategyEmitter.resolved_batching`): "map" when
n >= ``AUTO_MAP_FROM[es]`` (500 for CMA-ES, 1000 for the others), else "vmap". Measured on the
2-core CPU (jax 0.10; one compiled iteration: ask, insert into a 10^4-cell 4-D grid archive
and its result archive, tell; median ms as vmap / map; CMA-ES with one OpenBLAS thread):

* ψ × λ = 5 × 40. sep-CMA-ES: n = 100 0.66 / 0.70, 1000 1.03 / 1.10, 3000 2.4 / 2.0,
  10^4 4.4 / 4.7, 15000 19 / 8.0, 20000 38 / 15, 40000 56 / 18. LM-MA-ES: 100 0.94 / 1.01,
  1000 2.30 / 2.12, 5000 8.6 / 7.7, 15000 39 / 26. OpenAI-ES: 100 0.68 / 0.72, 1000
  1.26 / 1.41, 10^4 8.3 / 8.8, 20000 30 / 18. CMA-ES: 100 3.4 / 3.6, 300 22 / 23, 500 87 / 90
  (minimum 67 / 22), 1000 490 / 147.
* ψ × λ = 15 × 36. sep-CMA-ES: 100 1.00 / 1.11, 300 1.36 / 1.36, 1000 2.33 / 2.00, 3000
  6.5 / 4.3, 8000 39 / 18. LM-MA-ES: 100 1.35 / 1.90, 300 2.14 / 2.37. OpenAI-ES: 100
  1.11 / 1.26, 300 1.62 / 1.69. CMA-ES: 100 9.6 / 10.0.

So vmap wins by 5-40 % at n <= 300 (one fused pass over all instances); the loop wins by 2-3x
from a few million floats per batch on (vmap's batched gathers from the noise tables fall off
a cliff there), and for CMA-ES from n ~ 500 on, because under ``vmap`` both branches of its
lazy-eigendecomposition ``cond`` run every generation. In between (n = 10^3 to 10^4 with
small batches) the two are within about 10 % of each other. GPUs were not measured: pass
``batching`` explicitly there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import Emitter, EvaluatedBatch, sample_parents
from cmamae.emitters.rankers import check_ranker, ranking_fitness
from cmamae.es.base import EvolutionStrategy

RESTART_RULES = ("basic", "no_improvement")  # or an integer n >= 1 (pyribs' third form)
SELECTION_RULES = ("mu", "filter")
BATCHING_MODES = ("auto", "vmap", "map")
# Smallest n at which "auto" picks "map" over "vmap", per ES name (module docstring); other
# strategies use AUTO_MAP_FROM_DEFAULT.
AUTO_MAP_FROM = {"cma-es": 500, "sep-cma-es": 1000, "lm-ma-es": 1000, "openai-es": 1000}
AUTO_MAP_FROM_DEFAULT = 1000


@pytree_dataclass
class ESEmitterState:
    """State of ψ evolution-strategy emitters.

    Attributes:
        es: the ES states, every leaf with a leading axis ψ.
        x0: ``(n,)`` the initial solution (restart point while the archive is empty).
        restarts: ``(ψ,)`` int32 restarts so far per emitter.
        solutions: ``(ψ λ, n)`` the solutions of the last ``ask`` (zeros before the first);
            also the buffer the next ``ask`` writes into, in place when the state is donated.
        iterations: int32 ``()`` tells so far, kept only for an integer ``restart_rule``
            (None otherwise, so the states of the other rules have the same leaves as before).
    """

    es: Any
    x0: jax.Array
    restarts: jax.Array
    solutions: jax.Array
    iterations: jax.Array | None = None


def batched(fn, mode: str, into: jax.Array | None = None):
    """``fn`` over a leading batch axis ψ of all its arguments, by ``vmap`` or by a sequential
    loop (``mode="map"``, like ``jax.lax.map``).

    With ``into`` (shape ``(ψ a, ...)``), the first output leaf of instance i (shape
    ``(a, ...)``) is written to rows ``[i a, (i + 1) a)`` of ``into`` and ``into`` is returned
    in its place; with ``into = None`` outputs are stacked along a new leading axis ψ.

    Loop mode avoids two costs ``lax.map`` would add at large n (each a full pass over the
    outputs): outputs that ``fn`` merely passes through (it returns the very input object,
    e.g. an ES's noise table of ψ × 2^20 floats in the state ``ask`` and ``tell`` return) are
    taken from the batched input instead of being copied through the loop, and ``into``, a
    buffer the caller donates, takes the big output without the zero-filled stacking buffer
    ``lax.map`` starts from (and without the reshape of ``(ψ, a, n)`` to ``(ψ a, n)``, which
    XLA's CPU backend materializes as a copy before a scatter).
    """
    if mode == "vmap":
        vfn = jax.vmap(fn)
        if into is None:
            return vfn

        def merged(*args):
            flat, treedef = jax.tree_util.tree_flatten(vfn(*args))
            flat[0] = flat[0].reshape(into.shape).astype(into.dtype)
            return jax.tree_util.tree_unflatten(treedef, flat)

        return merged
    if mode != "map":
        raise ValueError(f"batching mode must be 'vmap' or 'map', got {mode!r}")
    return lambda *args: _map_loop(fn, args, into)


def _map_loop(fn, args, into):
    in_leaves, in_tree = jax.tree_util.tree_flatten(args)
    size = in_leaves[0].shape[0]
    probe: dict = {}

    def one(*leaves):
        flat, treedef = jax.tree_util.tree_flatten(fn(*in_tree.unflatten(leaves)))
        position = {id(leaf): j for j, leaf in enumerate(leaves)}
        # Per output leaf: the input leaf it passes through, or None.
        probe["source"] = [position.get(id(leaf)) for leaf in flat]
        probe["treedef"] = treedef
        return flat

    shapes = jax.eval_shape(
        one, *[jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype) for leaf in in_leaves]
    )
    source, treedef = probe["source"], probe["treedef"]
    buffers = []
    for k, (shape, src) in enumerate(zip(shapes, source, strict=True)):
        if src is not None:
            buffers.append(None)
        elif k == 0 and into is not None:
            if into.shape != (size * shape.shape[0], *shape.shape[1:]):
                raise ValueError(
                    f"into must have shape {(size * shape.shape[0], *shape.shape[1:])}, "
                    f"got {into.shape}"
                )
            buffers.append(into)
        else:
            buffers.append(jnp.zeros((size, *shape.shape), shape.dtype))

    def body(i, buffers):
        flat = one(*[leaf[i] for leaf in in_leaves])
        out = []
        for k, (buf, y) in enumerate(zip(buffers, flat, strict=True)):
            if buf is None:
                out.append(None)
            elif k == 0 and into is not None:
                start = (i * y.shape[0],) + (0,) * (y.ndim - 1)
                out.append(jax.lax.dynamic_update_slice(buf, y.astype(buf.dtype), start))
            else:
                out.append(jax.lax.dynamic_update_index_in_dim(buf, y, i, 0))
        return out

    buffers = jax.lax.fori_loop(0, size, body, buffers)
    flat = [in_leaves[j] if j is not None else b for b, j in zip(buffers, source, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, flat)


@dataclasses.dataclass(frozen=True)
class EvolutionStrategyEmitter(Emitter):
    """ψ = ``num_emitters`` emitters, each running ``strategy`` (λ = ``strategy.popsize``).

    Attributes:
        strategy: any :mod:`cmamae.es` strategy.
        num_emitters: ψ.
        ranker: "imp", "2imp" or "obj" (:mod:`cmamae.emitters.rankers`). pyribs' emitter
            defaults to "2imp".
        restart_rule: "basic" (the default: the ES's own convergence test), "no_improvement"
            (also restart after an iteration in which none of the emitter's solutions entered
            the archive; pyribs' default) or an integer n >= 1 (also restart on every n-th
            tell, counted from the emitter's creation and not reset by restarts, as pyribs'
            ``itrs % n == 0``).
        selection_rule: which solutions the ES recombines. "mu" (the default): its own ⌊λ/2⌋
            best by the ranker (CMA-ES adds its negative weights). "filter" (pyribs' default):
            m = the number of the emitter's solutions the archive accepted (status > 0) and
            the m best by the ranker are recombined with weights and rates recomputed for m;
            m = 0 leaves the distribution unchanged (:mod:`cmamae.es._selection`). With
            "2imp", or "imp" and a finite ``threshold_min``, those m are exactly the accepted
            solutions; with "obj" (or "imp" when a new cell's value is its objective) they are
            the m best by that order, accepted or not, as in pyribs. Only for strategies with
            weighted recombination (CMA-ES, sep-CMA-ES, LM-MA-ES); OpenAI-ES is refused.
        batching: "auto" (default; the rule in the module docstring), "vmap" or "map" over
            the ψ instances. All three give the same results up to float rounding, except
            CMA-ES: in its first generations C has repeated eigenvalues, and a rounding-level
            difference in C then gives another (equally valid) eigenbasis B, so the samples
            differ from there on while their distribution is the same.
    """

    strategy: EvolutionStrategy
    num_emitters: int = 1
    ranker: str = "imp"
    restart_rule: str | int = "basic"
    batching: str = "auto"
    selection_rule: str = "mu"

    def __post_init__(self):
        if not isinstance(self.strategy, EvolutionStrategy):
            raise ValueError(f"strategy must be a cmamae.es strategy, got {self.strategy!r}")
        validate.integer("num_emitters", self.num_emitters)
        check_ranker(self.ranker)
        if not (self.restart_every or self.restart_rule in RESTART_RULES):
            raise ValueError(
                f"restart_rule must be one of {RESTART_RULES} or an integer >= 1, "
                f"got {self.restart_rule!r}"
            )
        validate.one_of("selection_rule", self.selection_rule, SELECTION_RULES)
        if self.selection_rule == "filter" and not self.strategy.weighted_recombination:
            raise ValueError(
                f"selection_rule 'filter' needs a strategy that recombines selected parents "
                f"(cma-es, sep-cma-es, lm-ma-es); {self.strategy.name} weighs all its "
                "solutions by centered rank, so there is nothing to filter (pyribs accepts the "
                "setting for its OpenAI-ES and ignores it); use selection_rule='mu'"
            )
        validate.one_of("batching", self.batching, BATCHING_MODES)

    @property
    def batch_size(self) -> int:
        """ψ λ solutions per ``ask``."""
        return self.num_emitters * self.strategy.popsize

    @property
    def restart_every(self) -> int | None:
        """n for an integer ``restart_rule`` (restart on every n-th tell), else None."""
        rule = self.restart_rule
        if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool) and rule >= 1:
            return int(rule)
        return None

    def resolved_batching(self, n: int) -> str:
        """The batching mode ("vmap" or "map") used for solutions of dimension ``n``:
        ``batching`` itself, or for "auto" "map" when n >= ``AUTO_MAP_FROM[strategy.name]``."""
        if self.batching != "auto":
            return self.batching
        threshold = AUTO_MAP_FROM.get(self.strategy.name, AUTO_MAP_FROM_DEFAULT)
        return "map" if n >= threshold else "vmap"

    def init(self, key, x0) -> ESEmitterState:
        """ψ ES states with mean ``x0`` ``(n,)``, each from its own key."""
        keys = jax.random.split(key, self.num_emitters)
        es = jax.vmap(self.strategy.init, in_axes=(0, None))(keys, x0)
        x0 = jnp.asarray(x0)
        return ESEmitterState(
            es=es,
            x0=x0,
            restarts=jnp.zeros(self.num_emitters, jnp.int32),
            solutions=jnp.zeros((self.batch_size, x0.shape[0]), es.mean.dtype),
            iterations=None if self.restart_every is None else jnp.zeros((), jnp.int32),
        )

    def ask(self, key, state, archive=None, archive_state=None):
        """``(ψ λ, n)`` solutions, emitter i's in rows ``[i λ, (i + 1) λ)``."""
        keys = jax.random.split(key, self.num_emitters)
        mode = self.resolved_batching(state.solutions.shape[1])
        x, es = batched(self.strategy.ask, mode, into=state.solutions)(keys, state.es)
        return x, state.replace(es=es, solutions=x)

    def tell(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """Rank, tell each ES (its parents chosen by ``selection_rule``), and restart the
        emitters whose ES converged or whose ``restart_rule`` fired."""
        psi, lam = self.num_emitters, self.strategy.popsize
        solutions, info = batch.solutions, batch.add_info
        fitness = ranking_fitness(
            self.ranker, batch.objectives, info.status, info.value, batch.valid
        )
        mode = self.resolved_batching(solutions.shape[1])
        # pyribs' new_sols: how many of each emitter's solutions the archive accepted.
        accepted = jnp.sum(info.status.reshape(psi, lam) > 0, axis=1, dtype=jnp.int32)
        told = (state.es, solutions.reshape(psi, lam, -1), fitness.reshape(psi, lam))
        if self.selection_rule == "filter":
            es = batched(self.strategy.tell, mode)(*told, accepted)
        else:
            es = batched(self.strategy.tell, mode)(*told)
        restart = batched(self.strategy.converged, mode)(es)
        iterations = state.iterations
        if self.restart_rule == "no_improvement":
            restart = restart | (accepted == 0)
        elif self.restart_every is not None:
            iterations = iterations + 1
            restart = restart | (iterations % self.restart_every == 0)

        # Line 18-20 of Algorithm 1: a restarted emitter starts over from a random elite.
        def restart_some(adapted):
            # The key split is inside the branch too: on a CPU every threefry call is a rolled
            # loop of ~15 small kernels, a fixed cost that dominates iterations at small n.
            k_elite, k_init = jax.random.split(key)
            x0s = sample_parents(k_elite, archive, archive_state, state.x0, psi)
            fresh = jax.vmap(self.strategy.init)(jax.random.split(k_init, psi), x0s)

            def pick(new, old):
                return jnp.where(restart.reshape((psi,) + (1,) * (old.ndim - 1)), new, old)

            return jax.tree_util.tree_map(pick, fresh.replace(noise=None), adapted)

        # Restarts are rare, so the elite gathers and selects run only in iterations that
        # restart (under an outer vmap, e.g. over seeds, the cond becomes a select and both
        # branches run, as before). The noise table is a generator, not adapted state: it
        # stays out of the cond (which would copy it) and is never redrawn.
        adapted = jax.lax.cond(
            jnp.any(restart), restart_some, lambda adapted: adapted, es.replace(noise=None)
        )
        es = adapted.replace(noise=es.noise)
        return state.replace(
            es=es, restarts=state.restarts + restart.astype(jnp.int32), iterations=iterations
        )
