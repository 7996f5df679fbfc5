"""Every algorithm side by side on one locomotion task, same budget: the paper's table, reduced.

A sweep (:mod:`cmamae.experiment.sweep`, as ``cmamae sweep``) of one task × the algorithms:
its folder ``--out/<task><episode length>/`` (so several tasks can share one ``--out``) holds a
run folder per algorithm (``<task>-<algo>``), all seeds batched, and then the table (QD score,
coverage, best; mean ± standard error over seeds) and the curves in ``report/``. Running the
same command again (or ``cmamae sweep --resume FOLDER``) keeps the finished runs and resumes
the others, so an interrupted benchmark continues where it stopped.

A second table gives each algorithm's lowest objective, the prior work's rule for choosing
``min_f`` (docs/tasks.md, "How `min_f` was chosen"): the lowest elite objective of its result
archives over all seeds, in total and per step, and how many elites lie below the task's
``min_f`` (they subtract from the QD score). Every algorithm's result archive inserts with
``threshold_min`` = −∞, so this is the lowest objective still inserted at the end, an upper
bound on the lowest ever inserted. ``--recheck-length 1000`` re-evaluates every elite of
every algorithm with episodes of that length (from ``--recheck-resets`` reset states) and adds
the lowest return: whether the per-step rate seen in short episodes carries over to
full-length ones. Example (CPU, short episodes)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/locomotion_quality.py --task ant \\
        --episode-length 50 --evals 4000 --seeds 2 --out runs/ant50 --recheck-length 1000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from cmamae import rundir, tasks
from cmamae.experiment.config import ConfigError
from cmamae.experiment.sweep import Sweep, run_sweep

LOCOMOTION = ("ant", "halfcheetah", "hopper", "walker2d")
DEFAULT_ALGORITHMS = (
    "sep-cma-mae",
    "lm-ma-mae",
    "openai-mae",
    "map-elites",
    "me-es",
    "cma-mega-es",
    "cma-mega-td3-es",
    "pga-me",
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="ant", choices=LOCOMOTION)
    parser.add_argument("--algorithms", nargs="+", default=list(DEFAULT_ALGORITHMS))
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--evals", type=int, default=1_000_000, help="per seed and algorithm")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="runs/locomotion-quality")
    parser.add_argument(
        "--recheck-length",
        type=int,
        help="re-evaluate every elite with episodes of this length",
    )
    parser.add_argument("--recheck-resets", type=int, default=1, help="reset states per recheck")
    args = parser.parse_args()

    sweep = Sweep(
        tasks=(args.task,),
        algos=tuple(args.algorithms),
        overrides={"task.episode_length": [args.episode_length]},
        evals=args.evals,
        seeds=args.seeds,
    )
    try:
        out = Path(args.out) / f"{args.task}{args.episode_length}"
        outcome = run_sweep(sweep, out, quiet=True, plots=False)
    except ConfigError as err:  # unknown algorithms, bad budgets: before any run
        parser.error(str(err))
    if outcome.status != "finished":
        sys.exit(130)
    run_dirs = [cell.run_dir for cell in outcome.cells]
    paths = outcome.report
    print(paths["markdown"].read_text())
    print("\nLowest objective in the result archives (docs/tasks.md, how `min_f` was chosen):\n")
    lowest = lowest_objectives(run_dirs)
    if args.recheck_length:
        recheck(lowest, args.recheck_length, args.recheck_resets)
    print(lowest_objectives_markdown(lowest))
    print(f"\nreport files: {', '.join(str(p) for p in paths.values())}")


def lowest_objectives(run_dirs) -> list[dict]:
    """Per run folder: the lowest elite objective of each seed's result archive.

    Returns one dict per run: ``run_dir``, ``algorithm``, ``task``, ``task_settings``,
    ``episode_length``, ``seeds``, ``min_f`` (the task's, for this episode length),
    ``per_seed`` (the lowest elite objective of each seed, NaN for an empty archive),
    ``lowest`` (their minimum), ``per_step`` (``lowest`` divided by the episode length) and
    ``below_min_f`` (per seed, elites with an objective below ``min_f``: they subtract from
    the QD score).
    """
    rows = []
    for run_dir in run_dirs:
        config = rundir.read_config(run_dir)
        info = config.get("task_info") or {}
        min_f = float(info["min_f"]) if "min_f" in info else math.nan
        settings = dict(config.get("task_settings") or {})
        length = int(settings.get("episode_length", 1000))
        per_seed, below = [], []
        for seed in range(int(config["seeds"])):
            objectives = _elites(run_dir, seed)[0]
            per_seed.append(float(objectives.min()) if objectives.size else math.nan)
            below.append(int(np.sum(objectives < min_f)))
        lowest = float(np.nanmin(per_seed)) if not np.all(np.isnan(per_seed)) else math.nan
        rows.append(
            dict(
                run_dir=Path(run_dir),
                algorithm=config["algo"],
                task=config["task"],
                task_settings=settings,
                episode_length=length,
                seeds=int(config["seeds"]),
                min_f=min_f,
                per_seed=per_seed,
                lowest=lowest,
                per_step=lowest / length,
                below_min_f=below,
            )
        )
    return rows


def recheck(rows: list[dict], length: int, resets: int = 1, chunk: int = 64) -> None:
    """Re-evaluate every elite of each row's run with ``length``-step episodes.

    Each elite of every seed's result archive runs on the run's task (its settings, but
    ``episode_length=length``) from ``resets`` reset states (keys ``split(key(0), resets)``),
    in batches of ``chunk`` (padded, so one compile per task).
    Adds to each row ``recheck_length``, ``recheck`` (the lowest of those returns) and
    ``recheck_per_step`` (divided by ``length``).
    """
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), resets)
    compiled = {}
    for r in rows:
        task = tasks.get(r["task"], **dict(r["task_settings"], episode_length=length))
        if task not in compiled:
            compiled[task] = jax.jit(jax.vmap(lambda x, k, t=task: t.evaluate(x, k)[0], (None, 0)))
        evaluate = compiled[task]
        lowest = math.inf
        for seed in range(r["seeds"]):
            solutions = _elites(r["run_dir"], seed)[1]
            for start in range(0, len(solutions), chunk):
                part = solutions[start : start + chunk]
                padded = np.zeros((chunk, part.shape[1]), part.dtype)
                padded[: len(part)] = part
                returns = np.asarray(evaluate(jnp.asarray(padded), keys))[:, : len(part)]
                lowest = min(lowest, float(returns.min()))
        r["recheck_length"] = length
        r["recheck"] = lowest if math.isfinite(lowest) else math.nan
        r["recheck_per_step"] = r["recheck"] / length
        print(
            f"{r['algorithm']}: lowest with {length}-step episodes {r['recheck']:.1f}", flush=True
        )


def _elites(run_dir, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(objectives, solutions)`` of the elites of ``seed``'s result archive."""
    _, state = rundir.load_archive(run_dir, seed)
    occupied = np.asarray(state.occupied)
    return np.asarray(state.objectives)[occupied], np.asarray(state.solutions)[occupied]


def lowest_objectives_markdown(rows: list[dict]) -> str:
    """:func:`lowest_objectives` (with :func:`recheck`'s columns when present) as a GitHub
    Markdown table, its overall minimum last."""
    lines = [
        "| algorithm | task | lowest objective (per seed) | lowest | per step | `min_f` "
        "| elites below `min_f` (per seed) |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    length = next((r["recheck_length"] for r in rows if "recheck" in r), None)
    if length:
        lines[0] += f" lowest, elites rerun for {length} steps | per step |"
        lines[1] += "---:|---:|"
    for r in rows:
        seeds = ", ".join(f"{v:.1f}" for v in r["per_seed"])
        below = " / ".join(str(n) for n in r["below_min_f"])
        line = (
            f"| {r['algorithm']} | {r['task']} | {seeds} | {r['lowest']:.1f} "
            f"| {r['per_step']:.3f} | {r['min_f']:g} | {below} |"
        )
        if length:
            line += (
                f" {r.get('recheck', math.nan):.1f} | {r.get('recheck_per_step', math.nan):.3f} |"
            )
        lines.append(line)
    finite = [r for r in rows if math.isfinite(r["per_step"])]
    if finite:
        worst = min(finite, key=lambda r: r["per_step"])
        lines.append(
            f"\nLowest over all algorithms: {worst['lowest']:.1f} ({worst['algorithm']}), "
            f"{worst['per_step']:.3f} per step, {1000 * worst['per_step']:.1f} per 1000 steps."
        )
    rechecked = [r for r in rows if math.isfinite(r.get("recheck", math.nan))]
    if rechecked:
        worst = min(rechecked, key=lambda r: r["recheck"])
        lines.append(
            f"Lowest with {length}-step episodes: {worst['recheck']:.1f} ({worst['algorithm']}), "
            f"{worst['recheck_per_step']:.3f} per step."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
