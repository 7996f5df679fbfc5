"""Named QD algorithms: typed recipes that turn a task into a :class:`~cmamae.scheduler.Scheduler`.

Each algorithm is a :class:`Recipe`: a frozen dataclass whose fields are its settings, with the
published values as defaults, and one method, :meth:`Recipe.build`, that makes the archive and
emitters. ``algorithms.get("sep-cma-mae", task, sigma0=0.05)`` picks the recipe by name
(:data:`ALGORITHMS`), applies the defaults of the task's domain (:attr:`Task.domain
<cmamae.tasks.base.Task>`: metadata of the task, never its name) and the overrides, and builds:

* domain "scaling" (the locomotion tasks, and a task that does not say otherwise): the scaling
  paper (Tjanaka et al. 2023, section V-A; ../shared/REFERENCE.md "The paper's setup"):
  ψ = 5 emitters, λ = 40, σ₀ = 0.02, α = 0.001, LM-MA-ES k = λ, OpenAI-ES Adam lr 0.01 with
  L2 0.005, MAP-Elites σ = 0.02 with batch 100;
* domain "benchmark" (sphere, rastrigin, plateau, arm): the CMA-MAE paper (Fontaine &
  Nikolaidis 2023; REFERENCE.md "The CMA-MAE paper's benchmarks") as pyribs'
  ``examples/sphere.py`` configures it: ψ = 15, λ = 36, σ₀ = 0.5, α = 0.01, MAP-Elites
  σ = 0.5 (line: iso 0.5, line 0.2) with batch 540.

The gradient-based baselines "cma-mega" (exact gradients: tasks with ``differentiable``),
"cma-mega-es" and "me-es" have their own settings (sources in docs/algorithms.md) and plain
MAP-Elites archives (α = 1, threshold_min = −∞). So do the TD3-based "pga-me" and
"cma-mega-td3-es", which need a task with a policy whose rollouts return transitions
(``Task.policy``, ``Task.evaluate_transitions``: the locomotion tasks).

One name per meaning: a setting has the same name in Python (the recipe's field), on the
command line (``--set``) and in config files; the archive's α is ``archive_learning_rate``, an
evolution strategy's Adam step size ``es_learning_rate``, CMA-MEGA's step on θ
``optimizer_learning_rate``. Older runs' ``config.json`` used other names;
:func:`upgrade_settings` (the table :data:`RENAMED_SETTINGS`) reads them.

Every recipe with a ``noise`` setting draws its Gaussian noise with ``noise="auto"``: a noise
table or ``jax.random.normal``, whichever :func:`cmamae.es.resolve_noise` measured faster for
the numbers one draw takes (the resolved value is what :attr:`Algorithm.config` and a run's
``config.json`` record). Every evolution-strategy recipe runs its ψ instances with
``batching="auto"``: ``vmap`` or a sequential loop chosen from n and the ES by the measured rule
of :mod:`cmamae.emitters.evolution_strategy`; ``batching="vmap"`` or ``"map"`` overrides it.

Differences from pyribs worth knowing (all of them: docs/coming_from_pyribs.md): every
evolution-strategy recipe uses ``selection_rule="mu"`` (the best ⌊λ/2⌋ are recombined), so
"cma-me" is pyribs' ``cma_me_imp_mu`` configuration; pyribs' default CMA-ME uses "filter" (the
solutions the archive accepted), which ``selection_rule="filter"`` selects here too. Likewise
``restart_rule`` takes pyribs' "basic", "no_improvement" or an integer n (restart every n
iterations).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from cmamae import es as es_lib
from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter, GaussianEmitter, IsoLineEmitter
from cmamae.emitters.cma_mega_td3 import TD3ArborescenceEmitter, TD3ESGradient
from cmamae.emitters.gradient_arborescence import GradientArborescenceEmitter
from cmamae.emitters.gradients import ESGradient, ExactGradient
from cmamae.emitters.me_es import MEESEmitter, MEESSettings
from cmamae.emitters.pga_me import PGAMEEmitter, PGAMESettings
from cmamae.registry import Registry
from cmamae.rl import TD3, TD3Settings
from cmamae.scheduler import Scheduler

#: Recipe classes by algorithm name.
ALGORITHMS: Registry[type[Recipe]] = Registry("algorithm")

#: Settings renamed since older runs, old name -> current name: for every recipe (key None)
#: or for one recipe (key: its name). Read by :func:`upgrade_settings` only.
RENAMED_SETTINGS: dict[str | None, dict[str, str]] = {
    None: {
        "learning_rate": "archive_learning_rate",  # the archive's α
        "adam_lr": "es_learning_rate",  # OpenAI-ES's and ME-ES's Adam step size
        "step_size": "optimizer_learning_rate",  # CMA-MEGA's η, the step on θ
    },
    "pga-me": {"sigma0": "first_iteration_sigma"},  # σ of the first iteration's PG half
}
#: Settings that older versions listed for a recipe but never used, dropped when read.
UNUSED_SETTINGS: dict[str, tuple[str, ...]] = {
    "map-elites": ("iso_sigma", "line_sigma"),
    "map-elites-line": ("sigma",),
}


def _renames(name: str) -> dict[str, str]:
    return {**RENAMED_SETTINGS[None], **RENAMED_SETTINGS.get(name, {})}


def upgrade_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` of algorithm ``name`` with old setting names replaced by current ones
    (:data:`RENAMED_SETTINGS`) and never-used ones left out (:data:`UNUSED_SETTINGS`): how an
    older run's ``config.json`` is read."""
    renames = _renames(name)
    current = set(ALGORITHMS.get(name).setting_names())
    unused = set(UNUSED_SETTINGS.get(name, ())) - current
    return {
        renames[k] if k in renames and k not in current else k: v
        for k, v in settings.items()
        if k not in unused
    }


@dataclasses.dataclass(frozen=True)
class Recipe(abc.ABC):
    """One algorithm's settings (the dataclass fields, published values as defaults) and how
    they build a scheduler. Subclasses set :attr:`name` and register with :data:`ALGORITHMS`.

    Attributes:
        archive_learning_rate: α of the grid archive (1 = MAP-Elites, 0 = a single-objective
            optimizer's archive).
        threshold_min: the archive's lowest threshold; None: the task's ``min_f``.
    """

    archive_learning_rate: float = 1.0
    threshold_min: float | None = -math.inf

    #: the algorithm's registry name
    name: ClassVar[str] = ""
    #: per task domain (:attr:`cmamae.tasks.base.Task.domain`), the settings that differ from
    #: the field defaults
    by_domain: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def setting_names(cls) -> list[str]:
        """The recipe's settings, sorted."""
        return sorted(f.name for f in dataclasses.fields(cls))

    @classmethod
    def for_task(cls, task, **overrides) -> Recipe:
        """The recipe with the defaults of ``task.domain``, then ``overrides``, and
        ``threshold_min`` None made the task's ``min_f``.

        Raises:
            ValueError: one line naming the recipe and listing its settings, for an override
                that is not one of them (with the new name of a renamed one).
        """
        valid = cls.setting_names()
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            renames = _renames(cls.name)
            hints = [f"{k} is now {renames[k]}" for k in unknown if renames.get(k) in valid]
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise ValueError(
                f"unknown setting(s) {unknown} for algorithm {cls.name!r}{hint}; its settings "
                f"are {valid}"
            )
        recipe = cls(**{**cls.by_domain.get(task.domain, {}), **overrides})
        if recipe.threshold_min is None:
            recipe = dataclasses.replace(recipe, threshold_min=float(task.min_f))
        return recipe

    def resolved(self, task) -> Recipe:
        """The recipe with ``noise="auto"`` (if it has a noise setting) made the generator that
        :func:`cmamae.es.resolve_noise` picks for one draw of this recipe on ``task``."""
        noise = getattr(self, "noise", None)
        if noise is None:
            return self
        picked = es_lib.resolve_noise(noise, self._samples_per_draw(), task.solution_dim)
        return dataclasses.replace(self, noise=picked)

    def build(self, task) -> Scheduler:
        """The scheduler: a grid archive with the task's shape and ranges (QD-score offset
        ``task.min_f``) and this recipe's emitter."""
        archive = GridArchive(
            solution_dim=task.solution_dim,
            dims=task.archive_dims,
            ranges=task.measure_ranges,
            learning_rate=self.archive_learning_rate,
            threshold_min=self.threshold_min,
            qd_score_offset=float(task.min_f),
        )
        return Scheduler(archive=archive, emitters=(self._emitter(task),))

    @abc.abstractmethod
    def _emitter(self, task):
        """The recipe's emitter for ``task``."""

    @abc.abstractmethod
    def _samples_per_draw(self) -> int:
        """Noise vectors one emitter instance draws at a time (what ``noise="auto"`` weighs)."""


# ----------------------------------------------------------------------- evolution strategies
_ES_BENCHMARK = dict(num_emitters=15, popsize=36, sigma0=0.5)
_MAE_BENCHMARK = dict(_ES_BENCHMARK, archive_learning_rate=0.01)


@dataclasses.dataclass(frozen=True)
class ESRecipe(Recipe):
    """CMA-MAE with an evolution strategy (Fontaine & Nikolaidis 2023; the scaling paper's
    MAE variants, Tjanaka et al. 2023 section V-A). Defaults: REFERENCE.md "The paper's setup"
    (ψ = 5, λ = 40, σ₀ = 0.02, α = 0.001); domain "benchmark": ψ = 15, λ = 36, σ₀ = 0.5,
    α = 0.01 (REFERENCE.md "The CMA-MAE paper's benchmarks").

    Attributes:
        num_emitters: ψ, ES instances. popsize: λ, solutions per instance and iteration.
        sigma0: σ₀ of the ES. ranker, restart_rule, selection_rule, batching: of
            :class:`~cmamae.emitters.EvolutionStrategyEmitter`. noise: the ES's generator.
    """

    num_emitters: int = 5
    popsize: int = 40
    sigma0: float = 0.02
    archive_learning_rate: float = 0.001
    threshold_min: float | None = None
    ranker: str = "imp"
    restart_rule: str | int = "basic"
    selection_rule: str = "mu"  # pyribs' default is "filter"
    noise: str = "auto"
    batching: str = "auto"

    #: the evolution strategy's registry name (:func:`cmamae.es.get`)
    es: ClassVar[str] = ""
    by_domain = {"benchmark": _MAE_BENCHMARK}

    def _es_settings(self) -> dict[str, Any]:
        return dict(popsize=self.popsize, sigma0=self.sigma0, noise=self.noise)

    def _emitter(self, task):
        return EvolutionStrategyEmitter(
            strategy=es_lib.get(self.es, **self._es_settings()),
            num_emitters=self.num_emitters,
            ranker=self.ranker,
            restart_rule=self.restart_rule,
            selection_rule=self.selection_rule,
            batching=self.batching,
        )

    def _samples_per_draw(self) -> int:
        return self.popsize


@ALGORITHMS.register("cma-mae")
@dataclasses.dataclass(frozen=True)
class CMAMAE(ESRecipe):
    """CMA-MAE with CMA-ES (settings: :class:`ESRecipe`)."""

    name = "cma-mae"
    es = "cma-es"


@ALGORITHMS.register("sep-cma-mae")
@dataclasses.dataclass(frozen=True)
class SepCMAMAE(ESRecipe):
    """CMA-MAE with sep-CMA-ES (settings: :class:`ESRecipe`)."""

    name = "sep-cma-mae"
    es = "sep-cma-es"


@ALGORITHMS.register("lm-ma-mae")
@dataclasses.dataclass(frozen=True)
class LMMAMAE(ESRecipe):
    """CMA-MAE with LM-MA-ES; ``k``, its direction vectors, is λ (REFERENCE.md "The paper's
    setup": k = λ = 40; domain "benchmark": 36)."""

    k: int = 40

    name = "lm-ma-mae"
    es = "lm-ma-es"
    by_domain = {"benchmark": dict(_MAE_BENCHMARK, k=36)}

    def _es_settings(self) -> dict[str, Any]:
        return dict(super()._es_settings(), k=self.k)


@ALGORITHMS.register("openai-mae")
@dataclasses.dataclass(frozen=True)
class OpenAIMAE(ESRecipe):
    """CMA-MAE with OpenAI-ES: Adam step size ``es_learning_rate`` 0.01 and ``l2_coeff``
    0.005 (REFERENCE.md "The paper's setup")."""

    es_learning_rate: float = 0.01
    l2_coeff: float = 0.005

    name = "openai-mae"
    es = "openai-es"

    def _es_settings(self) -> dict[str, Any]:
        return dict(
            super()._es_settings(), learning_rate=self.es_learning_rate, l2_coeff=self.l2_coeff
        )


@ALGORITHMS.register("cma-me")
@dataclasses.dataclass(frozen=True)
class CMAME(ESRecipe):
    """CMA-ME (Fontaine et al. 2020): CMA-ES on a MAP-Elites archive (α = 1, threshold_min
    = −∞), two-stage improvement ranking, restart when no solution enters the archive."""

    archive_learning_rate: float = 1.0
    threshold_min: float | None = -math.inf
    ranker: str = "2imp"
    restart_rule: str | int = "no_improvement"

    name = "cma-me"
    es = "cma-es"
    by_domain = {"benchmark": _ES_BENCHMARK}


@ALGORITHMS.register("cma-es")
@dataclasses.dataclass(frozen=True)
class CMAESRecipe(ESRecipe):
    """Plain CMA-ES instances (α = 0: the archive records, it never anneals)."""

    archive_learning_rate: float = 0.0

    name = "cma-es"
    es = "cma-es"
    by_domain = {"benchmark": _ES_BENCHMARK}


# ----------------------------------------------------------------------------- MAP-Elites
@ALGORITHMS.register("map-elites")
@dataclasses.dataclass(frozen=True)
class MAPElites(Recipe):
    """MAP-Elites with Gaussian mutation: σ = 0.02, batch 100 (REFERENCE.md "The paper's
    setup"); domain "benchmark": σ = 0.5, batch 540 (the CMA-MAE paper as pyribs'
    ``examples/sphere.py`` runs it).

    Attributes:
        sigma: σ of the Gaussian mutation, in solution units.
        batch_size: solutions per iteration (the emitter's ``num_solutions``).
        noise: the mutation's noise generator ("auto", "table" or "normal").
    """

    sigma: float = 0.02
    batch_size: int = 100
    noise: str = "auto"

    name = "map-elites"
    by_domain = {"benchmark": dict(sigma=0.5, batch_size=540)}

    def _emitter(self, task):
        return GaussianEmitter(sigma=self.sigma, num_solutions=self.batch_size, noise=self.noise)

    def _samples_per_draw(self) -> int:
        return self.batch_size


@ALGORITHMS.register("map-elites-line")
@dataclasses.dataclass(frozen=True)
class MAPElitesLine(Recipe):
    """MAP-Elites with iso+line mutation (Vassiliades & Mouret 2018): σ₁ = 0.02, σ₂ = 0.2,
    batch 100; domain "benchmark": σ₁ = 0.5, σ₂ = 0.2, batch 540 (pyribs'
    ``examples/sphere.py``).

    Attributes:
        iso_sigma, line_sigma: σ₁ of the isotropic Gaussian term and σ₂ of the term along the
            line between two elites.
        batch_size: solutions per iteration (the emitter's ``num_solutions``).
        noise: the operator's noise generator ("auto", "table" or "normal").
    """

    iso_sigma: float = 0.02
    line_sigma: float = 0.2
    batch_size: int = 100
    noise: str = "auto"

    name = "map-elites-line"
    by_domain = {"benchmark": dict(iso_sigma=0.5, line_sigma=0.2, batch_size=540)}

    def _emitter(self, task):
        return IsoLineEmitter(
            iso_sigma=self.iso_sigma,
            line_sigma=self.line_sigma,
            num_solutions=self.batch_size,
            noise=self.noise,
        )

    def _samples_per_draw(self) -> int:
        return self.batch_size


# ---------------------------------------------------------------- gradient-based baselines
@ALGORITHMS.register("cma-mega")
@dataclasses.dataclass(frozen=True)
class CMAMEGA(Recipe):
    """CMA-MEGA with exact gradients (Fontaine & Nikolaidis 2021), for tasks whose
    ``evaluate`` is differentiable (``Task.differentiable``). Defaults: dqd-rl's
    ``cma_mega_es.gin`` (one instance, 99 branches, σ_g = 1.0, gradient ascent with
    η = 1.0); domain "benchmark": pyribs' ``examples/sphere.py`` config "cma_mega" (ψ = 15,
    λ = 35, σ_g = 10). Sources per value: docs/algorithms.md.

    Attributes:
        num_emitters: ψ. popsize: λ, branches per instance. sigma0: σ_g of the coefficient
            CMA-ES. optimizer, optimizer_learning_rate: θ's optimizer and its η.
        ranker, restart_rule: of the arborescence emitter.
    """

    num_emitters: int = 1
    popsize: int = 99
    sigma0: float = 1.0
    optimizer: str = "gradient_ascent"
    optimizer_learning_rate: float = 1.0
    ranker: str = "2imp"
    restart_rule: str | int = "no_improvement"

    name = "cma-mega"
    by_domain = {"benchmark": dict(num_emitters=15, popsize=35, sigma0=10.0)}

    def _arborescence(self, task) -> dict[str, Any]:
        """The gradient-arborescence emitter's settings shared by every CMA-MEGA recipe."""
        return dict(
            strategy=es_lib.CMAES(popsize=self.popsize, sigma0=self.sigma0, noise="normal"),
            measure_dim=task.measure_dim,
            num_emitters=self.num_emitters,
            ranker=self.ranker,
            restart_rule=self.restart_rule,
            optimizer=self.optimizer,
            learning_rate=self.optimizer_learning_rate,
        )

    def _emitter(self, task):
        if not task.differentiable:
            raise ValueError(
                f"task: {self.name} needs exact gradients of the objective and measures, which "
                f"task {task.name!r} does not provide (Task.differentiable is False; the "
                "benchmark tasks provide them; use cma-mega-es)"
            )
        return GradientArborescenceEmitter(
            source=ExactGradient(task.evaluate), **self._arborescence(task)
        )

    def _samples_per_draw(self) -> int:
        return 0  # exact gradients: no noise is drawn


@ALGORITHMS.register("cma-mega-es")
@dataclasses.dataclass(frozen=True)
class CMAMEGAES(CMAMEGA):
    """CMA-MEGA (ES) (Tjanaka et al. 2022): :class:`CMAMEGA` with OpenAI-ES gradient
    estimates of ``es_samples`` = 100 mirrored samples of σ ``es_sigma`` = 0.02 (dqd-rl
    ``sample_batch_size``, ``sample_sigma``); ``noise`` is the estimates' noise generator
    ("auto", "table" or "normal")."""

    es_samples: int = 100
    es_sigma: float = 0.02
    noise: str = "auto"

    name = "cma-mega-es"

    def _gradient(self) -> ESGradient:
        return ESGradient(samples=self.es_samples, sigma=self.es_sigma, noise=self.noise)

    def _emitter(self, task):
        return GradientArborescenceEmitter(source=self._gradient(), **self._arborescence(task))

    def _samples_per_draw(self) -> int:
        return self.es_samples


def _fields_of(settings_class, obj) -> dict[str, Any]:
    """``obj``'s values of the fields of the dataclass ``settings_class``, a base of its class."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(settings_class)}


@ALGORITHMS.register("me-es")
@dataclasses.dataclass(frozen=True)
class MEES(Recipe, MEESSettings):
    """ME-ES (Colas et al. 2020) as dqd-rl ran it: 200 samples (REFERENCE.md "The paper's
    setup"), σ = 0.02, Adam step size 0.01 with L2 0.005, novelty of the 10 nearest of up to
    5,000 archived measures, 10 generations per start (docs/algorithms.md, "me-es").
    Settings: :class:`~cmamae.emitters.MEESSettings` (the emitter's, same names) and ``noise``,
    the samples' noise generator ("auto", "table" or "normal")."""

    noise: str = "auto"

    name = "me-es"

    def _emitter(self, task):
        return MEESEmitter(
            measure_dim=task.measure_dim, noise=self.noise, **_fields_of(MEESSettings, self)
        )

    def _samples_per_draw(self) -> int:
        return self.es_samples


# --------------------------------------------------------------------- TD3-based baselines
@dataclasses.dataclass(frozen=True)
class TD3RecipeSettings(TD3Settings):
    """The settings of the TD3-based recipes: TD3's learning settings
    (:class:`cmamae.rl.TD3Settings`, the same names), ``td3_batch_size`` (TD3's ``batch_size``,
    transitions per critic update: 256) and ``buffer_size``, the replay capacity in transitions
    (1,000,000), as PGA-ME's paper (Nilsson & Cully 2021) and dqd-rl's ``td3.gin``."""

    buffer_size: int = 1_000_000
    td3_batch_size: int = 256

    def _td3(self, task) -> TD3:
        if task.policy is None or task.evaluate_transitions is None:
            raise ValueError(
                f"task: {self.name} trains a TD3 critic on the rollouts' transitions of a "
                f"policy; task {task.name!r} has no policy rollouts (use a locomotion task: "
                "ant, halfcheetah, hopper, walker2d)"
            )
        return TD3(task.policy, batch_size=self.td3_batch_size, **_fields_of(TD3Settings, self))


@ALGORITHMS.register("pga-me")
@dataclasses.dataclass(frozen=True)
class PGAME(Recipe, TD3RecipeSettings, PGAMESettings):
    """PGA-ME (Nilsson & Cully 2021) as the scaling paper's baseline run (dqd-rl
    ``pga_me.gin``): batch 100, half iso+line (σ₁ = 0.005, σ₂ = 0.05), half 10 policy-gradient
    steps of lr 1e-3 on batches of 256, 300 critic steps; ``first_iteration_sigma`` = 0.02 is
    the σ of the policy-gradient half while the archive is empty (dqd-rl
    ``PGAEmitter.sigma0``). Settings: ``batch_size`` (the emitter's ``num_solutions``),
    ``noise``, :class:`~cmamae.emitters.PGAMESettings` and :class:`TD3RecipeSettings`.
    Sources per value: docs/algorithms.md."""

    batch_size: int = 100
    noise: str = "auto"

    name = "pga-me"

    def _emitter(self, task):
        return PGAMEEmitter(
            td3=self._td3(task),
            num_solutions=self.batch_size,
            buffer_size=self.buffer_size,
            noise=self.noise,
            **_fields_of(PGAMESettings, self),
        )

    def _samples_per_draw(self) -> int:
        return self.batch_size


@ALGORITHMS.register("cma-mega-td3-es")
@dataclasses.dataclass(frozen=True)
class CMAMEGATD3ES(CMAMEGAES, TD3RecipeSettings):
    """CMA-MEGA (TD3, ES) (Tjanaka et al. 2022), dqd-rl's ``cma_mega_td3_es.gin``: one
    instance, 98 branches plus the greedy actor (``greedy``), 600 critic steps
    (``critic_steps``), the TD3 critic's objective gradient on ``gradient_states`` = 65,536
    replay states. Other settings: :class:`CMAMEGAES`, :class:`TD3RecipeSettings`."""

    popsize: int = 98
    greedy: bool = True
    critic_steps: int = 600
    gradient_states: int = 65_536

    name = "cma-mega-td3-es"
    by_domain = {}

    def _emitter(self, task):
        source = TD3ESGradient(
            td3=self._td3(task),
            es=self._gradient(),
            gradient_states=self.gradient_states,
            critic_steps=self.critic_steps,
            buffer_size=self.buffer_size,
        )
        return TD3ArborescenceEmitter(source=source, greedy=self.greedy, **self._arborescence(task))


# --------------------------------------------------------------------------- by name
def names() -> list[str]:
    """Algorithm names accepted by :func:`get`, sorted."""
    return ALGORITHMS.names()


def recipe(name: str, task, **overrides) -> Recipe:
    """Algorithm ``name``'s recipe for ``task``: its domain's defaults, then ``overrides``.

    Raises ValueError (one line) for an unknown name (listing the names) or an override that
    is not one of its settings (naming the recipe and listing its settings)."""
    return ALGORITHMS.get(name).for_task(task, **overrides)


def defaults(name: str, task) -> dict[str, Any]:
    """Every setting of algorithm ``name`` on ``task`` with its default value."""
    return dataclasses.asdict(recipe(name, task))


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A named algorithm with its resolved settings and the scheduler they build.

    Attributes:
        name: the registry name.
        settings: ``(name, value)`` pairs, sorted: every setting, ``noise`` resolved.
        scheduler: what the settings build.
        recipe: the resolved :class:`Recipe` (None for a hand-made algorithm).
    """

    name: str
    settings: tuple[tuple[str, Any], ...]
    scheduler: Scheduler
    recipe: Recipe | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The settings as a dict (what a run's config records)."""
        return dict(self.settings)


def get(name: str, task, **overrides) -> Algorithm:
    """Algorithm ``name`` on ``task`` with its domain's published defaults and ``overrides``.

    Raises ValueError for an unknown name or an override that is not one of its settings.
    """
    resolved = recipe(name, task, **overrides).resolved(task)
    return Algorithm(
        name=name,
        settings=tuple(sorted(dataclasses.asdict(resolved).items())),
        scheduler=resolved.build(task),
        recipe=resolved,
    )
