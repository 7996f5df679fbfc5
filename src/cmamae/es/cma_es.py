"""CMA-ES with a full covariance matrix (maximization), after Hansen's tutorial.

Reference: N. Hansen (2016), "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772,
Appendix A (the algorithm summary, Eqs. 38-47) and Table 1 (default parameters, Eqs. 48-58),
including the negative ("active") recombination weights of Eq. 53. Equation numbers in the
comments below refer to that tutorial.

Cost: Θ(n²) time per sampled solution (one matrix-vector product ``B D z`` per sample, and the
rank-μ update of C is Θ(λ n²) per generation), plus an Θ(n³) eigendecomposition of C every
``eigen_gap`` generations. Memory: Θ(n²) per instance (C and its eigenvectors B), plus the
noise table of :mod:`cmamae.es._common` when ``noise="table"``. Meant for small n and as the
reference the Θ(n) strategies are checked against.

Lazy eigendecomposition. As the tutorial (Appendix B.2) and pycma do, B and D are recomputed
only every ``max(1, ⌊1 / (10 n (c1 + cμ))⌋)`` generations (:attr:`CMAParameters.eigen_gap`):
every generation for n ≲ 100 with the default λ, every few generations above. The test is a
``lax.cond`` on a generation counter kept in the state (under ``vmap`` both branches run, so
batched instances pay for the decomposition every generation; a ``lax.map`` over instances
keeps the saving). Between decompositions sampling and C^{-1/2} use the stored B and D, as
in the tutorial.

CPU note: JAX's CPU ``eigh`` calls LAPACK from SciPy's OpenBLAS, whose worker threads, when
they compete for few cores, made one 100 x 100 decomposition 5-100x slower here (0.5 ms with
one thread, 3-90 ms with the default two on a busy 2-core machine);
``threadpoolctl.threadpool_limits(1)`` around the run avoids that.

Deviations from the tutorial, both as in pycma / pyribs and both inactive in normal runs:
the exponent of the step-size update (Eq. 44) is clipped at +1, and eigenvalues of C are
floored at the dtype's smallest positive normal number so that B D and C^{-1/2} stay finite.

Differences from pyribs 0.12's ``CMAEvolutionStrategy`` (the optimizer behind pyribs' CMA-ME and
CMA-MAE; ``ribs/emitters/opt/_cma_es.py``, after pycma's ``purecma``), all deliberate in the
default ``update="tutorial"``; ``update="pyribs"`` takes pyribs' side of every one:

* pyribs multiplies the rank-one term by c₁ twice (c₁² p_c p_cᵀ, while the decay of C uses c₁),
  so its rank-one update is ~5000× weaker than Eq. 47's at n = 100; ours is Eq. 47's c₁ p_c p_cᵀ.
  Its p_c also sums the steps m' − m in solution units (Eq. 45 sums them divided by σ), and
  the rank-one term is not divided by σ², so in Eq. 47's terms it is c₁² σ² p_c p_cᵀ (with
  the σ of each past step);
* pyribs' c_μ leaves out Eq. 58's 1/4: 2 (μ_eff − 2 + 1/μ_eff) / ((n + 2)² + μ_eff), which is
  0 for one parent and 2.7× smaller than Eq. 58's for two (selection "filter" with few
  accepted solutions), 6 % smaller for λ = 20's μ = 10;
* pyribs has no negative weights (``selection_rule="mu"``: μ positive weights only);
* pyribs' step size uses ‖p_σ‖²: σ exp(min(1, (c_σ/d_σ)(‖p_σ‖²/n − 1)/2)) and h_σ
  ‖p_σ‖²/n/(1 − (1 − c_σ)^{2g}) < 2 + 4/(n + 1); ours Eq. 44 and the tutorial's h_σ;
* pyribs decomposes C every ⌊0.5 / (n (c₁ + c_μ))⌋ + 1 generations (3 at n = 100, λ = 36;
  2 at n = λ = 20), counting every ``tell``, also those without parents.

Under ``update="pyribs"`` a state update equals pyribs' to rounding, fed the same noise,
ranking and number of parents (tests/emitters/test_cma_es_pyribs_update.py); pyribs' only
remaining difference is that its stopping test reads the eigenvalues of the previous ``ask``.

Measured on the CMA-MAE paper's LP sphere (benchmarks/results/qd_quality_cpu.md): CMA-MAE
with ours scores ~4 normalized QD points above pyribs; with c₁² in the rank-one term (and
nothing else changed) ours drops to pyribs' score, while removing the negative weights changes
little. With pyribs' emitter defaults (ranker "2imp", selection "filter") on the sphere of
docs/coming_from_pyribs.md (n = 20, 5 × 20 solutions, 100 iterations, 12 seeds), the tutorial
update scores 11 % above pyribs (z = +3.9); pyribs patched to Eq. 47's rank-one term alone
(c₁ p_c p_cᵀ, p_c in units of σ) scores as ours (z = −0.9), to Eq. 58's c_μ alone z = +1.6,
and ``update="pyribs"`` scores as pyribs (z = +1.0; the page gives the numbers).

Ranking: solutions are ordered by fitness, highest first (:func:`cmamae.es._common.rank_order`);
NaN fitness ranks last. Only the ranking enters the update, so NaN never reaches the mean,
the paths, C or σ.
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
from cmamae.es.base import ESParams, EvolutionStrategy, param_field

# pyribs' stopping tolerances (ribs/emitters/opt/_cma_es.py, ``check_stop``; from pycma).
CONDITION_LIMIT = 1e14
AREA_LIMIT = 1e-11
FLAT_FITNESS_LIMIT = 1e-12


@dataclasses.dataclass(frozen=True)
class CMAParameters:
    """Strategy parameters of CMA-ES for one (λ, n), Table 1 of the tutorial (Python floats)."""

    n: int
    popsize: int
    mu: int
    weights: np.ndarray  # (popsize,): μ positive weights summing to 1, then negative ones
    mueff: float
    cs: float
    damps: float
    cc: float
    c1: float
    cmu: float
    chi_n: float
    eigen_gap: int


UPDATES = ("tutorial", "pyribs")


def _rates(mueff: float, n: int, update: str = "tutorial") -> dict[str, float]:
    """Learning rates and damping for selection mass ``mueff`` in dimension ``n`` (Table 1);
    ``update="pyribs"``: pyribs' c_μ, without Eq. 58's 1/4."""
    alpha_cov = 2.0
    c1 = alpha_cov / ((n + 1.3) ** 2 + mueff)  # Eq. 57
    quarter = 0.25 if update == "tutorial" else 0.0
    cmu = min(  # Eq. 58
        1 - c1,
        alpha_cov * (quarter + mueff + 1 / mueff - 2) / ((n + 2) ** 2 + alpha_cov * mueff / 2),
    )
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)  # Eq. 56
    cs = (mueff + 2) / (n + mueff + 5)  # Eq. 55
    damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs  # Eq. 55
    return dict(c1=c1, cmu=cmu, cc=cc, cs=cs, damps=damps)


@functools.lru_cache(maxsize=64)
def cma_parameters(popsize: int, n: int, update: str = "tutorial") -> CMAParameters:
    """Default strategy parameters for population size ``popsize`` in dimension ``n``;
    ``update="pyribs"``: pyribs' μ = ⌊λ/2⌋ positive weights (zeros after), c_μ and
    decomposition interval."""
    lam = popsize
    mu = lam // 2
    if update == "pyribs":
        weights = _selection.parent_weights(lam)[mu]
        mueff = float(1 / (weights**2).sum())
        r = _rates(mueff, n, update)
        # pyribs' lazy_gap_evals = 0.5 λ / (n (c1 + cμ)), compared with evaluations since the
        # last decomposition by ">": a decomposition every ⌊0.5 / (n (c1 + cμ))⌋ + 1 tells.
        eigen_gap = int(0.5 / (n * (r["c1"] + r["cmu"]))) + 1
    else:
        raw = math.log((lam + 1) / 2) - np.log(np.arange(1, lam + 1))  # Eq. 49
        pos, neg = raw[:mu], raw[mu:]
        mueff = float(pos.sum() ** 2 / (pos**2).sum())
        neg_abs_sum = float(np.abs(neg).sum())
        mueff_minus = float(neg.sum() ** 2 / (neg**2).sum()) if neg_abs_sum > 0 else 0.0
        r = _rates(mueff, n)
        c1, cmu = r["c1"], r["cmu"]

        # Eq. 53: positive weights sum to 1; negative ones scaled by min(α_μ⁻, α_μeff⁻, α_posdef⁻).
        alpha_mu_minus = 1 + c1 / cmu
        alpha_mueff_minus = 1 + 2 * mueff_minus / (mueff + 2)
        alpha_posdef_minus = (1 - c1 - cmu) / (n * cmu)
        alpha_minus = min(alpha_mu_minus, alpha_mueff_minus, alpha_posdef_minus)
        weights = np.concatenate(
            [pos / pos.sum(), neg * (alpha_minus / neg_abs_sum if neg_abs_sum > 0 else 0.0)]
        )
        eigen_gap = max(1, int(1 / (10 * n * (c1 + cmu))))  # Appendix B.2
    return CMAParameters(
        n=n,
        popsize=lam,
        mu=mu,
        weights=weights,
        mueff=mueff,
        **r,
        chi_n=_common.expected_norm(n),
        eigen_gap=eigen_gap,
    )


@functools.lru_cache(maxsize=64)
def cma_parent_table(popsize: int, n: int, update: str = "tutorial") -> _selection.ParentTable:
    """Per-m weights and rates for selection "filter" (m parents, positive weights only, as
    pyribs): row m has pyribs' weights for m parents, μ_eff and :func:`_rates` of that μ_eff
    (for ``update``), the coefficient √(c_c (2 − c_c) μ_eff) of Eq. 45, and Σ w = 1."""

    def values(mueff: float) -> dict[str, float]:
        r = _rates(mueff, n, update)
        pc_coef = math.sqrt(r["cc"] * (2 - r["cc"]) * mueff)
        return dict(r, pc_coef=pc_coef, weight_sum=1.0)

    return _selection.parent_table(popsize, values)


@pytree_dataclass
class CMAESParams(ESParams):
    """Hyperparameters as data of CMA-ES and sep-CMA-ES (:class:`cmamae.es.base.ESParams`).

    Attributes:
        sigma0: σ₀ > 0, the initial step size.
        c_mean: c_m > 0, the learning rate of the mean (Eq. 42; Eq. 54's default is 1).
    """

    c_mean: float = param_field(0.0)


@pytree_dataclass
class CMAESState:
    """State of one CMA-ES instance; ``n`` is the solution dimension.

    Attributes:
        mean: m, the distribution mean ``(n,)``.
        sigma: σ, the step size ``()``.
        C: the covariance matrix ``(n, n)``.
        B: eigenvectors of C as columns ``(n, n)`` (as of the last decomposition).
        D: square roots of the eigenvalues of C ``(n,)`` (as of the last decomposition).
        pc: evolution path of C ``(n,)`` (under ``update="pyribs"`` in solution units: σ
            times the tutorial's).
        ps: conjugate evolution path of σ ``(n,)``.
        generation: number of ``tell`` calls so far, int32 ``()``.
        eigen_generation: generation of the last eigendecomposition, int32 ``()``.
        fitness_range: best − worst finite fitness of the last ``tell`` (inf before any).
        noise: the noise table (``(0,)`` for ``noise="normal"`` and ``"shared"``).
    """

    mean: jax.Array
    sigma: jax.Array
    C: jax.Array
    B: jax.Array
    D: jax.Array
    pc: jax.Array
    ps: jax.Array
    generation: jax.Array
    eigen_generation: jax.Array
    fitness_range: jax.Array
    noise: jax.Array


def _squared_norm_step_size(ps, sigma, generation, dtype, *, cs, damps):
    """pyribs' (purecma's) σ and h_σ from the updated p_σ ``(n,)``, ``generation`` = g + 1:
    σ exp(min(1, (c_σ/d_σ)(‖p_σ‖²/n − 1)/2)) and h_σ = [‖p_σ‖²/n / (1 − (1 − c_σ)^{2(g+1)})
    < 2 + 4/(n + 1)] (as a ``dtype`` 0/1 scalar)."""
    n = ps.shape[-1]
    spread = jnp.sum(ps**2) / n
    sigma = sigma * jnp.exp(jnp.minimum(1.0, (cs / damps) * (spread - 1) / 2))
    bias = 1 - (1 - cs) ** (2 * generation.astype(dtype))
    hsig = (spread / bias < 2 + 4 / (n + 1)).astype(dtype)
    return sigma, hsig


def _eigen(C: jax.Array) -> tuple[jax.Array, jax.Array]:
    """B, D of a symmetric C = B diag(D²) Bᵀ, eigenvalues floored at the smallest normal."""
    C = 0.5 * (C + C.T)
    eigenvalues, B = jnp.linalg.eigh(C)
    eigenvalues = jnp.maximum(eigenvalues, jnp.finfo(C.dtype).tiny)
    return B, jnp.sqrt(eigenvalues)


@dataclasses.dataclass(frozen=True)
class CMAES(EvolutionStrategy):
    """CMA-ES (Hansen 2016) with active (negative) weights; Θ(n²) per solution.

    Attributes:
        popsize: λ; the tutorial's default is ``4 + ⌊3 ln n⌋`` (the library default, 40, is the
            CMA-MAE paper's setting).
        sigma0: initial step size σ₀.
        noise: "auto", "shared", "table" or "normal", see :mod:`cmamae.es._common`.
        c_mean: c_m, the learning rate of the mean (Eq. 42), 1 as in Eq. 54.
        update: "tutorial" (the default: Hansen's tutorial, active weights) or "pyribs"
            (pyribs 0.12's ``CMAEvolutionStrategy``: c₁² rank-one term, c_μ without 1/4,
            no negative weights, σ and h_σ from ‖p_σ‖², its decomposition interval; the
            module docstring lists the differences and their measured effect).

    ``sigma0`` and ``c_mean`` are also data (:class:`CMAESParams`, ``params`` of ``init``
    and ``tell``). The other rates (c_σ, d_σ, c_c, c₁, c_μ) and the weights follow from λ, n
    and the number of parents (Table 1) and stay derived.
    """

    c_mean: float = 1.0
    update: str = "tutorial"

    name: ClassVar[str] = "cma-es"
    weighted_recombination: ClassVar[bool] = True
    params_type: ClassVar[type[ESParams]] = CMAESParams

    def __post_init__(self):
        super().__post_init__()
        validate.one_of("update", self.update, UPDATES)

    def parameters(self, n: int) -> CMAParameters:
        """Strategy parameters (weights, learning rates) in dimension ``n``."""
        return cma_parameters(self.popsize, int(n), self.update)

    def init(self, key: jax.Array, x0: jax.Array, params: CMAESParams | None = None) -> CMAESState:
        params = self.resolve_params(params)
        x0 = _common.check_x0(x0)
        n = x0.shape[0]
        dtype = x0.dtype
        eye = jnp.eye(n, dtype=dtype)
        zeros = jnp.zeros((n,), dtype)
        return CMAESState(
            mean=x0,
            sigma=jnp.asarray(params.sigma0, dtype),
            C=eye,
            B=eye,
            D=jnp.ones((n,), dtype),
            pc=zeros,
            ps=zeros,
            generation=jnp.zeros((), jnp.int32),
            eigen_generation=jnp.zeros((), jnp.int32),
            fitness_range=jnp.asarray(jnp.inf, dtype),
            noise=_common.init_noise(key, self.resolved_noise(n), n, dtype),
        )

    def ask(
        self, key: jax.Array, state: CMAESState, params: CMAESParams | None = None
    ) -> tuple[jax.Array, CMAESState]:
        self.resolve_params(params)  # checked only: sampling reads σ from the state
        n = state.mean.shape[-1]
        dtype = state.mean.dtype
        z = self.standard_normal(key, state.noise, (self.popsize, n), dtype)  # Eq. 38
        y = (z * state.D) @ state.B.T  # Eq. 39: y_k = B D z_k ~ N(0, C)
        x = state.mean + state.sigma * y  # Eq. 40
        return x, state

    def parent_table(self, n: int) -> _selection.ParentTable:
        """Weights and rates per number of parents m (selection "filter") in dimension ``n``."""
        return cma_parent_table(self.popsize, int(n), self.update)

    def tell(
        self,
        state: CMAESState,
        solutions: jax.Array,
        fitness: jax.Array,
        num_parents=None,
        params: CMAESParams | None = None,
    ) -> CMAESState:
        """Eqs. 41-47 from the ranked solutions. ``num_parents``: None recombines the ⌊λ/2⌋
        best with the active weights of Eq. 53 (``update="pyribs"``: positive weights only);
        an int32 m (pyribs' "filter") the m best with pyribs' positive weights for m and no
        negative ones (see the base class). ``params``: reads ``c_mean``."""
        c_mean = self.resolve_params(params).c_mean
        n = state.mean.shape[-1]
        solutions, fitness = _common.check_tell_args(self.popsize, n, solutions, fitness)
        p = self.parameters(n)
        dtype = state.mean.dtype
        tiny = jnp.finfo(dtype).tiny
        if num_parents is None:
            w, mu = jnp.asarray(p.weights, dtype), p.mu
            r = dict(_selection.cma_rates(p), weight_sum=float(p.weights.sum()))
        else:
            num_parents = _selection.check_num_parents(num_parents, self.popsize)
            (w, r), mu = self.parent_table(n).row(num_parents, dtype), self.popsize

        order = _common.rank_order(fitness)
        y = (solutions.astype(dtype)[order] - state.mean) / state.sigma  # y_{i:λ}, best first

        def inv_sqrt_c(v):  # C^{-1/2} v = B D^{-1} Bᵀ v, for rows v
            return ((v @ state.B) / state.D) @ state.B.T

        y_w = w[:mu] @ y[:mu]  # Eq. 41
        mean = state.mean + c_mean * state.sigma * y_w  # Eq. 42

        generation = state.generation + 1
        ps, sigma, hsig = _common.csa_update(  # Eqs. 43-44 and h_σ
            state.ps,
            state.sigma,
            inv_sqrt_c(y_w),
            generation,
            dtype,
            cs=r["cs"],
            damps=r["damps"],
            mueff=r["mueff"],
            chi_n=p.chi_n,
        )
        pyribs = self.update == "pyribs"
        if pyribs:  # the same p_σ; σ and h_σ from ‖p_σ‖²
            sigma, hsig = _squared_norm_step_size(
                ps, state.sigma, generation, dtype, cs=r["cs"], damps=r["damps"]
            )
        # Eq. 45; pyribs' p_c accumulates the step σ <y>_w in solution units, and its rank-one
        # term, c₁² p_c p_cᵀ, is not divided by σ².
        step = state.sigma * y_w if pyribs else y_w
        pc = (1 - r["cc"]) * state.pc + hsig * r["pc_coef"] * step

        z_norm2 = jnp.sum(inv_sqrt_c(y) ** 2, axis=1)
        w_circ = jnp.where(w >= 0, w, w * n / jnp.maximum(z_norm2, tiny))  # Eq. 46
        delta_h = (1 - hsig) * r["cc"] * (2 - r["cc"])
        decay = 1 + r["c1"] * delta_h - r["c1"] - r["cmu"] * r["weight_sum"]
        rank_one = r["c1"] ** 2 if pyribs else r["c1"]
        C = decay * state.C + rank_one * jnp.outer(pc, pc) + r["cmu"] * (y.T * w_circ) @ y  # Eq. 47
        C = 0.5 * (C + C.T)

        updated = state.replace(
            mean=mean,
            sigma=sigma,
            C=C,
            pc=pc,
            ps=ps,
            generation=generation,
            fitness_range=_common.fitness_range(fitness).astype(dtype),
        )
        # Without parents only the counters advance; the decomposition schedule counts every
        # tell (as pyribs' evaluation count does), so it runs on the state kept.
        state = _selection.hold_without_parents(
            num_parents, updated, state, ("generation", "fitness_range")
        )
        if p.eigen_gap == 1:
            B, D = _eigen(state.C)
            return state.replace(B=B, D=D, eigen_generation=generation)
        B, D, eigen_generation = jax.lax.cond(
            generation - state.eigen_generation >= p.eigen_gap,
            lambda: (*_eigen(state.C), generation),
            lambda: (state.B, state.D, state.eigen_generation),
        )
        return state.replace(B=B, D=D, eigen_generation=eigen_generation)

    def converged(self, state: CMAESState) -> jax.Array:
        """pyribs' ``check_stop``: condition number of C > 1e14, σ √λ_max(C) < 1e-11, or the
        last ``tell``'s fitness range (best − worst) < 1e-12. Uses the stored eigenvalues."""
        eigenvalues = state.D**2
        ev_max = jnp.max(eigenvalues, axis=-1)
        ill = ev_max / jnp.min(eigenvalues, axis=-1) > CONDITION_LIMIT
        small = state.sigma * jnp.sqrt(ev_max) < AREA_LIMIT
        flat = state.fitness_range < FLAT_FITNESS_LIMIT
        return ill | small | flat
