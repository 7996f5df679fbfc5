"""The ME-ES emitter (Colas, Madhavan, Huizinga & Clune 2020, "Scaling MAP-Elites to Deep
Neuroevolution", GECCO; the explore-exploit variant, as the dqd-rl code ran it for the scaling
paper's baseline).

Each of ψ instances follows one point θ for ``steps_per_start`` consecutive ES generations,
then picks a new starting elite from the archive and flips between exploring and exploiting
("robin"; the first phase exploits). One generation is one scheduler iteration:

1. pre-phase: N mirrored samples θ ± σ ε_j are evaluated (not inserted);
2. their fitness is the objective (exploit) or the novelty of their measures (explore):
   the mean squared Euclidean distance to the k nearest measures of the novelty archive, which
   holds the measures of every evaluated θ so far (Colas et al.'s ``compute_novelty``);
   fitness → centered ranks u; g = 1/h Σ_j (u_j − u_{j+h}) ε_j (no division by σ:
   ``divide_gradient_by_noise_std=False``);
3. θ ← Adam(θ, −g + l2 θ) (lr 0.01, L2 0.005);
4. main phase: the updated θ alone is evaluated and inserted; its measures join the novelty
   archive.

Choosing a starting elite (Colas et al.'s code, ``bc_archive.sample_mees``; the settings in
effect in dqd-rl): explore ("novelty_bias"): probability 0.1 uniform over the occupied cells
plus 0.9 proportional to novelty among the 5 most novel elites; exploit
("best2inlast5_or_best"): with probability ½, or while fewer than 5 cells were opened, the
elite with the highest objective, else one of the 2 best of the last 5 cells this instance
opened, with probability proportional to objective − min + 1.

Settings (Colas et al. 2020 code ``config.py``; dqd-rl ``config/algorithms/me_es.gin``):
N = 200 samples (100 workers × 1 × 2 mirrored; the scaling paper's "200 samples"), σ = 0.02,
centered ranks, Adam lr 0.01, L2 0.005, k = 10 neighbours, 10 consecutive steps per start.

Deviations: the exploit choice ranks cells by their elite's objective, where Colas et al. use
the best training (sample) return recorded for the cell; the novelty archive is a ring buffer
of ``novelty_capacity`` measures (5,000 by default: the whole run at the paper's 1 M
evaluations); at a new start the elites' novelty is computed for at most
``max_candidates`` (1,296) uniformly drawn occupied cells (all of them on the paper's
archives, QD Ant's 6⁴ = 1,296 cells being the largest); no observation normalization or
action noise (the tasks have none).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import EvaluatedBatch, PrePhaseEmitter
from cmamae.emitters.gradients import mirrored_gradient, mirrored_samples
from cmamae.es.noise import check_noise, init_noise
from cmamae.es.ranking import centered_ranks

EXPLORE_UNIFORM = 0.1  # novelty_bias: share of the uniform component
TOP_NOVEL = 5  # novelty_bias: the most novel cells that share the rest
LAST_CELLS = 5  # best2inlast5: window of recently opened cells
BEST_OF_LAST = 2  # best2inlast5: candidates among them
NOVELTY_CHUNK = 256  # novelty: rows of the novelty archive scanned per block


@pytree_dataclass
class MEESState:
    """State of ψ ME-ES instances (n = solution dimension, m = measures, C = capacity).

    Attributes:
        theta: ``(ψ, n)`` current points.
        opt: Adam states (leading axis ψ).
        explore: ``(ψ,)`` bool, the current phase.
        steps: ``(ψ,)`` int32 generations since the last start.
        novelty_measures: ``(C, m)`` the novelty archive (ring buffer).
        novelty_count: ``()`` int32 measures ever appended.
        last_cells: ``(ψ, 5)`` int32 the last cells each instance opened, newest last (−1 none).
        noise: the noise generator (:mod:`cmamae.es.noise`).
        x0: ``(n,)`` the initial point.
    """

    theta: jax.Array
    opt: Any
    explore: jax.Array
    steps: jax.Array
    novelty_measures: jax.Array
    novelty_count: jax.Array
    last_cells: jax.Array
    noise: jax.Array
    x0: jax.Array


def novelty(
    queries: jax.Array, archive: jax.Array, count: jax.Array, k: int, chunk: int = NOVELTY_CHUNK
) -> jax.Array:
    """Mean squared distance from each of ``queries (q, m)`` to its k nearest rows among the
    first ``min(count, C)`` of ``archive (C, m)`` (fewer when fewer are stored; 0 when none).
    Exact zero distances are skipped, as Colas et al. skip a query's own entry.

    The stored rows are scanned in blocks of ``chunk``, keeping a running k-best, and only the
    blocks that hold stored rows are visited: the cost grows with ``count``, not with C."""
    q, cap = queries.shape[0], archive.shape[0]
    chunk = min(chunk, cap)
    blocks = -(-cap // chunk)
    padded = jnp.pad(archive, ((0, blocks * chunk - cap), (0, 0)))
    filled = jnp.minimum(count, cap)
    kk = min(k, cap)

    def body(i, best):
        block = jax.lax.dynamic_slice_in_dim(padded, i * chunk, chunk)
        d2 = jnp.sum((queries[:, None, :] - block[None, :, :]) ** 2, axis=-1)
        stored = (i * chunk + jnp.arange(chunk)) < filled
        d2 = jnp.where(stored[None, :] & (d2 > 0), d2, jnp.inf)
        return -jax.lax.top_k(-jnp.concatenate([best, d2], axis=1), kk)[0]

    best = jnp.full((q, kk), jnp.inf, queries.dtype)
    nearest = jax.lax.fori_loop(0, (filled + chunk - 1) // chunk, body, best)
    finite = jnp.isfinite(nearest)
    total = jnp.sum(jnp.where(finite, nearest, 0), axis=-1)
    return total / jnp.maximum(jnp.sum(finite, axis=-1), 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MEESSettings:
    """ME-ES's settings, keyword-only, with the values the scaling paper's baseline ran (Colas
    et al. 2020 code ``config.py``; dqd-rl ``me_es.gin``). :class:`MEESEmitter` extends them
    with the measure dimension, the candidate bound and the noise, and the "me-es" recipe of
    :mod:`cmamae.algorithms` takes them under the same names. :class:`MEESEmitter` checks them.

    Attributes:
        num_emitters: ψ, the ES instances (1 in the paper).
        es_samples: N, mirrored samples per gradient estimate, even (200).
        es_sigma: σ of the samples, in solution units (0.02).
        es_learning_rate, l2_coeff: Adam step size of θ (0.01) and the L2 coefficient added to
            its descent direction (0.005).
        novelty_k: nearest neighbours in the novelty score (10).
        steps_per_start: consecutive generations from one starting elite (10).
        novelty_capacity: measures the novelty archive keeps (ring buffer; 5,000).
    """

    num_emitters: int = 1
    es_samples: int = 200
    es_sigma: float = 0.02
    es_learning_rate: float = 0.01
    l2_coeff: float = 0.005
    novelty_k: int = 10
    steps_per_start: int = 10
    novelty_capacity: int = 5000


@dataclasses.dataclass(frozen=True)
class MEESEmitter(PrePhaseEmitter, MEESSettings):
    """ψ ME-ES instances (module docstring); batch ψ, pre-phase ψ N: the settings of
    :class:`MEESSettings` (keyword-only) and

    Attributes:
        measure_dim: m, the archive's number of measures.
        max_candidates: elites whose novelty is computed when choosing an exploration start
            (1,296).
        noise: "table" or "normal", the samples' noise (:mod:`cmamae.es.noise`).
    """

    measure_dim: int
    max_candidates: int = 1296
    noise: str = "table"

    def __post_init__(self):
        for name in (
            "measure_dim",
            "es_samples",
            "novelty_k",
            "steps_per_start",
            "num_emitters",
            "novelty_capacity",
            "max_candidates",
        ):
            validate.integer(name, getattr(self, name))
        if self.es_samples % 2:
            raise ValueError(f"es_samples must be even (mirrored pairs), got {self.es_samples}")
        validate.positive("es_sigma", self.es_sigma)
        validate.positive("es_learning_rate", self.es_learning_rate)
        validate.non_negative("l2_coeff", self.l2_coeff)
        check_noise(self.noise)

    @property
    def batch_size(self) -> int:
        return self.num_emitters

    @property
    def grad_batch_size(self) -> int:
        return self.num_emitters * self.es_samples

    def _adam(self) -> optax.GradientTransformation:
        return optax.adam(self.es_learning_rate)

    def init(self, key, x0) -> MEESState:
        x0 = validate.vector("x0", x0)
        psi, n = self.num_emitters, x0.shape[0]
        thetas = jnp.broadcast_to(x0, (psi, n)) + jnp.zeros((psi, n), x0.dtype)
        return MEESState(
            theta=thetas,
            opt=jax.vmap(self._adam().init)(thetas),
            explore=jnp.zeros((psi,), bool),
            steps=jnp.zeros((psi,), jnp.int32),
            novelty_measures=jnp.zeros((self.novelty_capacity, self.measure_dim), x0.dtype),
            novelty_count=jnp.zeros((), jnp.int32),
            last_cells=jnp.full((psi, LAST_CELLS), -1, jnp.int32),
            noise=init_noise(key, self.noise, n, x0.dtype),
            x0=x0,
        )

    # ------------------------------------------------------------------ pre-phase
    def ask_grad(self, key, state, archive=None, archive_state=None):
        x = mirrored_samples(key, state.noise, state.theta, self.es_samples, self.es_sigma)
        return x, state

    def tell_grad(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """The ES step on θ; nothing of the pre-phase is inserted."""
        psi, n = state.theta.shape
        nov = novelty(batch.measures, state.novelty_measures, state.novelty_count, self.novelty_k)
        nov = nov.reshape(psi, -1)
        f = batch.objectives.reshape(psi, -1)
        fitness = jnp.where(state.explore[:, None], nov, f)
        util = centered_ranks(fitness)[:, None, :]  # (ψ, 1, N)
        x = batch.solutions.reshape(psi, self.es_samples, n)
        grad = jax.vmap(lambda xs, u: mirrored_gradient(xs, u, self.es_sigma)[0])(x, util)
        grad = grad * self.es_sigma  # Colas et al.: Σ (u⁺ − u⁻) ε / h, not divided by σ

        def adam(theta, opt, g):
            descent = -g + self.l2_coeff * theta
            updates, opt = self._adam().update(descent, opt, theta)
            return optax.apply_updates(theta, updates).astype(theta.dtype), opt

        theta, opt = jax.vmap(adam)(state.theta, state.opt, grad.astype(state.theta.dtype))
        insert = jnp.zeros((self.grad_batch_size,), bool)
        return state.replace(theta=theta, opt=opt), insert

    # ------------------------------------------------------------------ main phase
    def ask(self, key, state, archive=None, archive_state=None):
        return state.theta, state

    def tell(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """Add the evaluated points' measures to the novelty archive, remember the cells they
        opened, and move the instances whose ``steps_per_start`` ran out to new starts."""
        psi = self.num_emitters
        measures, info = batch.measures, batch.add_info
        buffer = state.novelty_measures
        valid = jnp.all(jnp.isfinite(measures), axis=1)  # non-finite rows are not stored
        slots = (state.novelty_count + jnp.cumsum(valid) - 1) % self.novelty_capacity
        buffer = buffer.at[jnp.where(valid, slots, self.novelty_capacity)].set(
            measures.astype(buffer.dtype), mode="drop"
        )
        count = state.novelty_count + jnp.sum(valid, dtype=jnp.int32)
        opened = info.status == 2
        last = jnp.where(
            opened[:, None],
            jnp.concatenate([state.last_cells[:, 1:], info.index[:, None]], axis=1),
            state.last_cells,
        )
        steps = state.steps + 1
        restart = steps >= self.steps_per_start
        explore = jnp.where(restart, ~state.explore, state.explore)
        state = state.replace(
            novelty_measures=buffer, novelty_count=count, last_cells=last, explore=explore
        )

        def new_starts(state):
            keys = jax.random.split(key, psi)
            cells = jax.vmap(lambda k, e, lc: self._start_cell(k, e, lc, archive_state, state))(
                keys, state.explore, state.last_cells
            )
            empty = ~jnp.any(archive_state.occupied)
            x = jnp.where(empty, state.x0[None], archive_state.solutions[cells])
            theta = jnp.where(restart[:, None], x.astype(state.theta.dtype), state.theta)
            fresh = jax.vmap(self._adam().init)(theta)
            opt = jax.tree_util.tree_map(
                lambda new, old: jnp.where(
                    restart.reshape((psi,) + (1,) * (old.ndim - 1)), new, old
                ),
                fresh,
                state.opt,
            )
            return state.replace(theta=theta, opt=opt)

        state = jax.lax.cond(jnp.any(restart), new_starts, lambda s: s, state)
        return state.replace(steps=jnp.where(restart, 0, steps))

    def _start_cell(self, key, explore, last_cells, archive_state, state):
        """The cell index a new start takes its elite from (an occupied cell when any)."""
        k_cand, k_explore, k_coin, k_last = jax.random.split(key, 4)
        occ = archive_state.occupied
        cells = occ.shape[0]
        num_occ = jnp.sum(occ)

        # Explore: novelty_bias over (a uniform subset of) the occupied cells.
        c = min(self.max_candidates, cells)
        if c == cells:
            cand = jnp.arange(cells)
            cand_ok = occ
        else:
            prio = jax.random.uniform(k_cand, (cells,)) + occ.astype(jnp.float32)
            cand = jax.lax.top_k(prio, c)[1]
            cand_ok = occ[cand]
        nov = novelty(
            archive_state.measures[cand],
            state.novelty_measures,
            state.novelty_count,
            self.novelty_k,
        )
        nov = jnp.where(cand_ok, nov, -jnp.inf)
        top = jax.lax.top_k(nov, min(TOP_NOVEL, c))[1]
        in_top = jnp.zeros((c,), bool).at[top].set(True) & cand_ok
        top_nov = jnp.where(in_top, jnp.maximum(nov, 0), 0)
        share = jnp.where(
            jnp.sum(top_nov) > 0,
            top_nov / jnp.sum(top_nov),
            in_top / jnp.maximum(jnp.sum(in_top), 1),
        )
        n_cand = jnp.maximum(jnp.sum(cand_ok), 1)
        p = EXPLORE_UNIFORM * cand_ok / n_cand + (1 - EXPLORE_UNIFORM) * share
        explore_cell = cand[jax.random.choice(k_explore, c, p=p / jnp.sum(p))]

        # Exploit: best2inlast5_or_best.
        obj = jnp.where(occ, archive_state.objectives, -jnp.inf)
        best = jnp.argmax(obj)
        last_ok = last_cells >= 0
        last_obj = jnp.where(last_ok, obj[jnp.maximum(last_cells, 0)], -jnp.inf)
        order = jnp.argsort(-last_obj)[:BEST_OF_LAST]
        pick_ok = jnp.isfinite(last_obj[order])
        low = jnp.min(jnp.where(occ, archive_state.objectives, jnp.inf))
        weight = jnp.where(pick_ok, last_obj[order] - low + 1, 0)
        pick = jax.random.choice(
            k_last, BEST_OF_LAST, p=weight / jnp.maximum(jnp.sum(weight), 1e-30)
        )
        use_best = (jax.random.uniform(k_coin) < 0.5) | (jnp.sum(last_ok) < LAST_CELLS)
        use_best = use_best | ~jnp.any(pick_ok)
        exploit_cell = jnp.where(use_best, best, last_cells[order[pick]])

        cell = jnp.where(explore, explore_cell, exploit_cell)
        return jnp.where(num_occ > 0, cell, 0)
