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
:func:`cmamae.es.noise.standard_normal` (a noise table or ``jax.random.normal``).

Centered ranks: :func:`cmamae.es.ranking.centered_ranks`, the one transform OpenAI-ES uses
too (distinct ranks as the references give them, ties not averaged; NaN lowest).

Gradient-source interface (:class:`GradientSource`; the arborescence emitter takes any):
static settings in a frozen dataclass, state in a pytree, all methods pure.

* ``num_samples``: extra solutions per emitter instance the pre-phase evaluates
  (0 for exact gradients; N for the ES estimator).
* ``needs_transitions``: whether ``jacobian`` / ``observe`` want rollout transitions.
* ``init(key, x0) -> state``.
* ``ask(key, state, thetas (ψ, n)) -> (samples (ψ num_samples, n), state)``: rows
  ``[i S, (i + 1) S)`` belong to instance i.
* ``jacobian(key, state, thetas, batch) -> (jacobians (ψ, 1 + m, n), state)``: ``batch`` (an
  :class:`~cmamae.emitters.base.EvaluatedBatch`) is the pre-phase block of the emitter group,
  ψ (1 + S) rows: the ψ points θ first, then the ψ S samples in ``ask``'s order, with
  ``transitions`` (None unless ``needs_transitions``). Row 0 of each Jacobian is ∇f, rows
  1..m are ∇m_1..∇m_m, all ascent directions.
* ``observe(key, state, batch) -> state``: the main batch's results (a learned critic trains
  here); its ``transitions`` are the whole batch's (all emitter groups) when
  ``needs_transitions``. The default keeps the state.

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

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import EvaluatedBatch
from cmamae.es.noise import check_noise, init_noise, standard_normal
from cmamae.es.ranking import centered_ranks


def mirrored_samples(
    key: jax.Array, noise: jax.Array, thetas: jax.Array, num: int, sigma: float
) -> jax.Array:
    """``num`` (even) mirrored samples around each row of ``thetas (ψ, n)``: ``(ψ num, n)``,
    instance i's at rows ``[i num, (i + 1) num)``, ``+σ ε_j`` then ``−σ ε_j``."""
    psi, n = thetas.shape
    h = num // 2
    eps = standard_normal(key, noise, (psi * h, n), thetas.dtype).reshape(psi, h, n)
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
    def jacobian(self, key, state, thetas, batch: EvaluatedBatch):
        """``(ψ, 1 + m, n)`` Jacobians at ``thetas`` from the pre-phase ``batch`` and the new
        state."""

    def observe(self, key, state, batch: EvaluatedBatch):
        """Learn from the main ``batch`` (default: nothing)."""
        del key, batch
        return state


def _split_block(psi: int, batch: EvaluatedBatch):
    """Sample rows of a pre-phase block (θ rows first): ``(ψ, S)`` values, ``(ψ, S, m)``."""
    f = batch.objectives[psi:].reshape(psi, -1)
    m = batch.measures[psi:].reshape(psi, f.shape[1], -1)
    return f, m


@dataclasses.dataclass(frozen=True)
class ESGradient(GradientSource):
    """OpenAI-ES estimates of ∇f and every ∇m_j from ``samples`` mirrored samples.

    Attributes:
        samples: N, even; 100 in CMA-MEGA (ES) (dqd-rl ``sample_batch_size``).
        sigma: σ of the samples; 0.02 in CMA-MEGA (ES) (dqd-rl ``sample_sigma``).
        rank_norm: centered ranks (True, dqd-rl ``sample_rank_norm``) or raw values.
        noise: "table" or "normal" (:mod:`cmamae.es.noise`).
    """

    samples: int = 100
    sigma: float = 0.02
    rank_norm: bool = True
    noise: str = "table"

    def __post_init__(self):
        validate.integer("samples", self.samples, 2)
        if self.samples % 2:
            raise ValueError(f"samples must be even (mirrored pairs), got {self.samples!r}")
        validate.positive("sigma", self.sigma)
        check_noise(self.noise)

    @property
    def num_samples(self) -> int:
        """``samples`` mirrored perturbations per point θ."""
        return self.samples

    def init(self, key, x0) -> NoiseState:
        x0 = jnp.asarray(x0)
        return NoiseState(init_noise(key, self.noise, x0.shape[0], x0.dtype))

    def ask(self, key, state, thetas):
        return mirrored_samples(key, state.noise, thetas, self.samples, self.sigma), state

    def jacobian(self, key, state, thetas, batch: EvaluatedBatch):
        """ES estimates from the mirrored samples' objectives and measures."""
        del key
        psi, n = thetas.shape
        f, m = _split_block(psi, batch)
        values = jnp.concatenate([f[:, None, :], jnp.moveaxis(m, 2, 1)], axis=1)  # (ψ, 1+m, S)
        util = centered_ranks(values) if self.rank_norm else values
        samples = batch.solutions[psi:].reshape(psi, self.samples, n)
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

    def jacobian(self, key, state, thetas, batch: EvaluatedBatch):
        """Reverse-mode Jacobians of ``evaluate`` at ``thetas`` (``batch`` is not used)."""
        del batch

        def values(x):
            f, m = self.evaluate(x[None], key)
            return jnp.concatenate([f.reshape(1), m.reshape(-1)])

        return jax.vmap(jax.jacrev(values))(thetas), state
