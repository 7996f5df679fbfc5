"""LM-MA-ES: the Limited-Memory Matrix Adaptation Evolution Strategy (maximization).

Loshchilov, Glasmachers & Beyer (2019), "Large Scale Black-box Optimization by Limited-Memory
Matrix Adaptation", IEEE Trans. Evolutionary Computation 23(2); arXiv:1705.06693, Algorithm 1.
Comments of the form "Alg. 1 line N" point at the lines of that algorithm.

The sampling transform is a product of k rank-one-updated identity matrices built from k
direction vectors m_1..m_k (evolution paths with learning rates spread over four orders of
magnitude, c_c,i = λ / (4^(i-1) n)):

    z ~ N(0, I),  d = F_k ... F_1 z,  F_j = (1 - c_d,j) I + c_d,j m_j m_jᵀ,  x = y + σ d,

with c_d,j = 1 / (1.5^(j-1) n). During the first k iterations only the first t vectors are
active (Alg. 1 line 7: j = 1..min(t, k)); shapes stay static and a mask turns the others into
identities. The step size follows cumulative step-size adaptation with c_σ = 2λ/n. Samples are
ranked and the μ = ⌊λ/2⌋ best are recombined with the paper's weights
w_i ∝ ln(μ + 1/2) - ln i, sorted by rank (evosax 0.3.2 pairs these weights with unsorted samples,
REFERENCE.md; we do not).

Sampling runs in coefficient space (:meth:`LMMAES.transform`): the k sequential rank-one steps
keep d in span{z, m_1..m_k}, so with P = Z Mᵀ and G = M Mᵀ they become an O(λ k²) recursion on
coefficients, and D = α Z + B M. Two matrix products (Z Mᵀ, B M) replace the k passes over the
λ × n batch that the direct form makes; the result is the same up to rounding. The Gram matrix
G is kept in the state and updated by ``tell`` in O(k²) from the rank-one change of the vectors
(below), rather than recomputed in every ``ask`` (a third k × k × n product: at n = 20,000,
λ = k = 40 it made ask ~1/3 slower). Its rounding is that of the vectors' own running update.

``tell`` does not need the z of ``ask``: the state holds no λ × n sample matrix. It needs only
Σ w_i z_{i:λ}, and as the transform is linear that is F⁻¹ Σ w_i d_{i:λ}: one pass over the μ best
solutions gives Σ w_i d_{i:λ} = Σ w_i (x_{i:λ} - y) / σ, and that single vector is inverted factor
by factor (each F_j⁻¹ by Sherman-Morrison): F_j⁻¹ d = (d - c_d,j m_j (m_jᵀ d) /
(1 - c_d,j + c_d,j ‖m_j‖²)) / (1 - c_d,j), again on coefficients with G (one product M d, an
O(k²) recursion, then z = α d + βᵀ M). This is exact in exact arithmetic; in floating point,
d carries the rounding error of x - y, relative size eps·‖y‖/(σ‖d‖) (as in pycma, which also
recomputes from the solutions). With M' = diag(c) M + v zᵀ (Alg. 1 lines 11-12, z = Σ w_i z_i),
G' = (c cᵀ) ∘ G + (c ∘ q) vᵀ + v (c ∘ q)ᵀ + ‖z‖² v vᵀ, where q = M z = α M d + G β is known
from the inverse.

Cost: Θ(k n) time per sample (ask; tell is Θ(μ n + k n) per generation), Θ(k n) memory for the
state (plus the noise table of :mod:`cmamae.es._common`); ``ask`` and ``tell`` also hold Θ(λ n)
temporaries (the batch itself) and Θ(λ k + k²) coefficients, which is Θ(k n) for the paper's
k ≈ λ. Defaults: k = 4 + ⌊3 ln n⌋ as in the paper (the CMA-MAE scaling paper uses k = λ = 40).
The learning rates need λ < n (c_σ = 2λ/n < 2); ``init`` raises otherwise, as pyribs does for
λ > n.

Stopping test (``converged``), as pyribs' LMMAEvolutionStrategy.check_stop: σ < 1e-12, or the
last batch's fitness is flat (best - worst < 1e-12 over its finite values); we also stop when σ
or the mean is no longer finite.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.es import _common, _selection
from cmamae.es.base import ESParams, EvolutionStrategy

SIGMA_STOP = 1e-12
FLAT_FITNESS_STOP = 1e-12


@pytree_dataclass
class LMMAESState:
    """State of one LM-MA-ES instance (shapes for solution dimension n, k vectors).

    Attributes:
        mean: y, the distribution mean, ``(n,)``.
        sigma: σ, the step size, ``()``.
        p_sigma: p_σ, the evolution path of step-size adaptation, ``(n,)``.
        vectors: m_1..m_k, the direction vectors, ``(k, n)``.
        gram: G = M Mᵀ, their inner products, ``(k, k)`` (kept up to date by ``tell``).
        t: iterations told so far, ``()`` int32 (min(t, k) vectors are active).
        noise: the noise table (see :func:`cmamae.es._common.init_noise`).
        fitness_range: best minus worst finite fitness of the last batch, ``()`` (inf before
            the first ``tell``, or when fewer than two values were finite).
    """

    mean: jax.Array
    sigma: jax.Array
    p_sigma: jax.Array
    vectors: jax.Array
    gram: jax.Array
    t: jax.Array
    noise: jax.Array
    fitness_range: jax.Array


def default_k(n: int) -> int:
    """The paper's number of direction vectors, 4 + ⌊3 ln n⌋ (same as its default λ)."""
    return 4 + int(math.floor(3 * math.log(n)))


@functools.lru_cache(maxsize=64)
def _lm_parent_table(popsize: int, n: int, k: int) -> _selection.ParentTable:
    """:meth:`LMMAES.parent_table` for λ = ``popsize``, dimension ``n`` and k vectors."""
    c_sigma = 2.0 * popsize / n
    c_c = popsize / (4.0 ** np.arange(k, dtype=np.float64) * n)

    def values(mu_w: float) -> dict[str, float | np.ndarray]:
        return dict(
            path_coef=math.sqrt(mu_w * c_sigma * (2.0 - c_sigma)),
            vec_coef=np.sqrt(mu_w * c_c * (2.0 - c_c)),
        )

    return _selection.parent_table(popsize, values)


@dataclasses.dataclass(frozen=True)
class LMMAES(EvolutionStrategy):
    """LM-MA-ES (Loshchilov, Glasmachers & Beyer 2019), maximizing.

    Attributes:
        popsize: λ; must be smaller than the solution dimension n.
        sigma0: σ₀.
        noise: "auto", "shared", "table" or "normal" (see :mod:`cmamae.es._common`).
        k: number of direction vectors (the paper's m); None means 4 + ⌊3 ln n⌋.

    ``sigma0`` is also data (:class:`cmamae.es.base.ESParams`, ``params`` of ``init``); the
    learning rates c_σ, c_d, c_c and the weights follow from λ, n and k and stay derived.
    """

    k: int | None = None

    name: ClassVar[str] = "lm-ma-es"
    weighted_recombination: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if self.k is not None:
            validate.integer("k", self.k, expected="None or an integer >= 1")

    # ------------------------------------------------------------------ constants
    def num_vectors(self, n: int) -> int:
        """k for solution dimension ``n``."""
        return default_k(n) if self.k is None else int(self.k)

    def _constants(self, n: int, dtype):
        """Alg. 1 line 1: μ, w_i, μ_w, c_σ, c_d,i, c_c,i (static NumPy values cast to dtype)."""
        lam = self.popsize
        mu = lam // 2
        w = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))  # Alg. 1 line 1
        w = w / w.sum()
        mu_w = 1.0 / float(np.sum(w**2))  # Alg. 1 line 1: μ_w = 1 / Σ w_i²
        c_sigma = 2.0 * lam / n  # Alg. 1 line 1: c_σ = 2λ/n
        i = np.arange(self.num_vectors(n), dtype=np.float64)  # i - 1 = 0..k-1
        c_d = 1.0 / (1.5**i * n)  # Alg. 1 line 1: c_d,i = 1 / (1.5^(i-1) n)
        c_c = lam / (4.0**i * n)  # Alg. 1 line 1: c_c,i = λ / (4^(i-1) n)
        return dict(
            mu=mu,
            weights=jnp.asarray(w, dtype),
            mu_w=mu_w,
            c_sigma=c_sigma,
            path_coef=math.sqrt(mu_w * c_sigma * (2.0 - c_sigma)),
            c_d=jnp.asarray(c_d, dtype),
            c_c=jnp.asarray(c_c, dtype),
            vec_coef=jnp.asarray(np.sqrt(mu_w * c_c * (2.0 - c_c)), dtype),
        )

    def parent_table(self, n: int) -> _selection.ParentTable:
        """Weights per number of parents m (selection "filter") in dimension ``n``, with
        μ_w = μ_eff of those weights and the two coefficients built from it (Alg. 1 lines
        10-12); c_σ, c_d and c_c depend on λ only, as in pyribs."""
        return _lm_parent_table(self.popsize, int(n), self.num_vectors(n))

    def _factors(self, state: LMMAESState):
        """(a_j, b_j) with F_j = a_j I + b_j m_j m_jᵀ; identity (1, 0) for inactive j >= t."""
        n = state.mean.shape[0]
        c_d = self._constants(n, state.mean.dtype)["c_d"]
        active = jnp.arange(c_d.shape[0]) < state.t  # Alg. 1 line 7: j <= min(t, k)
        a = jnp.where(active, 1 - c_d, 1).astype(state.mean.dtype)
        b = jnp.where(active, c_d, 0).astype(state.mean.dtype)
        return a, b

    # ------------------------------------------------------------------ transforms
    def transform(self, state: LMMAESState, z: jax.Array) -> jax.Array:
        """d = F_k ⋯ F_1 z for rows z ``(m, n)`` → ``(m, n)`` (Alg. 1 lines 6-8); O(k n) a row.

        The k sequential rank-one steps of line 8 keep d in span{z, m_1..m_k}, so they run on
        coefficients: with d = α z + Σ_l β_l m_l, p = M z and G = M Mᵀ, step j is
        s = m_jᵀ d = α p_j + Σ_l β_l G_lj, then α ← a_j α, β ← a_j β + b_j s e_j. Two matrix
        products with M (P = Z Mᵀ, then D = α Z + B M) and one for G replace k passes over the
        (m, n) batch; the recursion itself is O(m k²).
        """
        a, b = self._factors(state)
        M = state.vectors
        P = z @ M.T  # p_l = m_lᵀ z, (m, k)
        G = state.gram  # M Mᵀ, (k, k)
        k = M.shape[0]

        def step(carry, j):
            alpha, B = carry
            s = alpha * P[:, j] + B @ G[:, j]  # m_jᵀ d
            # Alg. 1 line 8: d ← (1 - c_d,j) d + c_d,j m_j (m_jᵀ d), on the coefficients
            B = a[j] * B + (b[j] * s)[:, None] * (jnp.arange(k) == j)
            return (a[j] * alpha, B), None

        init = (jnp.ones((), z.dtype), jnp.zeros(P.shape, z.dtype))
        (alpha, B), _ = jax.lax.scan(step, init, jnp.arange(k))
        return alpha * z + B @ M

    def inverse_transform(self, state: LMMAESState, d: jax.Array) -> jax.Array:
        """z = F_1⁻¹ ⋯ F_k⁻¹ d for rows d ``(m, n)``, each factor by Sherman-Morrison; O(k n)."""
        return self._inverse(state, d)[0]

    def _inverse(self, state: LMMAESState, d: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:meth:`inverse_transform` on coefficients, and Q = Z Mᵀ of its result ``(m, k)``.

        z = α d + Σ_l β_l m_l throughout; step j (F_k⁻¹ first) needs s = m_jᵀ z = α p_j +
        Σ_l β_l G_lj with P = D Mᵀ, then z ← (z - γ_j s m_j) / a_j, γ_j = b_j / (a_j + b_j
        G_jj) ((a I + b m mᵀ)⁻¹ = (I - b m mᵀ / (a + b ‖m‖²)) / a).
        """
        a, b = self._factors(state)
        M, G = state.vectors, state.gram
        P = d @ M.T  # (m, k)
        k = M.shape[0]
        gamma = b / (a + b * jnp.diagonal(G))

        def step(carry, j):
            alpha, B = carry
            s = alpha * P[:, j] + B @ G[:, j]  # m_jᵀ z
            B = (B - (gamma[j] * s)[:, None] * (jnp.arange(k) == j)) / a[j]
            return (alpha / a[j], B), None

        init = (jnp.ones((), d.dtype), jnp.zeros(P.shape, d.dtype))
        (alpha, B), _ = jax.lax.scan(step, init, jnp.arange(k - 1, -1, -1))
        return alpha * d + B @ M, alpha * P + B @ G

    # ------------------------------------------------------------------ interface
    def init(self, key: jax.Array, x0: jax.Array, params: ESParams | None = None) -> LMMAESState:
        """Alg. 1 line 2: t = 0, y = x0, σ = σ₀ (``params.sigma0``), p_σ = 0, m_i = 0."""
        params = self.resolve_params(params)
        x0 = _common.check_x0(x0)
        n = x0.shape[0]
        if self.popsize >= n:
            raise ValueError(
                f"popsize must be smaller than the solution dimension n = {n} for LM-MA-ES "
                f"(its c_σ = 2·popsize/n must be < 2), got popsize={self.popsize}"
            )
        dtype = x0.dtype
        k = self.num_vectors(n)
        return LMMAESState(
            mean=x0,
            sigma=jnp.asarray(params.sigma0, dtype),
            p_sigma=jnp.zeros((n,), dtype),
            vectors=jnp.zeros((k, n), dtype),
            gram=jnp.zeros((k, k), dtype),
            t=jnp.asarray(0, jnp.int32),
            noise=_common.init_noise(key, self.resolved_noise(n), n, dtype),
            fitness_range=jnp.asarray(jnp.inf, dtype),
        )

    def ask(
        self, key: jax.Array, state: LMMAESState, params: ESParams | None = None
    ) -> tuple[jax.Array, LMMAESState]:
        """λ solutions x_i = y + σ d_i, shape ``(popsize, n)`` (Alg. 1 lines 4-9)."""
        self.resolve_params(params)  # checked only: sampling reads σ from the state
        n = state.mean.shape[0]
        dtype = state.mean.dtype
        z = self.standard_normal(key, state.noise, (self.popsize, n), dtype)  # line 5
        d = self.transform(state, z)  # Alg. 1 lines 6-8
        return state.mean[None, :] + state.sigma * d, state  # Alg. 1 line 9: y + σ d

    def tell(
        self,
        state: LMMAESState,
        solutions: jax.Array,
        fitness: jax.Array,
        num_parents=None,
        params: ESParams | None = None,
    ) -> LMMAESState:
        """Alg. 1 lines 10-15 from the ranked solutions; higher fitness is better.
        ``num_parents``: None recombines the ⌊λ/2⌋ best; an int32 m (pyribs' "filter") the m
        best with weights and μ_w for m (base class)."""
        n = state.mean.shape[0]
        dtype = state.mean.dtype
        self.resolve_params(params)  # checked only: no learning rate is a setting
        solutions, fitness = _common.check_tell_args(self.popsize, n, solutions, fitness)
        solutions = solutions.astype(dtype)
        c = self._constants(n, dtype)
        mu, w = c["mu"], c["weights"]
        if num_parents is not None:
            num_parents = _selection.check_num_parents(num_parents, self.popsize)
            w, row = self.parent_table(n).row(num_parents, dtype)
            mu, c = self.popsize, dict(c, path_coef=row["path_coef"], vec_coef=row["vec_coef"])

        order = _common.rank_order(fitness)  # best first, NaN last

        def recombine(i, acc):  # σ Σ w_i d_{i:λ} = Σ w_i (x_{i:λ} - y): one pass, μ rows
            return acc + w[i] * (_common.row(solutions, order[i]) - state.mean)

        step = _common.row_loop(mu, recombine, jnp.zeros_like(state.mean))
        d_w = step / state.sigma  # Σ w_i d_{i:λ}
        # Σ w_i z_{i:λ} = F⁻¹ Σ w_i d_{i:λ}: the transform is linear, so one vector is inverted.
        z_w, q = self._inverse(state, d_w[None, :])  # q = M z_w
        z_w, q = z_w[0], q[0]

        c_sigma = c["c_sigma"]
        # Alg. 1 line 10: p_σ ← (1 - c_σ) p_σ + sqrt(μ_w c_σ (2 - c_σ)) Σ w_i z_{i:λ}
        p_sigma = (1 - c_sigma) * state.p_sigma + c["path_coef"] * z_w
        # Alg. 1 lines 11-12: m_i ← (1 - c_c,i) m_i + sqrt(μ_w c_c,i (2 - c_c,i)) Σ w_j z_{j:λ}
        keep, v = 1 - c["c_c"], c["vec_coef"]
        vectors = keep[:, None] * state.vectors + v[:, None] * z_w[None]
        # G' = M' M'ᵀ from M' = diag(keep) M + v z_wᵀ (module docstring)
        cq = keep * q
        gram = (
            keep[:, None] * keep[None, :] * state.gram
            + cq[:, None] * v[None, :]
            + v[:, None] * cq[None, :]
            + jnp.sum(z_w**2) * v[:, None] * v[None, :]
        )
        # Alg. 1 line 13: y ← y + σ Σ w_i d_{i:λ}
        mean = state.mean + step
        # Alg. 1 line 14: σ ← σ exp(c_σ/2 (‖p_σ‖²/n - 1))
        sigma = state.sigma * jnp.exp(c_sigma / 2 * (jnp.sum(p_sigma**2) / n - 1))
        updated = state.replace(
            mean=mean,
            sigma=sigma.astype(dtype),
            p_sigma=p_sigma,
            vectors=vectors,
            gram=gram,
            t=state.t + 1,  # Alg. 1 line 15
            fitness_range=_common.fitness_range(fitness).astype(dtype),
        )
        return _selection.hold_without_parents(num_parents, updated, state, ("t", "fitness_range"))

    def converged(self, state: LMMAESState) -> jax.Array:
        """pyribs' check_stop: σ < 1e-12 or flat fitness (< 1e-12); also σ or mean non-finite."""
        return (
            (state.sigma < SIGMA_STOP)
            | (state.fitness_range < FLAT_FITNESS_STOP)
            | ~jnp.isfinite(state.sigma)
            | ~jnp.all(jnp.isfinite(state.mean))
        )
