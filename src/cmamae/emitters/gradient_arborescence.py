"""The gradient-arborescence emitter of CMA-MEGA (Fontaine & Nikolaidis 2021, "Differentiable
Quality Diversity", Algorithm 1; pyribs 0.12 ``GradientArborescenceEmitter``), with a pluggable
gradient source (:mod:`cmamae.emitters.gradients`): exact Jacobians (CMA-MEGA), OpenAI-ES
estimates (CMA-MEGA (ES), Tjanaka et al. 2022, "Approximating Gradients for Differentiable
Quality Diversity in Reinforcement Learning"), or a learned critic (CMA-MEGA (TD3, ES)).

Each of ψ instances keeps a point θ ``(n,)``, a gradient optimizer state and a CMA-ES over the
1 + m gradient coefficients c (mean 0 and step size σ_g at start). One iteration:

1. pre-phase (``ask_grad`` / ``tell_grad``): θ and the source's samples are evaluated; θ is
   inserted into the archive (the samples are not: dqd-rl ``sample_insert=False``); the
   source returns the Jacobian J = [∇f; ∇m_1; ...; ∇m_m] at θ, and each row is normalized,
   ∇ ← ∇ / (‖∇‖ + ε) (pyribs ``normalize_grad``, ε = 1e-8);
2. branching (``ask``): λ coefficient vectors c_i from the CMA-ES, θ'_i = θ + Σ_j c_ij ∇_j;
3. ``tell``: the branches are ranked by the ranker ("2imp" or "imp") on the archive's
   feedback; the CMA-ES is told that ranking of the c_i; θ moves towards the weighted mean of
   the best μ = ⌊λ/2⌋ branches, w_i ∝ ln(μ + ½) − ln i (pyribs "mu" selection):
   step = Σ w_i θ'_{i:λ} − θ, θ ← optimizer(θ, step) ("gradient_ascent": θ + η step;
   "adam": optax Adam on −step);
4. restart when the CMA-ES's own test fires or, with ``restart_rule="no_improvement"``, no
   branch entered the archive: θ ← a uniformly sampled elite, fresh optimizer and CMA-ES.

Differences from pyribs 0.12 (same algorithm, different random numbers): the coefficient ES
is any :mod:`cmamae.es` strategy (default CMA-ES after Hansen's tutorial, with active
weights, where pyribs uses its purecma-style CMA-ES); "adam" is optax's (ε after the bias
correction, like :class:`cmamae.es.OpenAIES`); only "mu" selection (the setting of pyribs'
sphere example and of dqd-rl; pyribs' default "filter" recombines the added branches).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import EvaluatedBatch, PrePhaseEmitter, sample_parents
from cmamae.emitters.gradients import GradientSource
from cmamae.emitters.rankers import ranking_fitness
from cmamae.es.base import EvolutionStrategy
from cmamae.es.ranking import rank_order

OPTIMIZERS = ("gradient_ascent", "adam")
RESTART_RULES = ("basic", "no_improvement")


@pytree_dataclass
class ArborescenceState:
    """State of ψ arborescence emitters (n = solution dimension, m = measures).

    Attributes:
        theta: ``(ψ, n)`` the points θ.
        opt: the gradient optimizers' states (leading axis ψ).
        es: the coefficient ES states (leading axis ψ; dimension 1 + m).
        jacobian: ``(ψ, 1 + m, n)`` the normalized Jacobians of the last pre-phase.
        coefficients: ``(ψ, λ, 1 + m)`` the coefficients of the last ``ask``.
        source: the gradient source's state.
        x0: ``(n,)`` the initial point (restart point while the archive is empty).
        restarts: ``(ψ,)`` int32 restarts so far.
    """

    theta: jax.Array
    opt: Any
    es: Any
    jacobian: jax.Array
    coefficients: jax.Array
    source: Any
    x0: jax.Array
    restarts: jax.Array


def parent_weights(popsize: int) -> np.ndarray:
    """pyribs' θ-step weights for "mu" selection: w_i ∝ ln(μ + ½) − ln i, i = 1..μ = ⌊λ/2⌋,
    summing to 1 ``(μ,)``."""
    mu = popsize // 2
    w = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    return w / w.sum()


@dataclasses.dataclass(frozen=True)
class GradientArborescenceEmitter(PrePhaseEmitter):
    """ψ CMA-MEGA emitters (module docstring).

    Attributes:
        source: the gradient source (:class:`cmamae.emitters.gradients.GradientSource`).
        measure_dim: m, the archive's number of measures.
        strategy: the ES over the 1 + m coefficients; λ = ``strategy.popsize`` branches and
            σ_g = ``strategy.sigma0`` (e.g. ``es.CMAES(popsize=35, sigma0=10.0,
            noise="normal")``: a noise table is wasted on 1 + m dimensions).
        num_emitters: ψ.
        ranker: "2imp" (pyribs' default) or "imp" (CMA-MAEGA).
        restart_rule: "no_improvement" (pyribs' default) or "basic".
        optimizer: "gradient_ascent" (pyribs' sphere example, dqd-rl) or "adam".
        learning_rate: η of the optimizer (pyribs ``lr``).
        normalize: divide each gradient by its norm + ``epsilon``.
        epsilon: 1e-8 as pyribs.
    """

    source: GradientSource
    strategy: EvolutionStrategy
    measure_dim: int
    num_emitters: int = 1
    ranker: str = "2imp"
    restart_rule: str = "no_improvement"
    optimizer: str = "gradient_ascent"
    learning_rate: float = 1.0
    normalize: bool = True
    epsilon: float = 1e-8

    def __post_init__(self):
        if not isinstance(self.source, GradientSource):
            raise ValueError(f"source must be a GradientSource, got {self.source!r}")
        if not isinstance(self.strategy, EvolutionStrategy):
            raise ValueError(f"strategy must be a cmamae.es strategy, got {self.strategy!r}")
        validate.integer("num_emitters", self.num_emitters)
        validate.integer("measure_dim", self.measure_dim)
        if self.strategy.popsize < 2:
            raise ValueError(f"strategy.popsize must be >= 2, got {self.strategy.popsize}")
        validate.one_of("ranker", self.ranker, ("2imp", "imp"))
        validate.one_of("restart_rule", self.restart_rule, RESTART_RULES)
        validate.one_of("optimizer", self.optimizer, OPTIMIZERS)
        validate.positive("learning_rate", self.learning_rate)
        validate.positive("epsilon", self.epsilon)

    # ------------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        return self.num_emitters * self.strategy.popsize

    @property
    def grad_batch_size(self) -> int:
        return self.num_emitters * (1 + self.source.num_samples)

    @property
    def needs_transitions(self) -> bool:
        return self.source.needs_transitions

    # ------------------------------------------------------------------ pieces
    def _optax(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return optax.adam(self.learning_rate)
        return optax.sgd(self.learning_rate)

    def _fresh(self, key, thetas, num_coefficients):
        """Optimizer and coefficient-ES states for points ``thetas (ψ, n)``."""
        opt = jax.vmap(self._optax().init)(thetas)
        zeros = jnp.zeros((num_coefficients,), thetas.dtype)
        keys = jax.random.split(key, thetas.shape[0])
        es = jax.vmap(self.strategy.init, in_axes=(0, None))(keys, zeros)
        return opt, es

    def init(self, key, x0) -> ArborescenceState:
        x0 = validate.vector("x0", x0)
        psi, n, k = self.num_emitters, x0.shape[0], 1 + self.measure_dim
        k_fresh, k_source = jax.random.split(key)
        thetas = jnp.broadcast_to(x0, (psi, n)) + jnp.zeros((psi, n), x0.dtype)
        opt, es = self._fresh(k_fresh, thetas, k)
        return ArborescenceState(
            theta=thetas,
            opt=opt,
            es=es,
            jacobian=jnp.zeros((psi, k, n), x0.dtype),
            coefficients=jnp.zeros((psi, self.strategy.popsize, k), x0.dtype),
            source=self.source.init(k_source, x0),
            x0=x0,
            restarts=jnp.zeros((psi,), jnp.int32),
        )

    # ------------------------------------------------------------------ pre-phase
    def ask_grad(self, key, state, archive=None, archive_state=None):
        """θ ``(ψ, n)`` followed by the source's samples ``(ψ S, n)``."""
        samples, source = self.source.ask(key, state.source, state.theta)
        solutions = jnp.concatenate([state.theta, samples.astype(state.theta.dtype)])
        return solutions, state.replace(source=source)

    def tell_grad(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """Store the (normalized) Jacobians at θ; insert θ only."""
        jac, source = self.source.jacobian(key, state.source, state.theta, batch)
        jac = jac.astype(state.theta.dtype)
        if self.normalize:
            jac = jac / (jnp.linalg.norm(jac, axis=2, keepdims=True) + self.epsilon)
        insert = jnp.arange(self.grad_batch_size) < self.num_emitters
        return state.replace(jacobian=jac, source=source), insert

    # ------------------------------------------------------------------ main phase
    def ask(self, key, state, archive=None, archive_state=None):
        """λ branches per instance, θ + Σ_j c_j ∇_j: ``(ψ λ, n)``."""
        keys = jax.random.split(key, self.num_emitters)
        coeffs, es = jax.vmap(self.strategy.ask)(keys, state.es)
        x = branch(state.theta, state.jacobian, coeffs.astype(state.theta.dtype))
        return x, state.replace(es=es, coefficients=coeffs)

    def tell(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """Tell the coefficient ES the branches' ranking, step θ towards the best branches,
        let the gradient source learn from the batch, and restart as ``restart_rule`` says."""
        psi, lam = self.num_emitters, self.strategy.popsize
        solutions, info = batch.solutions, batch.add_info
        fitness = ranking_fitness(
            self.ranker, batch.objectives, info.status, info.value, batch.valid
        )
        fitness = fitness.reshape(psi, lam)
        es = jax.vmap(self.strategy.tell)(state.es, state.coefficients, fitness)
        theta, opt = jax.vmap(self._step)(
            state.theta, state.opt, solutions.reshape(psi, lam, -1), fitness
        )
        restart = jax.vmap(self.strategy.converged)(es)
        if self.restart_rule == "no_improvement":
            restart = restart | ~jnp.any(info.status.reshape(psi, lam) > 0, axis=1)

        k_elite, k_fresh, k_source = jax.random.split(key, 3)
        x0s = sample_parents(k_elite, archive, archive_state, state.x0, psi)
        fresh_opt, fresh_es = self._fresh(k_fresh, x0s, 1 + self.measure_dim)

        def pick(new, old):
            return jnp.where(restart.reshape((psi,) + (1,) * (old.ndim - 1)), new, old)

        source = self.source.observe(k_source, state.source, batch)
        return state.replace(
            theta=pick(x0s, theta),
            opt=jax.tree_util.tree_map(pick, fresh_opt, opt),
            es=jax.tree_util.tree_map(pick, fresh_es, es),
            source=source,
            restarts=state.restarts + restart.astype(jnp.int32),
        )

    def _step(self, theta, opt_state, branches, fitness):
        """One instance's θ update from its ``branches (λ, n)`` and ranking ``fitness (λ,)``."""
        return theta_step(self._optax(), theta, opt_state, branches, fitness)


def branch(thetas: jax.Array, jacobians: jax.Array, coefficients: jax.Array) -> jax.Array:
    """θ_p + Σ_j c_pij J_pj for ``thetas (ψ, n)``, ``jacobians (ψ, 1 + m, n)`` and
    ``coefficients (ψ, λ, 1 + m)``: ``(ψ λ, n)``."""
    x = thetas[:, None, :] + jnp.einsum("plk,pkn->pln", coefficients, jacobians)
    return x.reshape(-1, thetas.shape[1])


def theta_step(optimizer, theta, opt_state, branches, fitness):
    """θ ← optimizer step along Σ w_i θ'_{i:λ} − θ (best ⌊λ/2⌋ branches by ``fitness``,
    highest first, NaN last; weights :func:`parent_weights`). Returns ``(θ, opt_state)``."""
    lam = branches.shape[0]
    w = jnp.asarray(parent_weights(lam), theta.dtype)
    order = rank_order(fitness)[: w.shape[0]]
    step = w @ branches[order] - theta
    updates, opt_state = optimizer.update(-step, opt_state, theta)
    return optax.apply_updates(theta, updates).astype(theta.dtype), opt_state
