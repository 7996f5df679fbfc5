"""The interface every evolution strategy implements, its hyperparameters as data
(:class:`ESParams`), and the registry of strategies by name."""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import numpy as np

from cmamae._pytree import pytree_dataclass
from cmamae.es import _common
from cmamae.registry import Registry

#: Strategy classes by name (a subclass with a ``name`` registers itself).
STRATEGIES: Registry[type[EvolutionStrategy]] = Registry("evolution strategy")


def param_field(low: float, high: float = math.inf, *, closed: bool = False):
    """A field of an :class:`ESParams` whose values must lie in (``low``, ``high``) — with
    ``closed``, [``low``, ``high``) — and be finite (checked by :func:`check_params`)."""
    return dataclasses.field(metadata={"bounds": (low, high, closed)})


@pytree_dataclass
class ESParams:
    """The float hyperparameters of an evolution strategy, as data (a pytree).

    :meth:`EvolutionStrategy.default_params` returns the strategy's own settings (Python
    floats); ``init``, ``ask`` and ``tell`` take such a pytree as ``params``, so changing a
    value passed through ``jax.jit`` does not recompile, and ``jax.vmap`` runs one strategy
    over a batch of values. Each leaf is a scalar (a Python float or a ``()`` array; under
    ``vmap``, one per instance). Shapes (λ, n, μ, the recombination weights) stay settings of
    the strategy object. Strategies with more float settings subclass this.

    Attributes:
        sigma0: σ₀ > 0, the initial step size (read by ``init``, and so by a restart).
    """

    sigma0: float = param_field(0.0)


def check_params(params: ESParams, prefix: str = "params.") -> None:
    """Raise ValueError naming the field (after ``prefix``) when a concrete leaf of ``params``
    is out of the bounds its :func:`param_field` declares (traced leaves are not checked)."""
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, jax.core.Tracer):
            continue
        low, high, closed = field.metadata["bounds"]
        try:
            v = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            v = np.asarray(math.nan)
        above = v >= low if closed else v > low
        if not np.all(np.isfinite(v) & above & (v < high)):
            interval = f"{'[' if closed else '('}{low}, {high})"
            raise ValueError(
                f"{prefix}{field.name} must be finite and in {interval}, got {value!r}"
            )


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

    Hyperparameters as data: the float settings named by :attr:`params_type` (σ₀ for every
    strategy; learning rates where a strategy has settable ones) are also accepted as a
    ``params`` pytree by ``init``, ``ask`` and ``tell`` (None, the default, means
    :meth:`default_params`, the object's own settings, and gives the same numbers as before
    params existed). Passed as a jit argument they do not recompile when changed, and
    ``jax.vmap`` maps one strategy over a batch of them::

        def run(sigma0):  # final mean of 100 generations on the sphere
            p = strategy.default_params().replace(sigma0=sigma0)
            def gen(state, key):
                x, state = strategy.ask(key, state, p)
                return strategy.tell(state, x, -jnp.sum(x**2, axis=1), params=p), None
            state = strategy.init(jax.random.key(0), x0, p)
            return jax.lax.scan(gen, state, jax.random.split(jax.random.key(1), 100))[0].mean

        jax.jit(jax.vmap(run))(jnp.array([0.01, 0.1, 1.0]))  # (3, n)
    """

    popsize: int = 40
    sigma0: float = 0.02
    noise: str = "auto"

    name: ClassVar[str] = ""
    #: Whether ``tell`` recombines the best solutions with rank weights and so accepts
    #: ``num_parents`` (pyribs' selection rule "filter"; :mod:`cmamae.es._selection`).
    weighted_recombination: ClassVar[bool] = False
    #: The pytree class of this strategy's hyperparameters as data; its fields name
    #: attributes of the strategy (:meth:`default_params`).
    params_type: ClassVar[type[ESParams]] = ESParams

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            STRATEGIES.register(cls.name, cls)

    def __post_init__(self):
        _common.check_popsize(self.popsize)
        check_params(self.default_params(), prefix="")
        _common.check_noise(self.noise, allow_auto=True, allow_shared=True)

    def default_params(self) -> ESParams:
        """This strategy's own float settings as a :attr:`params_type` pytree (Python floats;
        ``.replace(sigma0=...)`` gives a variant, with traced or batched values too)."""
        names = [f.name for f in dataclasses.fields(self.params_type)]
        return self.params_type(**{name: getattr(self, name) for name in names})

    def resolve_params(self, params: ESParams | None) -> ESParams:
        """``params``, or :meth:`default_params` for None; a ValueError when ``params`` is not
        a :attr:`params_type` or a concrete value is out of bounds (:func:`check_params`)."""
        if params is None:
            return self.default_params()
        if type(params) is not self.params_type:
            raise ValueError(
                f"params must be a {self.params_type.__name__} (see default_params()), "
                f"got {type(params).__name__}"
            )
        check_params(params)
        return params

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
    def init(self, key: jax.Array, x0: jax.Array, params: ESParams | None = None) -> Any:
        """State with mean ``x0`` (shape ``(n,)``) and step size σ₀ (``params.sigma0``;
        ``params`` None means :meth:`default_params`, as in ``ask`` and ``tell``)."""

    @abc.abstractmethod
    def ask(
        self, key: jax.Array, state: Any, params: ESParams | None = None
    ) -> tuple[jax.Array, Any]:
        """Sample ``popsize`` solutions, shape ``(popsize, n)``. ``params`` is checked and
        accepted for a uniform interface; no strategy's sampling reads it (σ is in the state)."""

    @abc.abstractmethod
    def tell(
        self,
        state: Any,
        solutions: jax.Array,
        fitness: jax.Array,
        num_parents=None,
        params: ESParams | None = None,
    ) -> Any:
        """Update from ``solutions`` ``(popsize, n)`` and ``fitness`` ``(popsize,)``, higher is
        better; NaN fitness ranks last. ``params``: the learning rates it reads, if any.

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
    return STRATEGIES.names()


def get(name: str, **settings) -> EvolutionStrategy:
    """The strategy called ``name`` ("cma-es", "sep-cma-es", "lm-ma-es", "openai-es")."""
    return STRATEGIES.get(name)(**settings)
