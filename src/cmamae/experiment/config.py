"""A run's configuration: what to run, on what, for how long; presets; config files; ``--set``.

A :class:`RunConfig` is plain data (JSON-friendly), validated in full by :meth:`RunConfig.build`
before any work starts: unknown task, algorithm, preset or setting names list the valid ones.
Config files are TOML or YAML (``yaml.safe_load``); ``--set key=value`` values are parsed as
Python literals (``ast.literal_eval``), never evaluated, and kept as strings otherwise.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from cmamae import algorithms, tasks, validate
from cmamae.compiled_loop import evaluate_fn
from cmamae.tasks.locomotion import resolved_settings

DEFAULT_TASK = "arm"
DEFAULT_ALGO = "sep-cma-mae"
# The no-argument run: about a minute on 2 CPU cores (both seeds in one compiled program).
DEFAULT_ITERATIONS = 2_000
DEFAULT_SEEDS = 2
TASK_PREFIX = "task."


class ConfigError(ValueError):
    """A bad run configuration (the message names the setting and what was expected)."""


def _presets(domain: str, batch_size: int) -> dict[str, dict[str, Any]]:
    """Preset name -> the config values it sets, for a task of ``domain`` (``Task.domain``)
    and the algorithm's batch."""
    benchmark = domain == "benchmark"
    return {
        # The papers' budgets, the same for every algorithm: the CMA-MAE paper's 10,000
        # iterations of 15 x 36 = 540 evaluations and 20 trials on the benchmark domains; the
        # scaling paper's 1,000,000 evaluations and 5 trials elsewhere (REFERENCE.md).
        # Algorithm settings are the recipes' defaults, which are the papers'.
        "paper": dict(evals=10_000 * 540, seeds=20)
        if benchmark
        else dict(evals=1_000_000, seeds=5),
        # A few iterations: checks that everything runs.
        "smoke": dict(evals=20 * batch_size, seeds=2),
    }


def preset_names() -> list[str]:
    """Names accepted by ``preset``."""
    return sorted(_presets("benchmark", 1))


def parse_value(text: str) -> Any:
    """A ``--set`` value: a Python literal (number, bool, None, tuple, list, quoted string),
    else the text itself (``ranker=imp``). Never evaluates code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: parse_value(v)}``; a ConfigError for an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
            import tomli as tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {os.fspath(path)!r}: {err}") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML config files need PyYAML: pip install pyyaml") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {os.fspath(path)!r}: {err}") from None
    else:
        raise ConfigError(f"config file must end in .toml, .yaml or .yml, got {path.name!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {os.fspath(path)!r} must hold a table of settings")
    return data


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a run (``config.json`` of the run folder holds it).

    Attributes:
        task: task registry name; ``task_settings``: its overrides (``tasks.get``).
        algo: algorithm name; ``settings``: overrides of its defaults (``algorithms.get``).
        evals: evaluations per seed, in whole iterations (``evals // e`` of them, ``e`` the
            scheduler's ``evaluations_per_iteration``);
            None for the default budget.
        seeds: independent runs, all in one compiled program; ``seed``: the base PRNG seed.
        preset: a named budget (:func:`preset_names`), applied under explicit values.
        checkpoint_every: iterations between checkpoints (None: a tenth of the run).
        log_every: iterations between metrics rows (None: about 200 rows per seed).
        chunk: iterations per compiled call, between which the host logs and draws progress
            (None: as many as fit in a checkpoint interval, at most 100; 1 for host tasks).
        name: the run folder's name under the output root (None: ``<task>-<algo>``).
    """

    task: str = DEFAULT_TASK
    algo: str = DEFAULT_ALGO
    evals: int | None = None
    seeds: int | None = None
    seed: int = 0
    preset: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint_every: int | None = None
    log_every: int | None = None
    chunk: int | None = None
    name: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a config file's table; unknown keys are an error listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; expected any of {sorted(valid)}")
        return cls(**data)

    def with_assignments(self, assignments: dict[str, Any]) -> RunConfig:
        """``--set`` values: ``task.<name>`` goes to the task, every other key to the
        algorithm's settings (checked against the valid names by :meth:`build`)."""
        settings, task_settings = dict(self.settings), dict(self.task_settings)
        for key, value in assignments.items():
            if key.startswith(TASK_PREFIX):
                task_settings[key[len(TASK_PREFIX) :]] = value
            else:
                settings[key] = value
        return dataclasses.replace(self, settings=settings, task_settings=task_settings)

    def build(self) -> ResolvedRun:
        """Validate everything and resolve defaults; raises ConfigError naming what is wrong."""
        if self.task not in tasks.names():
            raise ConfigError(f"unknown task {self.task!r}; expected one of {tasks.names()}")
        if self.algo not in algorithms.names():
            raise ConfigError(
                f"unknown algorithm {self.algo!r}; expected one of {algorithms.names()}"
            )
        try:
            task = tasks.get(self.task, **self.task_settings)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"task settings: {err}") from None
        if task.measure_dim == 0:
            # The other names, not built: building every task would load each MJX model and
            # fail on tasks whose optional dependencies are missing.
            others = [n for n in tasks.names() if n != self.task]
            raise ConfigError(
                f"task {self.task!r} has no measures, so it has no archive to fill; pick "
                f"another task: {others}"
            )
        try:
            algo = algorithms.get(self.algo, task, **self.settings)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"algorithm settings: {err}") from None
        try:
            evaluate_fn(algo.scheduler, task, repr(self.algo))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        batch = algo.scheduler.evaluations_per_iteration

        evals, seeds = self.evals, self.seeds
        if self.preset is not None:
            presets = _presets(task.domain, batch)
            if self.preset not in presets:
                raise ConfigError(
                    f"unknown preset {self.preset!r}; expected one of {preset_names()}"
                )
            evals = presets[self.preset]["evals"] if evals is None else evals
            seeds = presets[self.preset]["seeds"] if seeds is None else seeds
        evals = DEFAULT_ITERATIONS * batch if evals is None else evals
        seeds = DEFAULT_SEEDS if seeds is None else seeds
        one_iteration = f"an integer >= one iteration of {self.algo!r} ({batch} evaluations)"
        validate.integer("evals", evals, batch, expected=one_iteration, error=ConfigError)
        validate.integer("seeds", seeds, 1, error=ConfigError)
        validate.integer("seed", self.seed, 0, error=ConfigError)
        iterations = evals // batch
        checkpoint_every = self.checkpoint_every or max(1, math.ceil(iterations / 10))
        validate.integer("checkpoint_every", checkpoint_every, 1, error=ConfigError)
        log_every = self.log_every or max(1, iterations // 200)
        validate.integer("log_every", log_every, 1, error=ConfigError)
        # A host task's iteration is long (episodes on workers): report after every one.
        chunk = self.chunk or (1 if task.host_evaluated else min(checkpoint_every, 100))
        validate.integer("chunk", chunk, 1, error=ConfigError)
        if chunk > checkpoint_every:
            raise ConfigError(
                f"chunk ({chunk}) must not exceed checkpoint_every ({checkpoint_every}): a "
                "checkpoint can only be written between compiled chunks"
            )
        return ResolvedRun(
            config=self,
            task=task,
            algorithm=algo,
            evals=iterations * batch,
            evals_requested=evals,
            seeds=seeds,
            iterations=iterations,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            chunk=chunk,
            name=self.name or f"{self.task}-{self.algo}",
        )


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """A validated :class:`RunConfig` with every default filled in and the objects built.

    Attributes:
        config: the :class:`RunConfig` it came from.
        task, algorithm: the built task and :class:`cmamae.algorithms.Algorithm`.
        evals: evaluations the run does, a whole number of iterations (``evals_requested``,
            what was asked, rounded down).
        seeds: independent runs. iterations: ``evals`` // evaluations per iteration.
        checkpoint_every, log_every: iterations between checkpoints, between metric rows.
        chunk: iterations per compiled call. name: the run's name (default "TASK-ALGO").
    """

    config: RunConfig
    task: Any
    algorithm: Any
    evals: int
    evals_requested: int
    seeds: int
    iterations: int
    checkpoint_every: int
    log_every: int
    chunk: int
    name: str

    @property
    def batch_size(self) -> int:
        """Evaluations per iteration of one seed."""
        return self.algorithm.scheduler.evaluations_per_iteration

    def rounding_note(self) -> str | None:
        """One line saying that the budget asked for was cut to whole iterations, or None."""
        if self.evals_requested == self.evals:
            return None
        return (
            f"evals {self.evals_requested:,} is not a whole number of iterations of "
            f"{self.batch_size:,} evaluations: running {self.iterations:,} iterations = "
            f"{self.evals:,} evaluations per seed"
        )

    def to_json(self) -> dict[str, Any]:
        """The ``config.json`` content: the inputs, the resolved values, the task's metadata."""
        import jax
        import numpy as np

        import cmamae

        c = self.config
        task = self.task
        return {
            "name": self.name,
            "task": c.task,
            # with what the task resolved (a locomotion task's backend: "auto" depends on the
            # machine, and a resumed run must keep the backend it started with)
            "task_settings": {**c.task_settings, **resolved_settings(task)},
            "algo": c.algo,
            "settings": self.algorithm.config,
            "setting_overrides": c.settings,
            "preset": c.preset,
            "evals": self.evals,
            "evals_requested": self.evals_requested,
            "seeds": self.seeds,
            "seed": c.seed,
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
            "chunk": self.chunk,
            "task_info": {
                "solution_dim": task.solution_dim,
                "measure_names": list(task.measure_names),
                "measure_ranges": [list(r) for r in task.measure_ranges],
                "archive_dims": list(task.archive_dims),
                "min_f": task.min_f,
                "max_f": task.max_f,
            },
            "versions": {
                "cmamae": cmamae.__version__,
                "jax": jax.__version__,
                "numpy": np.__version__,
                "jax_backend": jax.default_backend(),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedRun:
        """Rebuild from a ``config.json`` (for ``--resume``): same inputs, same resolution.

        The noise generator is the recorded one (not "auto" resolved anew): runs written when
        every recipe used a noise table resume with their tables. Setting names of older runs
        are read as their current names (:func:`cmamae.algorithms.upgrade_settings`)."""
        algo = data["algo"]
        if algo not in algorithms.names():
            raise ConfigError(f"unknown algorithm {algo!r}; expected one of {algorithms.names()}")
        overrides = algorithms.upgrade_settings(algo, data.get("setting_overrides", {}))
        recorded = algorithms.upgrade_settings(algo, data.get("settings", {}))
        if recorded.get("noise") in ("table", "normal"):
            overrides["noise"] = recorded["noise"]
        config = RunConfig(
            task=data["task"],
            algo=algo,
            evals=data["evals"],
            seeds=data["seeds"],
            seed=data["seed"],
            preset=data.get("preset"),
            settings=overrides,
            task_settings=data.get("task_settings", {}),
            checkpoint_every=data["checkpoint_every"],
            log_every=data["log_every"],
            chunk=data["chunk"],
            name=data["name"],
        )
        return config.build()
