"""The interface every evolution strategy implements, and the registry of strategies by name."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax

from cmamae.es import _common

_REGISTRY: dict[str, type[EvolutionStrategy]] = {}


@dataclasses.dataclass(frozen=True)
class EvolutionStrategy(abc.ABC):
    """Static settings of one evolution strategy; its methods are pure and jit-able.

    Maximizes. Subclasses are frozen dataclasses (hashable, usable as static jit arguments)
    adding their own hyperparameters with the published defaults.

    Attributes:
        popsize: λ, solutions per ``ask``; at least 2.
        sigma0: σ₀ > 0, the initial step size (also the value a restart resets to).
        noise: "auto" (the default: "normal" for small λ n, else "shared", by the rule of
            :func:`cmamae.es._common.resolve_noise`), "shared" (a process-wide noise table kept
            out of the state), "table" (a noise table in the state) or "normal"
            (``jax.random.normal``); see :mod:`cmamae.es._common`. The setting changes the
            random stream, not the algorithm.
    """

    popsize: int = 40
    sigma0: float = 0.02
    noise: str = "auto"

    name: ClassVar[str] = ""
    #: Whether ``tell`` recombines the best solutions with rank weights and so accepts
    #: ``num_parents`` (pyribs' selection rule "filter"; :mod:`cmamae.es._selection`).
    weighted_recombination: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    def __post_init__(self):
        _common.check_popsize(self.popsize)
        _common.check_positive("sigma0", self.sigma0)
        _common.check_noise(self.noise, allow_auto=True, allow_shared=True)

    def resolved_noise(self, n: int) -> str:
        """The generator ("shared", "table" or "normal") used for solutions of dimension ``n``."""
        return _common.resolve_noise(self.noise, self.popsize, n, shared=True)

    def standard_normal(
        self, key: jax.Array, noise: jax.Array, shape: tuple[int, int], dtype
    ) -> jax.Array:
        """``shape = (m, n)`` N(0, 1) samples from this strategy's generator, given a state's
        ``noise`` leaf: what ``ask`` draws (:func:`cmamae.es._common.standard_normal`)."""
        n = shape[1]
        table = _common.noise_source(self.resolved_noise(n), noise, n, dtype)
        return _common.standard_normal(key, table, shape, dtype)

    @abc.abstractmethod
    def init(self, key: jax.Array, x0: jax.Array) -> Any:
        """State with mean ``x0`` (shape ``(n,)``) and step size σ₀."""

    @abc.abstractmethod
    def ask(self, key: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        """Sample ``popsize`` solutions, shape ``(popsize, n)``."""

    @abc.abstractmethod
    def tell(self, state: Any, solutions: jax.Array, fitness: jax.Array, num_parents=None) -> Any:
        """Update from ``solutions`` ``(popsize, n)`` and ``fitness`` ``(popsize,)``, higher is
        better; NaN fitness ranks last.

        ``num_parents`` (only where :attr:`weighted_recombination`): None, the strategy's own
        selection (the ⌊λ/2⌋ best; pyribs' rule "mu"), or an int32 scalar m in [0, λ], which
        may be traced: the m best are recombined with weights and rates recomputed for m, and
        m = 0 leaves the distribution unchanged (pyribs' rule "filter",
        :mod:`cmamae.es._selection`)."""

    @abc.abstractmethod
    def converged(self, state: Any) -> jax.Array:
        """Scalar bool: the strategy's own stopping test fired (a QD emitter restarts then)."""


def names() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(_REGISTRY)


def get(name: str, **settings) -> EvolutionStrategy:
    """The strategy called ``name`` ("cma-es", "sep-cma-es", "lm-ma-es", "openai-es")."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown evolution strategy {name!r}; expected one of {names()}")
    return _REGISTRY[name](**settings)
