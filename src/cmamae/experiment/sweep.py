"""Sweeps: a grid of runs (tasks × algorithms × override values), each cell an ordinary run
folder, resumable as a whole, reported together (``cmamae sweep``).

A :class:`Sweep` names tasks, algorithms and overrides ``KEY -> [values]`` (algorithm settings,
or task settings with a ``task.`` prefix, as ``--set``); an override with one value applies to
every cell, one with several is an axis of the grid. The cells are every task × algorithm ×
combination of axis values, in that order; all seeds of a cell run as one batched run. A cell's
run folder is named ``<task>-<algo>`` plus ``-<key>=<value>`` per axis
(``sphere-cma-me-sigma0=0.1``), under the sweep folder, which also holds ``sweep.json`` (the grid
and which cells finished) and, once every cell finished, ``report/`` (the table, mean ±
standard error over seeds, and the QD-score curves: :func:`cmamae.viz.report.report`).

Every cell is validated (:meth:`RunConfig.build`) before any run starts, so an unknown task,
algorithm or setting fails at once. Running the same sweep again, or :func:`resume_sweep` on its
folder, keeps the finished cells, resumes interrupted ones from their checkpoints
(:func:`cmamae.experiment.runner.resume`) and starts the missing ones; each run being exact on
resume, an interrupted and resumed sweep reports the same numbers as one that never stopped.
Ctrl-C stops the sweep after the current run's chunk (status "interrupted").
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from cmamae import algorithms, rundir, tasks
from cmamae.experiment import checkpoint, runner
from cmamae.experiment.advance import Execution
from cmamae.experiment.config import ConfigError, RunConfig, parse_value

GRID_FILE = "sweep.json"
REPORT_DIR = "report"
FORMAT = 1
_BUDGET_KEYS = ("evals", "seeds", "seed", "preset", "checkpoint_every", "log_every", "chunk")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid of runs (plain data; ``sweep.json`` holds it).

    Attributes:
        tasks: task names, at least one, no repeats.
        algos: algorithm names, at least one, no repeats.
        overrides: ``KEY -> [values]``: an algorithm setting or ``task.<setting>``, each with
            one value (every cell) or several (an axis of the grid); values JSON-friendly.
        evals, seeds, seed, preset, checkpoint_every, log_every, chunk: as in
            :class:`~cmamae.experiment.config.RunConfig`, the same for every cell.
    """

    tasks: tuple[str, ...]
    algos: tuple[str, ...]
    overrides: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    evals: int | None = None
    seeds: int | None = None
    seed: int = 0
    preset: str | None = None
    checkpoint_every: int | None = None
    log_every: int | None = None
    chunk: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        """Build from a config file's table (``tasks``, ``algos``: a name or a list of names;
        ``overrides``: a table ``KEY = value`` or ``KEY = [values]``; so a list-valued setting
        is written as a list of lists: ``"task.archive_dims" = [[10, 10]]``). Unknown keys
        are an error listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown sweep key(s) {unknown}; expected any of {sorted(valid)}")
        data = dict(data)
        for key in ("tasks", "algos"):
            value = data.get(key, ())
            data[key] = (value,) if isinstance(value, str) else tuple(value)
        overrides = data.get("overrides", {})
        if not isinstance(overrides, dict):
            raise ConfigError(f"overrides must be a table KEY = [values], got {overrides!r}")
        data["overrides"] = {
            str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in overrides.items()
        }
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """The grid as JSON data (tuples become lists), the form kept in ``sweep.json``."""
        return _plain(
            {
                "tasks": list(self.tasks),
                "algos": list(self.algos),
                "overrides": self.overrides,
                **{k: getattr(self, k) for k in _BUDGET_KEYS},
            }
        )

    def axes(self) -> list[tuple[str, list[Any]]]:
        """The overrides with several values, in order: the grid's axes beyond task × algo."""
        return [(k, v) for k, v in self.overrides.items() if len(v) > 1]

    def cells(self) -> list[RunConfig]:
        """One :class:`RunConfig` per cell, named as the module docstring says, in grid order
        (task, then algorithm, then the axes' values). Checks the grid's shape, not the
        names (:func:`plan` builds every cell)."""
        _check_names("tasks", self.tasks)
        _check_names("algos", self.algos)
        for key, values in self.overrides.items():
            if not key or not isinstance(values, list) or not values:
                raise ConfigError(f"override {key!r} needs at least one value, got {values!r}")
            texts = [json.dumps(_plain(v), sort_keys=True) for v in values]
            if len(set(texts)) < len(texts):
                raise ConfigError(f"override {key!r} repeats a value: {values!r}")
        axes = self.axes()
        fixed = {k: v[0] for k, v in self.overrides.items() if len(v) == 1}
        budget = {k: getattr(self, k) for k in _BUDGET_KEYS}
        configs, names = [], {}
        for task, algo in itertools.product(self.tasks, self.algos):
            for combo in itertools.product(*(values for _, values in axes)):
                chosen = dict(zip((k for k, _ in axes), combo))
                name = "-".join([task, algo, *(f"{k}={_slug(v)}" for k, v in chosen.items())])
                if name in names:
                    raise ConfigError(
                        f"cells {names[name]} and {chosen} both get the folder name {name!r}; "
                        "make the override values differ in letters or digits"
                    )
                names[name] = chosen
                config = RunConfig(task=task, algo=algo, name=name, **budget)
                configs.append(config.with_assignments({**fixed, **chosen}))
        return configs


def _check_names(what: str, names) -> None:
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{what} must list at least one name, got {list(names)!r}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"{what} lists {repeated} more than once")


def _plain(value):
    """JSON-normalized ``value`` (tuples as lists), for storing and comparing."""
    return json.loads(json.dumps(value))


def _slug(value) -> str:
    """A value as a folder-name part: ``0.1``, ``10x10``, ``imp``."""
    if isinstance(value, (list, tuple)):
        text = "x".join(_slug(v) for v in value)
    elif isinstance(value, bool) or value is None:
        text = str(value).lower()
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def parse_overrides(items: list[str]) -> dict[str, list[Any]]:
    """``["KEY=V1,V2", ...]`` -> ``{KEY: [V1, V2]}``, each value parsed as ``--set`` does
    (:func:`~cmamae.experiment.config.parse_value`: a Python literal, else the text; never
    evaluated). Values are split at commas outside brackets and quotes, so
    ``task.archive_dims=(10, 10)`` is one value and ``task.archive_dims=(10,10),(20,20)``
    two. Raises ConfigError for an item without ``=``, an empty value or a key given twice."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE[,VALUE...], got {item!r}")
        if key in out:
            raise ConfigError(f"--set {key} is given twice; list its values once: {key}=A,B")
        parts = _split_top_level(text)
        if not all(parts):
            raise ConfigError(f"--set {item!r} has an empty value")
        out[key] = [parse_value(p) for p in parts]
    return out


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes, each part stripped."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def split_names(text: str) -> tuple[str, ...]:
    """``"sphere,arm"`` -> ``("sphere", "arm")`` (``--tasks``, ``--algos``)."""
    return tuple(n.strip() for n in text.split(","))


# --------------------------------------------------------------------------- planning
@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a sweep: its ``config``, its run folder ``run_dir`` and the ``action``
    running the sweep takes: ``"start"`` (no run yet), ``"resume"`` (a run that did not
    finish, or not yet recorded as finished) or ``"keep"`` (finished)."""

    config: RunConfig
    run_dir: Path
    action: str


def plan(sweep: Sweep, out: str | os.PathLike, execution: Execution | None = None) -> list[Cell]:
    """Validate every cell of ``sweep`` in folder ``out`` and say what running it would do.

    Nothing is written. Raises ConfigError naming the cell for: an unknown task, algorithm,
    preset or setting (also a setting that only some of the algorithms have), a bad budget,
    ``execution`` settings a cell's task cannot use, ``out`` holding another sweep, or a cell
    folder holding something else than this cell's run."""
    _check_known("tasks", sweep.tasks, tasks.names(), "task")
    _check_known("algos", sweep.algos, algorithms.names(), "algorithm")
    out = Path(out)
    record = _read_record(out)
    if record is not None and record["sweep"] != sweep.to_json():
        raise ConfigError(
            f"{os.fspath(out)!r} holds another sweep ({_first_difference(record['sweep'], sweep)}"
            "); continue it with --resume, or pick another --out"
        )
    finished = set(record["finished"]) if record is not None else set()
    execution = execution or Execution()
    cells = []
    for config in sweep.cells():
        try:
            resolved = config.build()
            execution.validate(resolved.task, resolved.algorithm.scheduler)
        except ConfigError as err:
            raise ConfigError(f"cell {config.name}: {err}") from None
        run_dir = out / resolved.name
        if rundir.is_run(run_dir):
            differences = _differences(rundir.read_config(run_dir), resolved)
            if differences:
                raise ConfigError(
                    f"run folder {os.fspath(run_dir)!r} holds another run ({differences}); "
                    "move it away or pick another --out"
                )
            action = "keep" if config.name in finished else "resume"
        elif run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{os.fspath(run_dir)!r} exists and is not a run folder; move it away or pick "
                "another --out"
            )
        else:
            action = "start"
        cells.append(Cell(config, run_dir, action))
    return cells


def _check_known(flag: str, names, known: list[str], what: str) -> None:
    _check_names(flag, names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown[0]!r} in {flag}; expected any of {known}")


def _first_difference(stored: dict, sweep: Sweep) -> str:
    wanted = sweep.to_json()
    key = next(k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k))
    return f"{key}: {stored.get(key)!r} there, {wanted.get(key)!r} here"


def _differences(stored: dict, resolved) -> str:
    """Where an existing run's ``config.json`` differs from ``resolved`` in what it computes
    (empty when it does not)."""
    config = resolved.config
    wanted = {
        "task": config.task,
        "algo": config.algo,
        "setting_overrides": _plain(config.settings),
        "evals": resolved.evals,
        "seeds": resolved.seeds,
        "seed": config.seed,
    }
    have = {k: _plain(stored.get(k)) for k in wanted}
    have["setting_overrides"] = _plain(  # older runs: some settings had other names
        algorithms.upgrade_settings(config.algo, stored.get("setting_overrides") or {})
    )
    out = [f"{k}: {have[k]!r} there, {v!r} here" for k, v in wanted.items() if have[k] != v]
    task_settings = stored.get("task_settings") or {}
    out += [
        f"task.{k}: {task_settings.get(k)!r} there, {v!r} here"
        for k, v in _plain(config.task_settings).items()
        if _plain(task_settings.get(k)) != v
    ]
    return "; ".join(out)


# --------------------------------------------------------------------------- running
@dataclasses.dataclass
class SweepOutcome:
    """What running a sweep in folder ``out`` did: ``status`` "finished" (every cell finished
    and the report is written: ``report`` maps ``"markdown"``, ``"csv"``, ``"curves"`` to its
    files) or "interrupted" (``report`` None); ``cells`` as :func:`plan` found them."""

    out: Path
    status: str
    cells: list[Cell]
    report: dict[str, Path] | None


def run_sweep(
    sweep: Sweep,
    out: str | os.PathLike,
    *,
    quiet: bool = False,
    plots: bool = True,
    execution: Execution | None = None,
    log: Callable[[str], None] | None = print,
) -> SweepOutcome:
    """Run every cell of ``sweep`` into folder ``out`` (keeping finished cells, resuming
    interrupted ones), then write ``out/report/``.

    Args:
        sweep: the grid.
        out: the sweep folder; it may exist when it holds this same sweep (or nothing else).
        quiet: passed to each run (:func:`cmamae.experiment.runner.start`).
        plots: passed to each run.
        execution: passed to each run.
        log: called with one line per cell (what is done with it) and at the end; None: silent.

    Raises:
        ConfigError: a bad sweep (:func:`plan`), before any run starts.
    """
    log = log or (lambda line: None)
    out = Path(out)
    cells = plan(sweep, out, execution)
    record = _read_record(out) or {"format": FORMAT, "sweep": sweep.to_json(), "finished": []}
    record["cells"] = [c.config.name for c in cells]
    _write_record(out, record)
    common = dict(quiet=quiet, plots=plots, execution=execution)
    with runner.stop_on_signals() as stop:  # Ctrl-C between runs; each run has its own
        for i, cell in enumerate(cells, 1):
            if stop.is_set():
                return _interrupted(out, cells, log)
            prefix = f"sweep [{i}/{len(cells)}] {cell.config.name}"
            if cell.action == "keep":
                log(f"{prefix}: finished before, kept")
                continue
            log(f"{prefix}: {'starting' if cell.action == 'start' else 'resuming'}")
            if cell.action == "start":
                outcome = runner.start(cell.config, out, **common)
            else:
                outcome = runner.resume(cell.run_dir, **common)
            if outcome.status != "finished":
                return _interrupted(out, cells, log)
            record["finished"] = sorted(set(record["finished"]) | {cell.config.name})
            _write_record(out, record)
            # Drop the run's compiled programs: XLA's CPU executables hold many memory
            # mappings each, and a long sweep in one process would reach the kernel's limit
            # (vm.max_map_count, 65,530) and crash; the next run that needs them reloads
            # them from the persistent compilation cache.
            jax.clear_caches()
        if stop.is_set():
            return _interrupted(out, cells, log)
    from cmamae.viz import report

    paths = report.report([c.run_dir for c in cells], out / REPORT_DIR, force=True)
    runs = f"{len(cells)} run{'s' if len(cells) != 1 else ''}"
    log(f"sweep finished: {runs} in {os.fspath(out)}; report in {paths['markdown']}")
    return SweepOutcome(out, "finished", cells, paths)


def resume_sweep(out: str | os.PathLike, **kwargs) -> SweepOutcome:
    """Continue the sweep whose folder is ``out`` (its ``sweep.json``): :func:`run_sweep`
    with the recorded grid and these keyword arguments. Raises ConfigError if ``out`` holds
    no sweep."""
    record = _read_record(Path(out))
    if record is None:
        raise ConfigError(f"{os.fspath(out)!r} is not a sweep folder (no {GRID_FILE})")
    return run_sweep(Sweep.from_dict(record["sweep"]), out, **kwargs)


def _interrupted(out: Path, cells: list[Cell], log) -> SweepOutcome:
    log(f"sweep interrupted; continue it with: cmamae sweep --resume {os.fspath(out)}")
    return SweepOutcome(out, "interrupted", cells, None)


def _read_record(out: Path) -> dict | None:
    """``sweep.json`` of ``out`` (None when there is none); ConfigError when unreadable."""
    path = out / GRID_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT or not isinstance(record.get("sweep"), dict):
            raise ValueError(f"expected format {FORMAT} with a 'sweep' table")
        record.setdefault("finished", [])
        return record
    except (OSError, ValueError) as err:
        raise ConfigError(f"{os.fspath(path)!r} is not a readable sweep record: {err}") from None


def _write_record(out: Path, record: dict) -> None:
    text = json.dumps(record, indent=2)
    checkpoint.atomic_write(out / GRID_FILE, lambda f: f.write(text.encode()))
