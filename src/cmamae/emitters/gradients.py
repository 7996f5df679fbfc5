"""Gradient sources for the gradient-based emitters (CMA-MEGA, ME-ES): exact or ES-estimated.

OpenAI-ES estimator (Salimans et al. 2017, as used by ME-ES, Colas et al. 2020, and by
CMA-MEGA (ES), Tjanaka et al. 2022). Around a point θ ``(n,)``, h = N/2 directions
ε_j ~ N(0, I) give N mirrored samples x_j = θ + σ ε_j, x_{j+h} = θ − σ ε_j (rows 0..h−1,
then h..N−1). For values v ``(N,)`` of any function at the samples (objective, a measure,
novelty), with utilities u = ``centered_ranks(v)`` (or u = v raw),

    ∇̂ = 1/(h σ) Σ_j (u_j − u_{j+h}) ε_j                       (mirrored_gradient)

which is the dqd-rl code's estimator (``_calc_jacobian_from_samples``) and our OpenAI-ES's:
for raw values, twice Salimans et al.'s unbiased 1/(N σ) Σ_i v_i ε_i of the gradient of the
Gaussian-smoothed function, a scale that gradient normalization (CMA-MEGA) and Adam absorb.
ME-ES (Colas et al.'s code, ``divide_gradient_by_noise_std=False``) uses σ ∇̂.
ε_j is recovered from the samples as (x_j − x_{j+h}) / (2σ), so nothing of size N × n is
kept between the pre-phase's ask and its results. Noise comes from
:func:`cmamae.es._common.standard_normal` (a noise table or ``jax.random.normal``).

Centered ranks (``centered_ranks``): rank 0 for the lowest value up to N − 1 for the highest,
divided by N − 1, minus 0.5. Ties get the mean of their ranks (the references use an
arbitrary order for ties): a batch of equal values, e.g. 20-step episodes whose foot-contact
measures all read 0, then gives a zero gradient instead of a random direction. NaN ranks
lowest.

Gradient-source interface (:class:`GradientSource`; the arborescence emitter takes any):
static settings in a frozen dataclass, state in a pytree, all methods pure.

* ``num_samples``: extra solutions per emitter instance the pre-phase evaluates
  (0 for exact gradients; N for the ES estimator).
* ``needs_transitions``: whether ``jacobian`` / ``observe`` want rollout transitions.
* ``init(key, x0) -> state``.
* ``ask(key, state, thetas (ψ, n)) -> (samples (ψ num_samples, n), state)``: rows
  ``[i S, (i + 1) S)`` belong to instance i.
* ``jacobian(key, state, thetas, solutions, objectives, measures, transitions)
  -> (jacobians (ψ, 1 + m, n), state)``: the pre-phase block of the emitter group, i.e.
  ``solutions (ψ (1 + S), n)`` = the ψ points θ first, then the ψ S samples in ``ask``'s
  order; ``objectives (ψ (1 + S),)``, ``measures (ψ (1 + S), m)``, ``transitions`` with the
  same leading rows (None unless ``needs_transitions``). Row 0 of each Jacobian is ∇f, rows
  1..m are ∇m_1..∇m_m, all ascent directions.
* ``observe(key, state, solutions, objectives, measures, transitions) -> state``: the main
  batch's results (a learned critic trains here); ``transitions`` is the whole batch's (all
  emitter groups) when ``needs_transitions``. The default keeps the state.

A source combining estimators (e.g. measure gradients by ES and the objective gradient from a
TD3 critic, CMA-MEGA (TD3, ES)) calls :meth:`ESGradient.jacobian` and replaces row 0.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from cmamae._pytree import pytree_dataclass
from cmamae.es import _common


def centered_ranks(values: jax.Array) -> jax.Array:
    """Centered ranks in [−0.5, 0.5] along the last axis ``(..., N)``; ties share the mean
    rank, NaN ranks lowest. Θ(N²) comparisons (N is a few hundred samples)."""
    v = jnp.where(jnp.isnan(values), -jnp.inf, values)
    below = jnp.sum(v[..., None, :] < v[..., :, None], axis=-1)
    equal = jnp.sum(v[..., None, :] == v[..., :, None], axis=-1) - 1  # others tied with i
    n = values.shape[-1]
    return ((below + 0.5 * equal) / (n - 1) - 0.5).astype(values.dtype)


def mirrored_samples(
    key: jax.Array, noise: jax.Array, thetas: jax.Array, num: int, sigma: float
) -> jax.Array:
    """``num`` (even) mirrored samples around each row of ``thetas (ψ, n)``: ``(ψ num, n)``,
    instance i's at rows ``[i num, (i + 1) num)``, ``+σ ε_j`` then ``−σ ε_j``."""
    psi, n = thetas.shape
    h = num // 2
    eps = _common.standard_normal(key, noise, (psi * h, n), thetas.dtype).reshape(psi, h, n)
    mirror = jnp.array([1, -1], thetas.dtype)[None, :, None, None]
    x = thetas[:, None, None, :] + sigma * (mirror * eps[:, None])
    return x.reshape(psi * num, n)


def mirrored_gradient(samples: jax.Array, utilities: jax.Array, sigma: float) -> jax.Array:
    """∇̂ = 1/(h σ) Σ_j (u_j − u_{j+h}) ε_j for one instance's mirrored ``samples (N, n)`` and
    ``utilities (k, N)`` (k functions at once); returns ``(k, n)``."""
    h = samples.shape[0] // 2
    two_sigma_eps = samples[:h] - samples[h:]  # 2σ ε_j
    diff = utilities[:, :h] - utilities[:, h:]
    return diff @ two_sigma_eps / (2 * sigma * sigma * h)


@pytree_dataclass
class NoiseState:
    """The noise generator of an ES gradient source (``(S,)`` table or ``(0,)``)."""

    noise: jax.Array


@dataclasses.dataclass(frozen=True)
class GradientSource(abc.ABC):
    """Where a gradient-based emitter gets ∇f and ∇m_j at its points θ (module docstring)."""

    @property
    @abc.abstractmethod
    def num_samples(self) -> int:
        """Extra pre-phase solutions per emitter instance."""

    @property
    def needs_transitions(self) -> bool:
        """Whether ``jacobian`` needs the rollouts' transitions (a TD3 critic learns from
        them); False here."""
        return False

    @abc.abstractmethod
    def init(self, key: jax.Array, x0: jax.Array) -> Any:
        """The source's state (noise table, learner, ...) for solutions like ``x0`` ``(n,)``."""

    def ask(self, key, state, thetas):
        """``(ψ num_samples, n)`` solutions to evaluate besides the points θ."""
        del key
        return jnp.zeros((0, thetas.shape[1]), thetas.dtype), state

    @abc.abstractmethod
    def jacobian(self, key, state, thetas, solutions, objectives, measures, transitions):
        """``(ψ, 1 + m, n)`` Jacobians at ``thetas`` and the new state."""

    def observe(self, key, state, solutions, objectives, measures, transitions):
        """Learn from the main batch (default: nothing)."""
        del key, solutions, objectives, measures, transitions
        return state


def _split_block(psi: int, objectives, measures):
    """Sample rows of a pre-phase block (θ rows first): ``(ψ, S)`` values, ``(ψ, S, m)``."""
    f = objectives[psi:].reshape(psi, -1)
    m = measures[psi:].reshape(psi, f.shape[1], -1)
    return f, m


@dataclasses.dataclass(frozen=True)
class ESGradient(GradientSource):
    """OpenAI-ES estimates of ∇f and every ∇m_j from ``samples`` mirrored samples.

    Attributes:
        samples: N, even; 100 in CMA-MEGA (ES) (dqd-rl ``sample_batch_size``).
        sigma: σ of the samples; 0.02 in CMA-MEGA (ES) (dqd-rl ``sample_sigma``).
        rank_norm: centered ranks (True, dqd-rl ``sample_rank_norm``) or raw values.
        noise: "table" or "normal" (:mod:`cmamae.es._common`).
    """

    samples: int = 100
    sigma: float = 0.02
    rank_norm: bool = True
    noise: str = "table"

    def __post_init__(self):
        if (
            isinstance(self.samples, bool)
            or not isinstance(self.samples, int)
            or self.samples < 2
            or self.samples % 2
        ):
            raise ValueError(f"samples must be an even integer >= 2, got {self.samples!r}")
        _common.check_positive("sigma", self.sigma)
        _common.check_noise(self.noise)

    @property
    def num_samples(self) -> int:
        """``samples`` mirrored perturbations per point θ."""
        return self.samples

    def init(self, key, x0) -> NoiseState:
        x0 = jnp.asarray(x0)
        return NoiseState(_common.init_noise(key, self.noise, x0.shape[0], x0.dtype))

    def ask(self, key, state, thetas):
        return mirrored_samples(key, state.noise, thetas, self.samples, self.sigma), state

    def jacobian(self, key, state, thetas, solutions, objectives, measures, transitions=None):
        del key, transitions
        psi, n = thetas.shape
        f, m = _split_block(psi, objectives, measures)
        values = jnp.concatenate([f[:, None, :], jnp.moveaxis(m, 2, 1)], axis=1)  # (ψ, 1+m, S)
        util = centered_ranks(values) if self.rank_norm else values
        samples = solutions[psi:].reshape(psi, self.samples, n)
        return jax.vmap(lambda x, u: mirrored_gradient(x, u, self.sigma))(samples, util), state


@pytree_dataclass
class EmptyState:
    """Stateless source."""


@dataclasses.dataclass(frozen=True)
class ExactGradient(GradientSource):
    """Exact Jacobians of a differentiable JAX task by reverse-mode autodiff.

    Attributes:
        evaluate: ``evaluate(solutions (b, n), key) -> (objectives (b,), measures (b, m))``,
            e.g. ``task.evaluate`` of a benchmark task (hashable: a task's functions are).
    """

    evaluate: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

    @property
    def num_samples(self) -> int:
        return 0

    def init(self, key, x0) -> EmptyState:
        return EmptyState()

    def jacobian(self, key, state, thetas, solutions, objectives, measures, transitions=None):
        del solutions, objectives, measures, transitions

        def values(x):
            f, m = self.evaluate(x[None], key)
            return jnp.concatenate([f.reshape(1), m.reshape(-1)])

        return jax.vmap(jax.jacrev(values))(thetas), state
