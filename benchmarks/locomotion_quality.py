"""Every algorithm side by side on one locomotion task, same budget: the paper's table, reduced.

Each algorithm runs through the experiment runner (a run folder per algorithm under ``--out``,
resumable with ``cmamae run --resume``), all seeds batched, then ``cmamae report`` prints the
table (QD score, coverage, best; mean ± standard error over seeds) and writes the curves.
Runs already finished in ``--out`` are kept, so an interrupted sweep continues where it
stopped. Example (CPU, short episodes)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/locomotion_quality.py --task ant \\
        --episode-length 50 --evals 4000 --seeds 2 --out runs/ant50
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cmamae import algorithms, rundir, tasks
from cmamae.experiment import runner
from cmamae.experiment.config import RunConfig
from cmamae.viz import report

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
    args = parser.parse_args()
    unknown = sorted(set(args.algorithms) - set(algorithms.names()))
    if unknown:
        parser.error(f"--algorithms: unknown {unknown}; expected some of {algorithms.names()}")
    if args.task not in tasks.names():
        parser.error(f"--task: unknown {args.task!r}")

    out = Path(args.out)
    run_dirs = []
    for name in args.algorithms:
        run_dir = out / f"{args.task}{args.episode_length}-{name}"
        config = RunConfig(
            task=args.task,
            algo=name,
            evals=args.evals,
            seeds=args.seeds,
            task_settings={"episode_length": args.episode_length},
            name=run_dir.name,
        )
        if _finished(run_dir):
            print(f"{name}: kept the finished run in {run_dir}", flush=True)
        elif (run_dir / rundir.CONFIG).exists():
            print(f"{name}: resuming {run_dir}", flush=True)
            runner.resume(run_dir, quiet=True, plots=False)
        else:
            print(f"{name}: running into {run_dir}", flush=True)
            runner.start(config, out, quiet=True, plots=False)
        run_dirs.append(run_dir)
    paths = report.report(run_dirs, out / "report")
    print(report.to_markdown(report.summary_table(run_dirs)))
    print(f"\nreport files: {', '.join(str(p) for p in paths.values())}")


def _finished(run_dir: Path) -> bool:
    """Whether the run reached its budget (its metrics reach the configured iterations)."""
    try:
        config = rundir.read_config(run_dir)
        metrics = rundir.read_metrics(run_dir)
    except (rundir.NotARunError, FileNotFoundError, OSError):
        return False
    return len(metrics) > 0 and int(metrics["iteration"].max()) >= int(config["iterations"])


if __name__ == "__main__":
    main()
