"""The paper-style results table and QD-score curves over several run folders.

``summary_table`` pools the final logged metrics of every seed of every run of one algorithm on
one task (several runs of the same pair are pooled; runs of one algorithm that differ in its
setting overrides are rows of their own, ``sep-cma-mae(sigma0=0.1)``), and reports mean ±
standard error, with standard error = sample standard deviation (ddof = 1) / sqrt(count); NaN
with one seed.
``report`` writes ``report.md``, ``report.csv`` and ``qd_curves.png`` into a ``report/`` folder
beside the run folders (:func:`default_out`) or the one given, never over an existing report
unless told to.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmamae import rundir
from cmamae.viz._common import _compact, fmt_mean_se, new_figure, save, task_label

# metric column of metrics.csv -> label in the table (the paper's "QD score, coverage, best").
METRICS = {"qd_score": "QD score", "coverage": "coverage", "obj_max": "best"}
# the same stats of the corrected archives (``cmamae evaluate``), where runs have them
CORRECTED = {f"corrected_{m}": f"{label} (corrected)" for m, label in METRICS.items()}
STATS = ("mean", "se", "n")


# --------------------------------------------------------------------------- reading runs
def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The run folders named by ``paths``: each path is a run folder, or a folder whose
    immediate subfolders include run folders (``runs/``). Order kept, duplicates dropped.

    Raises:
        rundir.NotARunError: a path is neither (a ``ValueError``).
        ValueError: no path given.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if rundir.is_run(p):
            found.append(p)
            continue
        children = sorted(c for c in p.iterdir() if rundir.is_run(c)) if p.is_dir() else []
        if not children:
            raise rundir.NotARunError(
                f"{os.fspath(p)!r} is not a run folder (no {rundir.CONFIG}) and holds none"
            )
        found.extend(children)
    if not found:
        raise ValueError("run_dirs must name at least one run folder, got none")
    seen: set[Path] = set()
    unique = []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _task_labels(configs: Sequence[dict]) -> list[str]:
    """Column label per run: the task name, or name(overrides) where runs of one task name
    differ in their task settings (those are different problems)."""
    variants: dict[str, set[str]] = {}
    for c in configs:
        settings = json.dumps(c.get("task_settings") or {}, sort_keys=True)
        variants.setdefault(str(c.get("task", "?")), set()).add(settings)
    return [
        task_label(c) if len(variants[str(c.get("task", "?"))]) > 1 else str(c.get("task", "?"))
        for c in configs
    ]


def _current_overrides(config: dict) -> dict:
    """A run's setting overrides under their current names (older runs used other names for
    some: :func:`cmamae.algorithms.upgrade_settings`)."""
    from cmamae import algorithms

    overrides, name = config.get("setting_overrides") or {}, config.get("algo")
    if name not in algorithms.ALGORITHMS:
        return overrides
    return algorithms.upgrade_settings(name, overrides)


def _algo_labels(configs: Sequence[dict]) -> list[str]:
    """Row label per run: the algorithm name, or name(key=value, ...) with the setting
    overrides in which runs of that algorithm differ (a sweep's ``sigma0=0.1`` and ``0.3`` are
    different configurations, not more seeds of one); runs alike in them are pooled."""
    names = [str(c.get("algo", "?")) for c in configs]
    overrides = [_current_overrides(c) for c in configs]
    keys: dict[str, set[str]] = {}
    for name, o in zip(names, overrides):
        keys.setdefault(name, set()).update(o)
    values: dict[tuple[str, str], set[str]] = {}
    for name, o in zip(names, overrides):
        for key in keys[name]:  # a missing key (the default) is a value of its own
            value = json.dumps(o[key], sort_keys=True) if key in o else "\0default"
            values.setdefault((name, key), set()).add(value)
    labels = []
    for name, o in zip(names, overrides):
        differing = sorted(k for k in keys[name] if len(values[(name, k)]) > 1)
        args = ", ".join(f"{k}={_compact(o[k]) if k in o else 'default'}" for k in differing)
        labels.append(f"{name}({args})" if args else name)
    return labels


def _runs_frame(run_dirs, final: bool) -> pd.DataFrame:
    """Metric rows of all runs with ``algorithm``, ``task``, ``run`` columns added: the final
    row of each seed (``final``) or every logged row."""
    runs = find_runs(run_dirs)
    configs = [rundir.read_config(r) for r in runs]
    labels, algos = _task_labels(configs), _algo_labels(configs)
    frames = []
    for run, label, algo in zip(runs, labels, algos):
        rows = rundir.final_metrics(run).reset_index() if final else rundir.read_metrics(run)
        if rows.empty:
            warnings.warn(f"run {os.fspath(run)!r} has no logged metrics; left out", stacklevel=3)
            continue
        rows = rows.assign(algorithm=algo, task=label, run=str(run))
        frames.append(rows)
    columns = ["algorithm", "task", "run", *rundir.METRIC_COLUMNS]
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)


def final_rows(run_dirs) -> pd.DataFrame:
    """The last logged metrics row of every seed of every run, one row per (run, seed), with
    columns ``algorithm``, ``task``, ``run``, :data:`cmamae.rundir.METRIC_COLUMNS`, the
    corrected archive's stats (:data:`CORRECTED`, NaN for seeds not re-evaluated) and
    ``reevaluations`` (episodes per elite behind them, 0 for none)."""
    rows = _runs_frame(run_dirs, final=True)
    corrected = {c: np.full(len(rows), np.nan) for c in CORRECTED}
    episodes = np.zeros(len(rows), int)
    summaries: dict[str, dict | None] = {}
    for i, (run, seed) in enumerate(zip(rows["run"], rows["seed"])):
        if run not in summaries:
            summaries[run] = _evaluation_summary(run)
        entry = _seed_entry(summaries[run], int(seed))
        if entry is not None and "corrected" in entry:
            for c in CORRECTED:
                corrected[c][i] = entry["corrected"][c.removeprefix("corrected_")]
            episodes[i] = entry["episodes"]
    return rows.assign(**corrected, reevaluations=episodes)


def _evaluation_summary(run) -> dict | None:
    path = Path(run) / rundir.EVALUATION_DIR / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        warnings.warn(
            f"{os.fspath(path)!r} is unreadable; its run is shown uncorrected", stacklevel=3
        )
        return None


def _seed_entry(summary: dict | None, seed: int) -> dict | None:
    if summary is None:
        return None
    return next((e for e in summary.get("seeds", []) if e.get("seed") == seed), None)


# --------------------------------------------------------------------------- the table
def mean_se(values) -> tuple[float, float, int]:
    """``(mean, standard error, count)`` of the finite ``values``; SE = std(ddof=1)/sqrt(n),
    NaN for fewer than two values (mean NaN for none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    se = float(v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return mean, se, n


def summary_table(run_dirs, metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """The paper's table: one row per algorithm, one column group per task.

    Args:
        run_dirs: run folders (or folders of run folders), see :func:`find_runs`.
        metrics: columns of ``metrics.csv`` to summarize (default QD score, coverage, best).

    Returns:
        A DataFrame indexed by algorithm (order of first appearance) with columns
        ``(task, metric, stat)``, stat in ``("mean", "se", "n")``; NaN where an algorithm was
        not run on a task.
    """
    unknown = [m for m in metrics if m not in rundir.METRIC_COLUMNS and m not in CORRECTED]
    if unknown:
        raise ValueError(
            f"metrics must be columns of metrics.csv {rundir.METRIC_COLUMNS} or corrected "
            f"stats {tuple(CORRECTED)}, got {unknown}"
        )
    rows = final_rows(run_dirs)
    algos = list(dict.fromkeys(rows["algorithm"]))
    tasks = list(dict.fromkeys(rows["task"]))
    columns = pd.MultiIndex.from_tuples(
        [(t, m, s) for t in tasks for m in metrics for s in STATS],
        names=["task", "metric", "stat"],
    )
    table = pd.DataFrame(np.nan, index=pd.Index(algos, name="algorithm"), columns=columns)
    for (algo, task), group in rows.groupby(["algorithm", "task"], sort=False):
        for m in metrics:
            mean, se, n = mean_se(group[m])
            table.loc[algo, (task, m, "mean")] = mean
            table.loc[algo, (task, m, "se")] = se
            table.loc[algo, (task, m, "n")] = n
    return table


def to_markdown(table: pd.DataFrame, percent: Sequence[str] = ("coverage",)) -> str:
    """A GitHub Markdown table of :func:`summary_table`'s result: one column per
    (task, metric), cells ``mean ± se`` (``–`` where missing); metrics in ``percent`` are
    shown in percent."""
    pairs = list(dict.fromkeys((t, m) for t, m, _ in table.columns))
    labels = {**METRICS, **CORRECTED}
    header = ["algorithm"] + [f"{t}: {labels.get(m, m)}" for t, m in pairs]
    lines = [_md_row(header), "| " + " | ".join(["---"] + ["---:"] * len(pairs)) + " |"]
    for algo in table.index:
        cells = [str(algo)]
        for t, m in pairs:
            mean = float(table.loc[algo, (t, m, "mean")])
            se = float(table.loc[algo, (t, m, "se")])
            if m.removeprefix("corrected_") in percent:
                cell = fmt_mean_se(100 * mean, 100 * se)
                cells.append(cell if cell == "–" else cell.replace(" ± ", "% ± ") + "%")
            else:
                cells.append(fmt_mean_se(mean, se))
        lines.append(_md_row(cells))
    return "\n".join(lines) + "\n"


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the table with one header row, columns ``task/metric/mean|se|n``."""
    flat = table.copy()
    flat.columns = ["/".join(str(x) for x in col) for col in table.columns]
    for col, (_, _, stat) in zip(flat.columns, table.columns):
        if stat == "n":
            flat[col] = flat[col].astype("Int64")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat.to_csv(path, index_label="algorithm")
    return path


# --------------------------------------------------------------------------- curves
def curve_stats(series: Sequence[tuple[np.ndarray, np.ndarray]]):
    """Mean and standard error over seeds of curves logged at possibly different points.

    Args:
        series: per seed, ``(evaluations (k,), values (k,))``.

    Returns:
        ``(x (K,), mean (K,), se (K,))`` on the union of the logged evaluations; each curve is
        interpolated linearly inside its own logged span and left out elsewhere; ``se`` is NaN
        where fewer than two curves cover a point.
    """
    x = np.unique(np.concatenate([np.asarray(e, float) for e, _ in series]))
    values = np.full((len(series), x.size), np.nan)
    for i, (e, v) in enumerate(series):
        e, v = np.asarray(e, float), np.asarray(v, float)
        order = np.argsort(e)
        e, v = e[order], v[order]
        inside = (x >= e[0]) & (x <= e[-1])
        values[i, inside] = np.interp(x[inside], e, v)
    n = np.sum(np.isfinite(values), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0, ddof=1)
    se = np.where(n >= 2, std / np.sqrt(np.maximum(n, 1)), np.nan)
    return x, mean, se


def plot_curves(run_dirs, path: str | os.PathLike, metric: str = "qd_score") -> Path:
    """QD score (or ``metric``) vs evaluations: one subplot per task, one line per algorithm
    (mean over seeds, shaded ± one standard error), and a triangle at the end for the
    corrected archives' mean where the runs were re-evaluated. Writes a PNG at ``path``."""
    if metric not in rundir.METRIC_COLUMNS:
        raise ValueError(
            f"metric must be a column of metrics.csv {rundir.METRIC_COLUMNS}, got {metric!r}"
        )
    rows = _runs_frame(run_dirs, final=False)
    final = final_rows(run_dirs)
    finals = {key: group for key, group in final.groupby(["task", "algorithm"], sort=False)}
    tasks = list(dict.fromkeys(rows["task"]))
    ncols = max(1, min(3, len(tasks)))
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig = new_figure(4.8 * ncols, 3.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, task in zip(axes, tasks):
        sub = rows[rows["task"] == task]
        for algo, group in sub.groupby("algorithm", sort=False):
            series = [
                (g["evaluations"].to_numpy(), g[metric].to_numpy())
                for _, g in group.groupby(["run", "seed"], sort=False)
            ]
            x, mean, se = curve_stats(series)
            (line,) = ax.plot(x, mean, label=f"{algo} (n={len(series)})")
            if np.any(np.isfinite(se)):
                ax.fill_between(
                    x, mean - se, mean + se, color=line.get_color(), alpha=0.25, linewidth=0
                )
            corrected = finals.get((task, algo))
            if corrected is not None and f"corrected_{metric}" in corrected:
                values = corrected[f"corrected_{metric}"].dropna()
                if len(values):
                    ax.plot(
                        [corrected["evaluations"].max()],
                        [values.mean()],
                        marker="v",
                        color=line.get_color(),
                        linestyle="none",
                        label=f"{algo}, corrected (re-evaluated)",
                    )
        ax.set_title(task)
        ax.set_xlabel("evaluations")
        ax.set_ylabel(METRICS.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    if not tasks:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no logged metrics", ha="center", va="center")
    return save(fig, path)


def _corrected_note(rows: pd.DataFrame) -> list[str]:
    """Which episodes the corrected columns count, in words (nothing when none exist)."""
    counts = sorted(set(rows["reevaluations"][rows["reevaluations"] > 0]))
    if not counts:
        return []
    missing = int((rows["reevaluations"] == 0).sum())
    n = " or ".join(str(c) for c in counts)
    return [
        "Stored scores are each elite's single scoring episode (the luckiest kept per cell); "
        f"corrected scores re-insert every elite at its mean over {n} re-evaluation episodes "
        "(cmamae evaluate; the scoring episode not counted)"
        + (f"; {missing} seed(s) without re-evaluations are left out of them." if missing else "."),
        "",
    ]


# --------------------------------------------------------------------------- report
REPORT_FILES = ("report.md", "report.csv", "qd_curves.png")


def default_out(run_dirs) -> Path:
    """Where a report of ``run_dirs`` goes by default: ``report/`` in the folder that holds
    them (``runs/report`` for runs under ``runs/``; their common ancestor if they lie apart)."""
    parents = [os.path.abspath(Path(r).parent) for r in find_runs(run_dirs)]
    return Path(os.path.commonpath(parents)) / "report"


def report(run_dirs, out_dir: str | os.PathLike | None = None, *, force: bool = False):
    """Write ``report.md`` (the table as Markdown), ``report.csv`` (the table with explicit
    mean/se/n columns) and ``qd_curves.png`` into ``out_dir`` (None: :func:`default_out`).

    Returns:
        ``{"markdown": path, "csv": path, "curves": path}``.

    Raises:
        FileExistsError: ``out_dir`` already holds one of those files and ``force`` is False.
    """
    runs = find_runs(run_dirs)
    out = default_out(runs) if out_dir is None else Path(out_dir)
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not force:
        raise FileExistsError(
            f"{os.fspath(out)!r} already holds a report ({', '.join(existing)}); pass --force "
            "to overwrite it or --out to write elsewhere"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = final_rows(runs)
    reevaluated = rows["reevaluations"].to_numpy()
    metrics = [m for pair in zip(METRICS, CORRECTED) for m in pair]
    table = summary_table(runs, metrics if reevaluated.any() else tuple(METRICS))
    n = table.xs("n", axis=1, level="stat").to_numpy(dtype=float).ravel()
    counts = sorted({int(c) for c in n[np.isfinite(n)]})
    if len(counts) == 1:
        seeds = f"{counts[0]} seed{'s' if counts[0] != 1 else ''}"
    else:
        seeds = (
            "seeds ("
            + "; ".join(
                f"{algo} on {task}: {int(table.loc[algo, (task, m, 'n')])}"
                for algo in table.index
                for task, m in dict.fromkeys((t, m) for t, m, _ in table.columns)
                if m == "qd_score" and np.isfinite(table.loc[algo, (task, m, "n")])
            )
            + ")"
        )
    text = [
        "# Results",
        "",
        f"Final QD score, coverage and best objective: mean ± standard error over {seeds} "
        "(sample standard deviation / sqrt(seeds); – where there is a single seed).",
        "",
        *_corrected_note(rows),
        to_markdown(table),
        "Runs:",
        "",
        *[f"- `{os.fspath(r)}`" for r in runs],
        "",
    ]
    md = out / "report.md"
    md.write_text("\n".join(text))
    return {
        "markdown": md,
        "csv": to_csv(table, out / "report.csv"),
        "curves": plot_curves(runs, out / "qd_curves.png"),
    }
