"""OpenAI-ES: the natural-evolution-strategy gradient estimator of Salimans et al. (maximization).

Salimans, Ho, Chen, Sidor & Sutskever (2017), "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning", arXiv:1703.03864; settings of the CMA-MAE scaling paper (Tjanaka et al.
2022): Adam with learning rate 0.01 and L2 coefficient 0.005, σ = σ₀ fixed.

Each iteration samples h = λ/2 directions ε_j ~ N(0, I) and evaluates the mirrored pairs
x_j = θ + σ ε_j, x_{j+h} = θ - σ ε_j (rows 0..h-1, then h..λ-1). Fitness values are replaced by
centered ranks: the worst gets -0.5, the best +0.5, evenly spaced (u_i = rank_i / (λ - 1) - 0.5,
NaN ranks last). The search-gradient estimate is, as in pyribs' OpenAIEvolutionStrategy,

    g = 1/(h σ) Σ_j (u_j - u_{j+h}) ε_j  =  2/(λ σ) Σ_i u_i ε_i,

twice Salimans et al.'s 1/(λ σ) Σ_i u_i ε_i normalization; with Adam the scale of g matters only
relative to the L2 term (and Adam's ε), so this keeps pyribs' (and so the paper's) balance. The
mean θ takes one optax Adam step on the descent direction -g + l2_coeff · θ: like pyribs' AdamOpt,
``l2_coeff`` is classic L2 regularization added to the gradient before Adam's moment estimates
(the "l2coeff" of Salimans et al.'s code), not decoupled AdamW weight decay. Adam itself is
optax's (Kingma & Ba's m̂ / (sqrt(v̂) + ε)); pyribs' AdamOpt adds ε to sqrt(v) before the bias
correction instead, i.e. uses ε / sqrt(1 - β₂^t): the steps differ by a relative ~ε / sqrt(v̂)
(below 1e-6 on the tests' problems, and vanishing as v̂ grows).

``tell`` recomputes ε_j = (x_j - x_{j+h}) / (2σ) from the solutions (in one pass over the
pairs, accumulating g directly), so the state keeps no λ × n samples.
Cost: Θ(n) per sample; memory Θ(n) (mean and two Adam moments) plus the noise table
of :mod:`cmamae.es._common`.

Stopping test (``converged``), as pyribs' check_stop for OpenAI-ES: the last update moved the mean
by less than 1e-9 of its norm (‖Δθ‖ / ‖θ‖ < 1e-9), or the last batch's fitness is flat (best -
worst < 1e-12 over its finite values); we also stop when the mean is no longer finite.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from cmamae._pytree import pytree_dataclass
from cmamae.es import _common
from cmamae.es.base import ESParams, EvolutionStrategy, param_field

UPDATE_RATIO_STOP = 1e-9
FLAT_FITNESS_STOP = 1e-12


@pytree_dataclass
class OpenAIESParams(ESParams):
    """Hyperparameters as data of OpenAI-ES (:class:`cmamae.es.base.ESParams`); bounds as
    :class:`OpenAIES` checks them.

    Attributes:
        sigma0: σ > 0, fixed for the whole run.
        learning_rate: Adam's step size, > 0.
        l2_coeff: L2 coefficient added to the descent gradient, >= 0.
        beta1, beta2: Adam's moment decay rates, in [0, 1).
        epsilon: Adam's ε, > 0.
    """

    learning_rate: float = param_field(0.0)
    l2_coeff: float = param_field(0.0, closed=True)
    beta1: float = param_field(0.0, 1.0, closed=True)
    beta2: float = param_field(0.0, 1.0, closed=True)
    epsilon: float = param_field(0.0)


@pytree_dataclass
class OpenAIESState:
    """State of one OpenAI-ES instance (n = solution dimension).

    Attributes:
        mean: θ, the distribution mean, ``(n,)``.
        sigma: σ, the fixed step size σ₀, ``()``.
        opt_state: optax Adam state (step count, first and second moments ``(n,)``).
        noise: the noise table (see :func:`cmamae.es._common.init_noise`).
        last_update_ratio: ‖Δθ‖ / ‖θ‖ of the last ``tell``, ``()`` (inf before the first).
        fitness_range: best minus worst finite fitness of the last batch, ``()`` (inf before
            the first ``tell``, or when fewer than two values were finite).
    """

    mean: jax.Array
    sigma: jax.Array
    opt_state: Any
    noise: jax.Array
    last_update_ratio: jax.Array
    fitness_range: jax.Array


@dataclasses.dataclass(frozen=True)
class OpenAIES(EvolutionStrategy):
    """OpenAI-ES (Salimans et al. 2017) with mirrored sampling and Adam, maximizing.

    Attributes:
        popsize: λ, even (mirrored pairs).
        sigma0: σ, fixed for the whole run.
        noise: "auto", "shared", "table" or "normal" (see :mod:`cmamae.es._common`).
        learning_rate: Adam's step size (0.01 in the CMA-MAE scaling paper).
        l2_coeff: L2 coefficient added to the descent gradient (0.005 in the paper); 0 disables.
        beta1, beta2, epsilon: Adam's moment decay rates and ε (Kingma & Ba defaults).

    All but ``popsize`` and ``noise`` are also data (:class:`OpenAIESParams`, ``params`` of
    ``init`` and ``tell``).
    """

    learning_rate: float = 0.01
    l2_coeff: float = 0.005
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    name: ClassVar[str] = "openai-es"
    params_type: ClassVar[type[ESParams]] = OpenAIESParams

    def __post_init__(self):
        super().__post_init__()  # also checks the float settings (OpenAIESParams' bounds)
        if self.popsize % 2 != 0:
            raise ValueError(
                f"popsize must be even for OpenAI-ES's mirrored sampling, got {self.popsize}"
            )

    def optimizer(self, params: OpenAIESParams | None = None) -> optax.GradientTransformation:
        """The optax Adam transformation that moves the mean (applied to descent gradients),
        with the rates of ``params`` (None: :meth:`default_params`)."""
        p = self.resolve_params(params)
        return optax.adam(p.learning_rate, b1=p.beta1, b2=p.beta2, eps=p.epsilon)

    def init(
        self, key: jax.Array, x0: jax.Array, params: OpenAIESParams | None = None
    ) -> OpenAIESState:
        """θ = x0, σ = σ₀ (``params.sigma0``), fresh Adam moments."""
        params = self.resolve_params(params)
        x0 = _common.check_x0(x0)
        n = x0.shape[0]
        dtype = x0.dtype
        return OpenAIESState(
            mean=x0,
            sigma=jnp.asarray(params.sigma0, dtype),
            opt_state=self.optimizer(params).init(x0),
            noise=_common.init_noise(key, self.resolved_noise(n), n, dtype),
            last_update_ratio=jnp.asarray(jnp.inf, dtype),
            fitness_range=jnp.asarray(jnp.inf, dtype),
        )

    def ask(
        self, key: jax.Array, state: OpenAIESState, params: OpenAIESParams | None = None
    ) -> tuple[jax.Array, OpenAIESState]:
        """Mirrored pairs θ ± σ ε_j: rows j and j + λ/2 share ε_j; shape ``(popsize, n)``."""
        self.resolve_params(params)  # checked only: sampling reads σ from the state
        n = state.mean.shape[0]
        dtype = state.mean.dtype
        eps = self.standard_normal(key, state.noise, (self.popsize // 2, n), dtype)
        # [θ + σ ε; θ - σ ε] as one broadcast (a concatenate would make XLA's CPU loop scalar)
        mirror = jnp.array([1, -1], dtype)[:, None, None]
        x = state.mean + state.sigma * (mirror * eps[None])
        return x.reshape(self.popsize, n), state

    def tell(
        self,
        state: OpenAIESState,
        solutions: jax.Array,
        fitness: jax.Array,
        num_parents=None,
        params: OpenAIESParams | None = None,
    ) -> OpenAIESState:
        """One Adam step along the centered-rank search gradient; higher fitness is better.
        ``params``: reads ``learning_rate``, ``l2_coeff``, ``beta1``, ``beta2``, ``epsilon``.

        ``num_parents`` must be None: the gradient weighs all λ solutions by centered rank,
        so there are no parents to select (pyribs' OpenAI-ES ignores its ``num_parents``)."""
        if num_parents is not None:
            raise ValueError(
                "num_parents must be None for OpenAI-ES: its gradient uses the centered ranks "
                f"of all popsize solutions, not a selection of parents; got {num_parents!r}"
            )
        params = self.resolve_params(params)
        lam = self.popsize
        h = lam // 2
        n = state.mean.shape[0]
        dtype = state.mean.dtype
        solutions, fitness = _common.check_tell_args(lam, n, solutions, fitness)
        solutions = solutions.astype(dtype)

        util = _common.centered_ranks(fitness, dtype)  # worst -0.5 ... best +0.5, NaN worst
        diff = util[:h] - util[h:]  # u_j - u_{j+h}

        def pair(j, acc):  # Σ_j (u_j - u_{j+h}) 2σ ε_j, ε_j = (x_j - x_{j+h}) / (2σ); one pass
            x_j, x_jh = _common.row(solutions, j), _common.row(solutions, j + h)
            return acc + diff[j] * (x_j - x_jh)

        total = _common.row_loop(h, pair, jnp.zeros_like(state.mean))
        grad = total / (2 * state.sigma * h * state.sigma)  # ascent estimate g

        descent = -grad + params.l2_coeff * state.mean  # pyribs: -g + l2_coeff · θ
        updates, opt_state = self.optimizer(params).update(descent, state.opt_state, state.mean)
        mean = optax.apply_updates(state.mean, updates).astype(dtype)
        ratio = jnp.linalg.norm(mean - state.mean) / jnp.linalg.norm(mean)
        return state.replace(
            mean=mean,
            opt_state=opt_state,
            last_update_ratio=ratio.astype(dtype),
            fitness_range=_common.fitness_range(fitness).astype(dtype),
        )

    def converged(self, state: OpenAIESState) -> jax.Array:
        """pyribs' check_stop: ‖Δθ‖/‖θ‖ < 1e-9 or flat fitness (< 1e-12); also mean non-finite."""
        return (
            (state.last_update_ratio < UPDATE_RATIO_STOP)
            | (state.fitness_range < FLAT_FITNESS_STOP)
            | ~jnp.all(jnp.isfinite(state.mean))
        )
