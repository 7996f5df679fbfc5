"""Named QD algorithms: recipes that turn a task into a :class:`~cmamae.scheduler.Scheduler`.

``algorithms.get("sep-cma-mae", task, sigma0=0.05)`` builds the archive (a grid with the task's
shape and ranges, ``threshold_min`` = ``qd_score_offset`` = the task's ``min_f``) and the emitters
with the published defaults for the task's domain, overridden by keywords:

* locomotion and every other task: the scaling paper (Tjanaka et al. 2023, section V-A;
  REFERENCE.md): ψ = 5 emitters, λ = 40, σ₀ = 0.02, α = 0.001, LM-MA-ES k = λ, OpenAI-ES Adam
  lr 0.01 with L2 0.005, MAP-Elites σ = 0.02 with batch 100;
* the benchmark domains "sphere", "rastrigin", "plateau", "arm": the CMA-MAE paper (Fontaine &
  Nikolaidis 2023) as pyribs' ``examples/sphere.py`` configures it: ψ = 15, λ = 36, σ₀ = 0.5,
  α = 0.01, MAP-Elites σ = 0.5 (line: iso 0.5, line 0.2) with batch 540.

The gradient-based baselines "cma-mega" (exact gradients; benchmark domains only),
"cma-mega-es" and "me-es" have their own settings per domain (``_FAMILY_DEFAULTS``; sources in
docs/algorithms.md) and plain MAP-Elites archives (α = 1, threshold_min = −∞). So do the
TD3-based "pga-me" and "cma-mega-td3-es", which need a task with a policy whose rollouts return
transitions (``Task.policy``, ``Task.evaluate_transitions``: the locomotion tasks).

Every recipe draws its Gaussian noise with ``noise="auto"``: a noise table or
``jax.random.normal``, whichever :func:`cmamae.es.resolve_noise` measured faster for the
numbers one draw takes (the resolved value is what :attr:`Algorithm.config` and a run's
``config.json`` record). Every evolution-strategy recipe runs its ψ instances with
``batching="auto"``: ``vmap`` or a
sequential loop chosen from n and the ES by the measured rule of
:mod:`cmamae.emitters.evolution_strategy` (``vmap`` for the n = 100 benchmark domains, the
loop for locomotion-sized policies); ``batching="vmap"`` or ``"map"`` overrides it.

Differences from pyribs worth knowing (all of them: docs/coming_from_pyribs.md): every
evolution-strategy recipe uses ``selection_rule="mu"`` (the best ⌊λ/2⌋ are recombined), so
"cma-me" is pyribs' ``cma_me_imp_mu`` configuration; pyribs' default CMA-ME uses "filter" (the
solutions the archive accepted), which ``selection_rule="filter"`` selects here too. Likewise
``restart_rule`` takes pyribs' "basic", "no_improvement" or an integer n (restart every n
iterations).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cmamae import es as es_lib
from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter, GaussianEmitter, IsoLineEmitter
from cmamae.emitters.cma_mega_td3 import TD3ArborescenceEmitter, TD3ESGradient
from cmamae.emitters.gradient_arborescence import GradientArborescenceEmitter
from cmamae.emitters.gradients import ESGradient, ExactGradient
from cmamae.emitters.me_es import MEESEmitter
from cmamae.emitters.pga_me import PGAMEEmitter
from cmamae.rl import TD3
from cmamae.scheduler import Scheduler

BENCHMARK_TASKS = frozenset({"sphere", "rastrigin", "plateau", "arm"})

# name -> (emitter family, ES name, archive learning rate α or None for the domain default,
#          ranker, restart rule, whether threshold_min is the task's min_f (else −inf))
_RECIPES: dict[str, dict[str, Any]] = {
    "cma-mae": dict(family="es", es="cma-es", ranker="imp", restart_rule="basic"),
    "sep-cma-mae": dict(family="es", es="sep-cma-es", ranker="imp", restart_rule="basic"),
    "lm-ma-mae": dict(family="es", es="lm-ma-es", ranker="imp", restart_rule="basic"),
    "openai-mae": dict(family="es", es="openai-es", ranker="imp", restart_rule="basic"),
    "cma-me": dict(
        family="es",
        es="cma-es",
        ranker="2imp",
        restart_rule="no_improvement",
        learning_rate=1.0,
        threshold_min=-math.inf,
    ),
    "cma-es": dict(family="es", es="cma-es", ranker="imp", restart_rule="basic", learning_rate=0.0),
    "map-elites": dict(family="gaussian", learning_rate=1.0, threshold_min=-math.inf),
    "map-elites-line": dict(family="iso-line", learning_rate=1.0, threshold_min=-math.inf),
    # Gradient-based baselines: plain MAP-Elites archives (α = 1), as in their papers.
    "cma-mega": dict(
        family="arborescence", source="exact", learning_rate=1.0, threshold_min=-math.inf
    ),
    "cma-mega-es": dict(
        family="arborescence", source="es", learning_rate=1.0, threshold_min=-math.inf
    ),
    "me-es": dict(family="me-es", learning_rate=1.0, threshold_min=-math.inf),
    # TD3-based baselines (need a policy task whose rollouts return transitions).
    "pga-me": dict(family="pga-me", learning_rate=1.0, threshold_min=-math.inf),
    "cma-mega-td3-es": dict(family="td3-arborescence", learning_rate=1.0, threshold_min=-math.inf),
}

# Settings of the gradient-based families (docs/algorithms.md gives the sources): per
# family, per domain. CMA-MEGA: pyribs' sphere example ("cma_mega") on the benchmark domains,
# dqd-rl's cma_mega_es.gin on the others; ME-ES: Colas et al.'s code as dqd-rl ran it.
_ARBORESCENCE = dict(
    sigma0=1.0,
    step_size=1.0,
    optimizer="gradient_ascent",
    ranker="2imp",
    restart_rule="no_improvement",
    es_samples=100,
    es_sigma=0.02,
)
_FAMILY_DEFAULTS = {
    "arborescence": {
        "scaling": dict(_ARBORESCENCE, num_emitters=1, popsize=99),
        "benchmark": dict(_ARBORESCENCE, num_emitters=15, popsize=35, sigma0=10.0),
    },
    "me-es": dict.fromkeys(
        ("scaling", "benchmark"),
        dict(
            num_emitters=1,
            es_samples=200,
            es_sigma=0.02,
            adam_lr=0.01,
            l2_coeff=0.005,
            novelty_k=10,
            steps_per_start=10,
            novelty_capacity=5000,
        ),
    ),
}
# TD3 as PGA-ME's paper (Nilsson & Cully 2021, table of hyperparameters) and dqd-rl's td3.gin.
_TD3 = dict(
    buffer_size=1_000_000,
    td3_batch_size=256,
    critic_lr=3e-4,
    actor_lr=3e-4,
    discount=0.99,
    tau=0.005,
    policy_noise=0.2,
    noise_clip=0.5,
    policy_delay=2,
)
_FAMILY_DEFAULTS["pga-me"] = dict.fromkeys(
    ("scaling", "benchmark"),
    dict(
        _TD3,
        batch_size=100,
        proportion_ga=0.5,
        iso_sigma=0.005,
        line_sigma=0.05,
        critic_steps=300,
        pg_steps=10,
        pg_lr=1e-3,
        pg_batch_size=256,
        greedy=True,
        sigma0=0.02,
    ),
)
# dqd-rl's cma_mega_td3_es.gin: one instance, 98 branches + the greedy actor, 600 critic steps.
_FAMILY_DEFAULTS["td3-arborescence"] = dict.fromkeys(
    ("scaling", "benchmark"),
    dict(
        _ARBORESCENCE,
        **_TD3,
        num_emitters=1,
        popsize=98,
        greedy=True,
        critic_steps=600,
        gradient_states=65_536,
    ),
)

_DOMAIN_DEFAULTS = {
    "scaling": dict(
        num_emitters=5,
        popsize=40,
        sigma0=0.02,
        learning_rate=0.001,
        k=40,
        adam_lr=0.01,
        l2_coeff=0.005,
        batch_size=100,
        sigma=0.02,
        iso_sigma=0.02,
        line_sigma=0.2,
    ),
    "benchmark": dict(
        num_emitters=15,
        popsize=36,
        sigma0=0.5,
        learning_rate=0.01,
        k=36,
        adam_lr=0.01,
        l2_coeff=0.005,
        batch_size=540,
        sigma=0.5,
        iso_sigma=0.5,
        line_sigma=0.2,
    ),
}
_COMMON_DEFAULTS = dict(noise="auto", batching="auto")


def names() -> list[str]:
    """Algorithm names accepted by :func:`get`."""
    return list(_RECIPES)


def _domain(task) -> str:
    return "benchmark" if task.name in BENCHMARK_TASKS else "scaling"


def defaults(name: str, task) -> dict[str, Any]:
    """Every setting of algorithm ``name`` on ``task`` with its default value."""
    if name not in _RECIPES:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {names()}")
    recipe = _RECIPES[name]
    if recipe["family"] in _FAMILY_DEFAULTS:
        settings = dict(_FAMILY_DEFAULTS[recipe["family"]][_domain(task)], noise="auto")
        settings.update(
            learning_rate=recipe["learning_rate"], threshold_min=recipe["threshold_min"]
        )
        if recipe.get("source") == "exact":
            settings.pop("es_samples")
            settings.pop("es_sigma")
            settings.pop("noise")
        return settings
    settings = dict(_DOMAIN_DEFAULTS[_domain(task)], **_COMMON_DEFAULTS)
    settings["threshold_min"] = float(task.min_f)
    for key in ("learning_rate", "threshold_min", "ranker", "restart_rule"):
        if key in recipe:
            settings[key] = recipe[key]
    if recipe["family"] != "es":
        for key in (
            "num_emitters",
            "popsize",
            "sigma0",
            "k",
            "adam_lr",
            "l2_coeff",
            "batching",
            "ranker",
            "restart_rule",
        ):
            settings.pop(key, None)
    else:
        settings["selection_rule"] = "mu"  # pyribs' default is "filter"
        for key in ("batch_size", "sigma", "iso_sigma", "line_sigma"):
            settings.pop(key)
        if recipe["es"] != "lm-ma-es":
            settings.pop("k")
        if recipe["es"] != "openai-es":
            settings.pop("adam_lr")
            settings.pop("l2_coeff")
    return settings


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A named algorithm with its resolved settings and the scheduler they build."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    scheduler: Scheduler

    @property
    def config(self) -> dict[str, Any]:
        """The settings as a dict (what a run's config records)."""
        return dict(self.settings)


def get(name: str, task, **overrides) -> Algorithm:
    """Algorithm ``name`` on ``task`` with the domain's published defaults and ``overrides``.

    Raises ValueError for an unknown name or an override that is not one of its settings.
    """
    settings = defaults(name, task)
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown} for algorithm {name!r}; expected some of "
            f"{sorted(settings)}"
        )
    settings.update(overrides)
    recipe = _RECIPES[name]
    if "noise" in settings:  # "auto" becomes the generator it picks (recorded as such)
        settings["noise"] = es_lib.resolve_noise(
            settings["noise"], _samples_per_draw(recipe["family"], settings), task.solution_dim
        )
    archive = GridArchive(
        solution_dim=task.solution_dim,
        dims=task.archive_dims,
        ranges=task.measure_ranges,
        learning_rate=settings["learning_rate"],
        threshold_min=settings["threshold_min"],
        qd_score_offset=float(task.min_f),
    )
    if recipe["family"] == "es":
        es_settings = dict(
            popsize=settings["popsize"], sigma0=settings["sigma0"], noise=settings["noise"]
        )
        if "k" in settings:
            es_settings["k"] = settings["k"]
        if "adam_lr" in settings:
            es_settings.update(learning_rate=settings["adam_lr"], l2_coeff=settings["l2_coeff"])
        emitter = EvolutionStrategyEmitter(
            strategy=es_lib.get(recipe["es"], **es_settings),
            num_emitters=settings["num_emitters"],
            ranker=settings["ranker"],
            restart_rule=settings["restart_rule"],
            selection_rule=settings["selection_rule"],
            batching=settings["batching"],
        )
    elif recipe["family"] in ("pga-me", "td3-arborescence"):
        emitter = _td3_emitter(name, task, settings)
    elif recipe["family"] in _FAMILY_DEFAULTS:
        emitter = _gradient_emitter(name, task, settings)
    elif recipe["family"] == "gaussian":
        emitter = GaussianEmitter(
            sigma=settings["sigma"], num_solutions=settings["batch_size"], noise=settings["noise"]
        )
    else:
        emitter = IsoLineEmitter(
            iso_sigma=settings["iso_sigma"],
            line_sigma=settings["line_sigma"],
            num_solutions=settings["batch_size"],
            noise=settings["noise"],
        )
    scheduler = Scheduler(archive=archive, emitters=(emitter,))
    return Algorithm(name=name, settings=tuple(sorted(settings.items())), scheduler=scheduler)


def _samples_per_draw(family: str, s: dict[str, Any]) -> int:
    """Noise vectors one emitter instance draws at a time (what ``noise="auto"`` weighs)."""
    if family == "es":
        return s["popsize"]
    if family in ("gaussian", "iso-line", "pga-me"):
        return s["batch_size"]
    return s["es_samples"]


def _gradient_emitter(name: str, task, s: dict[str, Any]):
    """The emitter of a gradient-based recipe ("arborescence" or "me-es" family)."""
    if _RECIPES[name]["family"] == "me-es":
        return MEESEmitter(
            measure_dim=task.measure_dim,
            samples=s["es_samples"],
            sigma=s["es_sigma"],
            learning_rate=s["adam_lr"],
            l2_coeff=s["l2_coeff"],
            k=s["novelty_k"],
            steps_per_start=s["steps_per_start"],
            num_emitters=s["num_emitters"],
            novelty_capacity=s["novelty_capacity"],
            noise=s["noise"],
        )
    if _RECIPES[name]["source"] == "exact":
        if _domain(task) != "benchmark":
            raise ValueError(
                f"task: {name} needs exact gradients of the objective and measures, which only "
                f"the benchmark tasks {sorted(BENCHMARK_TASKS)} provide; got {task.name!r} "
                "(use cma-mega-es)"
            )
        source = ExactGradient(task.evaluate)
    else:
        source = ESGradient(samples=s["es_samples"], sigma=s["es_sigma"], noise=s["noise"])
    return GradientArborescenceEmitter(source=source, **_arborescence_settings(task, s))


def _arborescence_settings(task, s: dict[str, Any]) -> dict[str, Any]:
    """The gradient-arborescence emitter's settings shared by every CMA-MEGA recipe."""
    return dict(
        strategy=es_lib.CMAES(popsize=s["popsize"], sigma0=s["sigma0"], noise="normal"),
        measure_dim=task.measure_dim,
        num_emitters=s["num_emitters"],
        ranker=s["ranker"],
        restart_rule=s["restart_rule"],
        optimizer=s["optimizer"],
        learning_rate=s["step_size"],
    )


def _td3_emitter(name: str, task, s: dict[str, Any]):
    """The emitter of a TD3-based recipe: PGA-ME or CMA-MEGA (TD3, ES)."""
    if task.policy is None or task.evaluate_transitions is None:
        raise ValueError(
            f"task: {name} trains a TD3 critic on the rollouts' transitions of a policy; "
            f"task {task.name!r} has no policy rollouts (use a locomotion task: ant, "
            "halfcheetah, hopper, walker2d)"
        )
    td3 = TD3(
        task.policy,
        critic_lr=s["critic_lr"],
        actor_lr=s["actor_lr"],
        discount=s["discount"],
        tau=s["tau"],
        policy_noise=s["policy_noise"],
        noise_clip=s["noise_clip"],
        policy_delay=s["policy_delay"],
        batch_size=s["td3_batch_size"],
    )
    if _RECIPES[name]["family"] == "pga-me":
        return PGAMEEmitter(
            td3=td3,
            num_solutions=s["batch_size"],
            proportion_ga=s["proportion_ga"],
            iso_sigma=s["iso_sigma"],
            line_sigma=s["line_sigma"],
            pg_steps=s["pg_steps"],
            pg_lr=s["pg_lr"],
            pg_batch_size=s["pg_batch_size"],
            critic_steps=s["critic_steps"],
            buffer_size=s["buffer_size"],
            greedy=s["greedy"],
            sigma0=s["sigma0"],
            noise=s["noise"],
        )
    source = TD3ESGradient(
        td3=td3,
        es=ESGradient(samples=s["es_samples"], sigma=s["es_sigma"], noise=s["noise"]),
        gradient_states=s["gradient_states"],
        critic_steps=s["critic_steps"],
        buffer_size=s["buffer_size"],
    )
    return TD3ArborescenceEmitter(
        source=source, greedy=s["greedy"], **_arborescence_settings(task, s)
    )
