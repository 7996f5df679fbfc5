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

Every evolution-strategy recipe runs its ψ instances with ``batching="auto"``: ``vmap`` or a
sequential loop chosen from n and the ES by the measured rule of
:mod:`cmamae.emitters.evolution_strategy` (``vmap`` for the n = 100 benchmark domains, the
loop for locomotion-sized policies); ``batching="vmap"`` or ``"map"`` overrides it.

Differences from pyribs worth knowing: "cma-me" uses selection rule "mu" (pyribs' ``cma_me_imp_mu``
configuration) because our strategies always recombine the best ⌊λ/2⌋; pyribs' default CMA-ME
uses "filter" (μ = number of solutions added).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cmamae import es as es_lib
from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter, GaussianEmitter, IsoLineEmitter
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
}

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
_COMMON_DEFAULTS = dict(noise="table", batching="auto")


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
            batching=settings["batching"],
        )
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
