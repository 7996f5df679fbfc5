"""The task interface (objective + measures + metadata) and the registry of tasks by name.

A :class:`Task` is static configuration: a frozen, hashable dataclass whose ``evaluate`` and
``initial_solution`` are pure JAX functions. Two tasks built with the same settings compare
equal and hash equal (their functions are :class:`Bound` values, compared by value), so a task
can be a static argument of ``jax.jit`` without recompiling for every ``tasks.get`` call.

Registering a task family is one line on its factory (:data:`TASKS`, a
:class:`cmamae.registry.Registry`)::

    @register("sphere")
    def sphere_task(solution_dim: int = 100) -> Task: ...

after which ``tasks.get("sphere", solution_dim=20)`` calls the factory with the overrides.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.registry import Registry

# Task fields that ``get`` may override after the factory ran, for every task. Other fields
# (solution_dim, the functions, the measure names) follow from the factory's own parameters.
_REPLACEABLE = ("archive_dims", "measure_ranges", "min_f", "max_f", "domain")

#: Values of :attr:`Task.domain`: whose published algorithm settings suit the task.
DOMAINS = ("benchmark", "scaling")

#: Task factories by name.
TASKS: Registry[Callable[..., Task]] = Registry("task")


@dataclasses.dataclass(frozen=True)
class Bound:
    """A module-level function ``fn`` with keyword arguments ``kwargs`` (``(name, value)``
    pairs) bound, compared and hashed by value.

    ``Bound(f, (("n", 3),))(*args)`` calls ``f(*args, n=3)``. Unlike ``functools.partial``,
    two ``Bound`` objects with the same function and arguments are equal, so tasks built
    twice from the same settings are equal too. Bound values must themselves be hashable.
    """

    fn: Callable[..., Any]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, *args):
        return self.fn(*args, **dict(self.kwargs))


def bind(fn: Callable[..., Any], **kwargs) -> Bound:
    """``fn`` with ``kwargs`` bound, as a hashable, value-compared callable (see :class:`Bound`)."""
    return Bound(fn, tuple(sorted(kwargs.items())))


@pytree_dataclass
class Transitions:
    """Rollout transitions of a batch of episodes; every leaf has leading axes ``(B, T)``
    (solutions, policy steps).

    Attributes:
        obs: ``(B, T, obs_dim)`` observation before the step.
        actions: ``(B, T, act_dim)`` the policy's action.
        rewards: ``(B, T)`` the step's reward.
        next_obs: ``(B, T, obs_dim)`` observation after the step.
        dones: ``(B, T)`` 1.0 where the episode terminated at this step (reaching the episode
            length is truncation, not termination: 0.0 there), else 0.0.
        valid: ``(B, T)`` bool, the step was executed (it is at or before termination).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_obs: jax.Array
    dones: jax.Array
    valid: jax.Array


@dataclasses.dataclass(frozen=True)
class ReplayHook:
    """What a task offers replay besides ``evaluate``: its episodes step by step, to draw.

    Attributes:
        trajectory: ``trajectory(solutions (batch, n), key) -> dict`` of NumPy-convertible
            arrays: the episodes ``evaluate`` runs for the same key, recorded per step, each
            entry with leading axes ``(batch, T, ...)``, plus ``steps`` ``(batch,)`` (steps
            executed) and, where the episode's score is its return, ``objective``
            ``(batch,)``. Pure JAX (jit- and vmap-able), so replay runs it in the run's
            layout.
        step_seconds: simulated seconds per step.
        series: ``(entry, axis label)`` pairs of per-step entries worth plotting.
        mujoco_model: optional ``() -> mujoco.MjModel``; with it the trajectory holds
            ``qpos`` ``(batch, T, nq)`` (after each step) and ``start_qpos`` ``(batch, nq)``,
            drawn as a video.
        camera: optional ``(name, value)`` pairs for the video's tracking camera.
    """

    trajectory: Callable[[jax.Array, jax.Array], dict]
    step_seconds: float
    series: tuple[tuple[str, str], ...] = ()
    mujoco_model: Callable[[], Any] | None = None
    camera: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Task:
    """An optimization problem: objective and measures of a batch of solution vectors.

    Attributes:
        name: the registry name (or any label).
        solution_dim: n, the length of one solution vector.
        measure_names: one name per measure; empty for a single-objective task.
        measure_ranges: ``(lo, hi)`` per measure, the bounds of a grid archive.
        archive_dims: cells per measure of the task's standard grid archive.
        min_f: a lower bound on useful objective values: the archive's ``threshold_min`` and
            the QD-score offset.
        max_f: the best objective value (or a conventional top) for normalizing; ``None``
            when unknown.
        evaluate: ``evaluate(solutions, key) -> (objectives, measures)`` with ``solutions``
            ``(batch, solution_dim)``, ``objectives`` ``(batch,)`` (higher is better) and
            ``measures`` ``(batch, len(measure_names))``. Pure and jit-able; deterministic
            tasks ignore ``key``.
        initial_solution: ``initial_solution(key) -> (solution_dim,)``, the ES starting point.
        evaluate_transitions: optional ``evaluate_transitions(solutions, key) -> (objectives,
            measures, transitions)``: the same objectives and measures as ``evaluate`` for the
            same key, plus the rollouts' :class:`Transitions`; ``None`` when the task has no
            rollouts (algorithms that learn from transitions then refuse the task).
        policy: optional, the :class:`cmamae.tasks.policies.MLPPolicy` a solution vector
            parameterizes (for algorithms that train or differentiate the actor).
        replay: optional :class:`ReplayHook`: the episodes step by step, for ``cmamae
            replay`` to draw (a video for MuJoCo tasks); None: replay draws the solution.
        domain: one of :data:`DOMAINS`, which published settings :mod:`cmamae.algorithms`
            gives its recipes on this task: "benchmark" (the CMA-MAE paper's benchmark
            domains: ψ = 15, λ = 36, σ₀ = 0.5, α = 0.01) or "scaling" (the scaling paper's
            locomotion settings: ψ = 5, λ = 40, σ₀ = 0.02, α = 0.001; the default). A user's
            task picks with ``tasks.get(name, domain=...)`` or ``dataclasses.replace``.
        differentiable: ``evaluate`` is differentiable by ``jax.jacrev`` in the solutions
            (almost everywhere), so exact-gradient algorithms ("cma-mega") may use it.
    """

    name: str
    solution_dim: int
    measure_names: tuple[str, ...]
    measure_ranges: tuple[tuple[float, float], ...]
    archive_dims: tuple[int, ...]
    min_f: float
    max_f: float | None
    evaluate: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    initial_solution: Callable[[jax.Array], jax.Array]
    evaluate_transitions: Callable[..., tuple[jax.Array, jax.Array, Transitions]] | None = None
    policy: Any = None
    replay: ReplayHook | None = None
    domain: str = "scaling"
    differentiable: bool = False

    def __post_init__(self):
        validate.integer("solution_dim", self.solution_dim)
        validate.one_of("domain", self.domain, DOMAINS)
        # Normalize sequences to tuples so the task stays hashable.
        object.__setattr__(self, "measure_names", tuple(self.measure_names))
        object.__setattr__(
            self, "measure_ranges", tuple((float(lo), float(hi)) for lo, hi in self.measure_ranges)
        )
        object.__setattr__(self, "archive_dims", tuple(int(d) for d in self.archive_dims))
        m = len(self.measure_names)
        if len(self.measure_ranges) != m:
            raise ValueError(
                f"measure_ranges must have one (lo, hi) per measure ({m}), "
                f"got {self.measure_ranges!r}"
            )
        if len(self.archive_dims) != m or any(d < 1 for d in self.archive_dims):
            raise ValueError(
                f"archive_dims must have one positive cell count per measure ({m}), "
                f"got {self.archive_dims!r}"
            )
        for lo, hi in self.measure_ranges:
            if not lo < hi:
                raise ValueError(f"measure_ranges must have lo < hi, got {self.measure_ranges!r}")
        validate.number("min_f", self.min_f)
        if self.max_f is not None and not self.max_f > self.min_f:
            raise ValueError(f"max_f must exceed min_f ({self.min_f}), got {self.max_f!r}")

    @property
    def measure_dim(self) -> int:
        """Number of measures."""
        return len(self.measure_names)

    @property
    def num_cells(self) -> int:
        """Cells of the standard grid archive (1 for a single-objective task)."""
        return math.prod(self.archive_dims)

    @property
    def host_evaluated(self) -> bool:
        """True when ``evaluate`` runs on the host (a simulator that is not JAX; see
        :class:`cmamae.tasks.host.HostTask`), so the compiled loop cannot trace it."""
        return False


def register(name: str):
    """Decorator registering ``factory(**settings) -> Task`` as ``name``; returns it unchanged."""
    return TASKS.register(name)


def names() -> list[str]:
    """Names accepted by :func:`get`, sorted."""
    return TASKS.names()


def get(name: str, **overrides) -> Task:
    """The task registered as ``name``, built with ``overrides``.

    Overrides are the factory's keyword parameters (``tasks.get("sphere", solution_dim=20)``,
    ``tasks.get("pendulum", num_episodes=5)``) and, for every task, the fields
    ``archive_dims``, ``measure_ranges``, ``min_f`` and ``max_f``, replaced after building.

    Raises:
        ValueError: unknown name (the message lists the valid names) or unknown override.
    """
    factory = TASKS.get(name)
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    factory_kwargs = {k: v for k, v in overrides.items() if k in params or accepts_any}
    replaced = {k: v for k, v in overrides.items() if k not in factory_kwargs}
    unknown = sorted(k for k in replaced if k not in _REPLACEABLE)
    if unknown:
        valid = sorted(
            {k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
            | set(_REPLACEABLE)
        )
        raise ValueError(
            f"unknown override(s) {unknown} for task {name!r}; expected any of {valid}"
        )
    task = factory(**factory_kwargs)
    if replaced:
        task = dataclasses.replace(task, **replaced)
    return task
