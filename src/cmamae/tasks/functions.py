"""The CMA-MAE paper's benchmark domains (Fontaine & Nikolaidis 2023, GECCO; arXiv 2205.10752).

Formulas follow the paper's experiment code (``experiments/lin_proj/lin_proj.py`` and
``experiments/arm/arm.py`` of icaros-usc/cma_mae) and pyribs' ``examples/sphere.py``; the
paper's setup: n = 100, a 100 × 100 grid archive, x0 = 0, objectives in [0, 100].

**Linear projection** (from CMA-ME, Fontaine et al. 2020). Let s = 0.4 · 5.12 = 2.048 (the
shifted optimum) and c = (−5.12, …, −5.12) the corner. Objectives, on the *unclipped* x:

* sphere:    f(x) = Σ (x_i − s)²
* rastrigin: f(x) = 10 n + Σ [(x_i − s)² − 10 cos(2π (x_i − s))]
* for both:  objective = (f(x) − f(c)) / (0 − f(c)) · 100 = 100 · (1 − f(x) / f(c)),
  so 100 at x_i = s, 0 at the corner, negative beyond it (no clipping, as in the paper).
* plateau:   objective = 100 − (1/n) Σ_i max(|x_i| − 5.12, 0)²: flat 100 on the box
  [−5.12, 5.12]ⁿ, a quadratic penalty outside it.

Measures (all three): clip each component, x̃_i = x_i if |x_i| ≤ 5.12 else 5.12 / x_i, then
m₁ = Σ_{i < ⌊n/2⌋} x̃_i and m₂ = Σ_{i ≥ ⌊n/2⌋} x̃_i. Ranges ±(n/2) · 5.12 each.

**Planar arm** (Cully et al. 2015's repertoire as the CMA-MAE paper runs it). n joint angles θ,
n links of length 1 (default n = 100). Objective = 100 · (1 − Var(θ)), Var the population
variance over the joints (NumPy's ``np.var``), so 100 for any constant θ and unbounded below.
Measures: the end effector, (Σ_k cos(θ_1 + … + θ_k), Σ_k sin(θ_1 + … + θ_k)), ranges ±n.

Every domain: min_f = 0 (the threshold_min and QD-score offset of the paper's archives),
max_f = 100, measure names ("m1", "m2") or ("x", "y"), ``initial_solution`` = zeros. None uses
the PRNG key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmamae import validate
from cmamae.tasks.base import Task, bind, register

BOUND = 5.12
SHIFT = 0.4 * BOUND  # 2.048
RASTRIGIN_A = 10.0


def _sphere_raw(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(x - SHIFT), axis=-1)


def _rastrigin_raw(x: jax.Array) -> jax.Array:
    d = x - SHIFT
    n = x.shape[-1]
    return RASTRIGIN_A * n + jnp.sum(jnp.square(d) - RASTRIGIN_A * jnp.cos(2 * jnp.pi * d), axis=-1)


def _normalize(raw: jax.Array, raw_fn, x: jax.Array) -> jax.Array:
    worst = raw_fn(jnp.full(x.shape[-1:], -BOUND, x.dtype))
    return (raw - worst) / (0.0 - worst) * 100.0


def sphere_objective(x: jax.Array) -> jax.Array:
    """Normalized shifted sphere, ``(..., n) -> (...)``; 100 at x_i = 2.048, 0 at x_i = −5.12."""
    return _normalize(_sphere_raw(x), _sphere_raw, x)


def rastrigin_objective(x: jax.Array) -> jax.Array:
    """Normalized shifted Rastrigin, ``(..., n) -> (...)``; 100 at x_i = 2.048, 0 at −5.12."""
    return _normalize(_rastrigin_raw(x), _rastrigin_raw, x)


def plateau_objective(x: jax.Array) -> jax.Array:
    """100 − mean_i max(|x_i| − 5.12, 0)², ``(..., n) -> (...)``."""
    excess = jnp.maximum(jnp.abs(x) - BOUND, 0.0)
    return 100.0 - jnp.mean(jnp.square(excess), axis=-1)


def linear_projection_measures(x: jax.Array) -> jax.Array:
    """Sums of the clipped halves, ``(..., n) -> (..., 2)``.

    x̃_i = x_i where |x_i| ≤ 5.12, else 5.12 / x_i; measures (Σ first ⌊n/2⌋, Σ the rest).
    """
    outside = jnp.abs(x) > BOUND
    clipped = jnp.where(outside, BOUND / jnp.where(outside, x, 1.0), x)
    half = x.shape[-1] // 2
    return jnp.stack(
        [jnp.sum(clipped[..., :half], axis=-1), jnp.sum(clipped[..., half:], axis=-1)], axis=-1
    )


_OBJECTIVES = {
    "sphere": sphere_objective,
    "rastrigin": rastrigin_objective,
    "plateau": plateau_objective,
}


def linear_projection_evaluate(
    solutions: jax.Array, key: jax.Array, *, objective: str
) -> tuple[jax.Array, jax.Array]:
    """``(batch, n) -> (objectives (batch,), measures (batch, 2))``; ``key`` is unused."""
    del key
    return _OBJECTIVES[objective](solutions), linear_projection_measures(solutions)


def arm_objective(theta: jax.Array) -> jax.Array:
    """100 · (1 − Var(θ)), ``(..., n) -> (...)``."""
    return 100.0 * (1.0 - jnp.var(theta, axis=-1))


def arm_measures(theta: jax.Array, link_lengths: jax.Array | None = None) -> jax.Array:
    """End-effector position ``(..., n) -> (..., 2)``: Σ_k l_k (cos, sin)(θ_1 + … + θ_k)."""
    cum = jnp.cumsum(theta, axis=-1)
    lengths = 1.0 if link_lengths is None else link_lengths
    return jnp.stack(
        [jnp.sum(lengths * jnp.cos(cum), axis=-1), jnp.sum(lengths * jnp.sin(cum), axis=-1)],
        axis=-1,
    )


def arm_evaluate(solutions: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(batch, n) -> (objectives (batch,), measures (batch, 2))``, unit links; ``key`` unused."""
    del key
    return arm_objective(solutions), arm_measures(solutions)


def zeros_solution(key: jax.Array, *, solution_dim: int) -> jax.Array:
    """The paper's x0: ``(solution_dim,)`` zeros; ``key`` is unused."""
    del key
    return jnp.zeros((solution_dim,))


def _check_dim(solution_dim, minimum: int) -> int:
    return validate.integer("solution_dim", solution_dim, minimum)


def _linear_projection_task(
    objective: str, solution_dim: int, archive_dims: tuple[int, int]
) -> Task:
    n = _check_dim(solution_dim, 2)
    bound = n / 2 * BOUND
    return Task(
        name=objective,
        solution_dim=n,
        measure_names=("m1", "m2"),
        measure_ranges=((-bound, bound), (-bound, bound)),
        archive_dims=archive_dims,
        min_f=0.0,
        max_f=100.0,
        evaluate=bind(linear_projection_evaluate, objective=objective),
        initial_solution=bind(zeros_solution, solution_dim=n),
        domain="benchmark",
        differentiable=True,
    )


@register("sphere")
def sphere_task(solution_dim: int = 100, archive_dims: tuple[int, int] = (100, 100)) -> Task:
    """Linear-projection sphere (see the module docstring)."""
    return _linear_projection_task("sphere", solution_dim, archive_dims)


@register("rastrigin")
def rastrigin_task(solution_dim: int = 100, archive_dims: tuple[int, int] = (100, 100)) -> Task:
    """Linear-projection Rastrigin (see the module docstring)."""
    return _linear_projection_task("rastrigin", solution_dim, archive_dims)


@register("plateau")
def plateau_task(solution_dim: int = 100, archive_dims: tuple[int, int] = (100, 100)) -> Task:
    """Linear-projection plateau (see the module docstring)."""
    return _linear_projection_task("plateau", solution_dim, archive_dims)


@register("arm")
def arm_task(solution_dim: int = 100, archive_dims: tuple[int, int] = (100, 100)) -> Task:
    """Planar arm repertoire with ``solution_dim`` unit links (see the module docstring)."""
    n = _check_dim(solution_dim, 1)
    return Task(
        name="arm",
        solution_dim=n,
        measure_names=("x", "y"),
        measure_ranges=((-float(n), float(n)), (-float(n), float(n))),
        archive_dims=archive_dims,
        min_f=0.0,
        max_f=100.0,
        evaluate=arm_evaluate,
        initial_solution=bind(zeros_solution, solution_dim=n),
        domain="benchmark",
        differentiable=True,
    )
