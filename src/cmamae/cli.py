"""The ``cmamae`` command: ``run``, ``sweep``, ``report``, ``plot``, ``replay``, ``evaluate``.
Thin: it parses arguments and calls :mod:`cmamae.experiment` and :mod:`cmamae.viz`.

Bad input (unknown names, bad budgets, a folder that is not a run, an existing run folder without
``--force``), an unusable ``MUJOCO_GL`` and a full disk print one line and exit with status 2;
an interrupted run exits with 130. Compiled programs are kept in JAX's persistent compilation
cache (:mod:`cmamae.compile_cache`; ``--no-compile-cache`` or ``CMAMAE_COMPILE_CACHE=off``
turn it off).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line input, reported as one line with exit status 2."""


def _run_epilog() -> str:
    """The names ``run`` accepts (no task is built but the default one) and the default
    algorithm's settings."""
    import textwrap

    from cmamae import algorithms, tasks
    from cmamae.experiment import config as cfg

    def listing(title: str, names) -> str:
        text = textwrap.fill(
            ", ".join(names),
            width=88,
            initial_indent="  ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        )
        return f"{title}:\n{text}\n"

    task, algo = cfg.DEFAULT_TASK, cfg.DEFAULT_ALGO
    built = tasks.get(task)  # a benchmark task: cheap to build
    settings = algorithms.defaults(algo, built)
    return "".join(
        [
            listing("tasks", tasks.names()),
            listing("algorithms", algorithms.names()),
            listing("presets", cfg.preset_names()),
            listing(
                f"settings of {algo} on {task} (domain {built.domain!r}) and their defaults "
                "(--set KEY=VALUE; the defaults follow the task's domain, task.domain=benchmark "
                "or scaling; other pairs: cmamae.algorithms.defaults(ALGO, "
                "cmamae.tasks.get(TASK)))",
                [f"{k}={v!r}" for k, v in sorted(settings.items())],
            ),
        ]
    )


def _parser() -> argparse.ArgumentParser:
    from cmamae.experiment import config as cfg

    p = argparse.ArgumentParser(
        prog="cmamae",
        description="Quality-diversity optimization with CMA-MAE and friends, compiled in JAX.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # Options every command takes (add_parser(..., parents=common)).
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs in the persistent cache (default: kept in "
        "$CMAMAE_COMPILE_CACHE, else ~/.cache/cmamae/jax; CMAMAE_COMPILE_CACHE=off also "
        "turns it off)",
    )
    common = [options]

    r = sub.add_parser(
        "run",
        help="run an experiment (no arguments: a small real one, about a minute on 2 cores)",
        description="Run ALGO on TASK for EVALS evaluations per seed and write a run folder "
        "(config.json, metrics.csv, archive/, checkpoints/, plots/).",
        epilog=_run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=common,
    )
    r.add_argument("--task", help=f"task name (default: {cfg.DEFAULT_TASK}; list below)")
    r.add_argument("--algo", help=f"algorithm name (default: {cfg.DEFAULT_ALGO}; list below)")
    r.add_argument(
        "--evals",
        type=int,
        help=f"evaluations per seed, cut to whole iterations (default: {cfg.DEFAULT_ITERATIONS:,} "
        "iterations' worth, or the preset's)",
    )
    r.add_argument(
        "--seeds",
        type=int,
        help=f"independent seeds, run together (default: {cfg.DEFAULT_SEEDS}, or the preset's)",
    )
    r.add_argument("--seed", type=int, help="base random seed (default: 0)")
    r.add_argument(
        "--preset",
        help="a named budget (default: none): paper (the papers' budgets), smoke (20 iterations)",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an algorithm setting (sigma0=0.05) or a task setting (task.solution_dim=20);"
        " values are Python literals",
    )
    r.add_argument(
        "--config", help="a TOML or YAML file of run settings (default: none; flags override it)"
    )
    r.add_argument("--name", help="run folder name under --out (default: TASK-ALGO)")
    r.add_argument("--out", default="runs", help="folder that holds run folders (default: runs)")
    r.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    r.add_argument(
        "--checkpoint-every",
        type=int,
        help="iterations between checkpoints (default: a tenth of the run; the newest 2 are kept)",
    )
    r.add_argument(
        "--log-every",
        type=int,
        help="iterations between metrics rows (default: about 200 rows per seed)",
    )
    r.add_argument(
        "--chunk",
        type=int,
        help="iterations per compiled call (default: up to a checkpoint interval, at most 100; "
        "1 for host tasks)",
    )
    r.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    r.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars")
    r.add_argument("--no-plots", action="store_true", help="skip the plots at the end")
    r.add_argument(
        "--devices",
        help="shard the compiled loop over N devices of this process, or 'all': the seeds, "
        "then the evaluations' solutions (default: one device)",
    )
    r.add_argument(
        "--cluster",
        metavar="tcp://HOST:8786",
        help="host tasks (qd-*, *-native): evaluate on the Dask scheduler at this address "
        "(default: a local Dask cluster)",
    )
    r.add_argument(
        "--workers",
        type=int,
        help="host tasks: worker processes of the local Dask cluster (default: one per core)",
    )

    sw = sub.add_parser(
        "sweep",
        help="a grid of runs (tasks x algorithms x setting values), resumable, one report",
        description="Run every TASK x ALGO x combination of --set values (KEY=A,B is an axis "
        "of the grid, KEY=A applies to every cell) as a run folder under --out, all seeds of a "
        "cell batched, then write --out/report/ (the table, mean ± standard error over seeds, "
        "and the QD-score curves). Every cell is checked before any run starts. Running it "
        "again (or --resume OUT) keeps finished cells and resumes interrupted ones; Ctrl-C "
        "stops after the current chunk with status 130.",
        parents=common,
    )
    sw.add_argument("--tasks", help="task names, comma-separated: sphere,arm")
    sw.add_argument("--algos", help="algorithm names, comma-separated: sep-cma-mae,cma-me")
    sw.add_argument("--evals", type=int, help="evaluations per seed of every cell")
    sw.add_argument("--seeds", type=int, help="seeds per cell, run together")
    sw.add_argument("--seed", type=int, help="base random seed of every cell (default: 0)")
    sw.add_argument("--preset", help="a named budget for every cell (paper, smoke)")
    sw.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=V1[,V2...]",
        help="a setting (sigma0, task.solution_dim, ...; as cmamae run --set) with one value or "
        "several (an axis of the grid); values are Python literals, write tuples in brackets",
    )
    sw.add_argument(
        "--config",
        help="a TOML or YAML file: tasks, algos, overrides (a table KEY = [values]), evals, "
        "seeds, seed, preset, checkpoint_every, log_every, chunk (flags override it)",
    )
    sw.add_argument("--out", default="runs/sweep", help="the sweep folder (default: runs/sweep)")
    sw.add_argument("--resume", metavar="SWEEP_DIR", help="continue the sweep in this folder")
    sw.add_argument("--checkpoint-every", type=int, help="as cmamae run, for every cell")
    sw.add_argument("--log-every", type=int, help="as cmamae run, for every cell")
    sw.add_argument("--chunk", type=int, help="as cmamae run, for every cell")
    sw.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    sw.add_argument("--no-plots", action="store_true", help="skip each run's own plots")
    sw.add_argument("--devices", help="as cmamae run: shard each run over N devices or 'all'")
    sw.add_argument("--cluster", metavar="tcp://HOST:8786", help="host tasks: a Dask scheduler")
    sw.add_argument("--workers", type=int, help="host tasks: local Dask worker processes")

    rep = sub.add_parser(
        "report", help="the paper-style table and QD-score curves of runs", parents=common
    )
    rep.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or folders of runs)")
    rep.add_argument(
        "--out", help="output folder (default: report/ beside the run folders, e.g. runs/report)"
    )
    rep.add_argument("--force", action="store_true", help="overwrite an existing report")

    pl = sub.add_parser(
        "plot", help="archive heatmap and objective histogram of a run", parents=common
    )
    pl.add_argument("run", metavar="RUN_DIR")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--out", help="output folder (default: RUN_DIR/plots)")

    rp = sub.add_parser(
        "replay",
        help="replay one elite's scoring episode and draw it",
        description="Re-run the episode that scored one elite (from its recorded provenance), "
        "say whether it reproduced the stored objective and measures, and draw it (a video for "
        "the locomotion tasks).",
        parents=common,
    )
    rp.add_argument("run", metavar="RUN_DIR")
    rp.add_argument("--elite", default="best", help="'best' or a cell index (default: best)")
    rp.add_argument("--measures", help="the elite of the cell of these measures: --measures=m1,m2")
    rp.add_argument("--seed", type=int, default=0, help="which seed's archive (default 0)")
    rp.add_argument(
        "--episode",
        help="which episode: 'stored' (the scoring one; the default when recorded), or after "
        "cmamae evaluate 'median' or a re-evaluation episode number K (from 0)",
    )
    rp.add_argument("--out", help="output folder (default: RUN_DIR/replay)")
    video = rp.add_argument_group("locomotion video (ant, halfcheetah, hopper, walker2d)")
    video.add_argument("--frames", type=int, help="most frames to draw (default: the episode)")
    video.add_argument("--fps", type=float, help="playback frames/s (default: real time, <= 50)")
    video.add_argument("--size", help="frame size WxH (default 640x480 MP4, 320x240 GIF)")
    video.add_argument(
        "--format", choices=("auto", "mp4", "gif"), help="video format (default: MP4 if ffmpeg)"
    )
    ev = sub.add_parser(
        "evaluate",
        help="re-evaluate every elite over many episodes: the corrected archive",
        description="Re-evaluate every elite of every seed's result archive EPISODES times with "
        "fresh start states and write RUN_DIR/evaluation/: per elite the mean and standard "
        "deviation of objective and measures, and the corrected archive (elites re-inserted at "
        "their mean measures with their mean objectives). Interruptible (Ctrl-C) and resumable: "
        "run it again to continue.",
        parents=common,
    )
    ev.add_argument("run", metavar="RUN_DIR")
    ev.add_argument("--episodes", type=int, default=10, help="episodes per elite (default 10)")
    ev.add_argument(
        "--seed", type=int, default=0, help="evaluation seed of the episodes (default 0)"
    )
    ev.add_argument(
        "--batch-size", type=int, help="elites per compiled batch (default: the run's batch)"
    )
    ev.add_argument("--force", action="store_true", help="replace an evaluation of other settings")
    ev.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    ev.add_argument("--cluster", metavar="tcp://HOST:8786", help="host tasks: a Dask scheduler")
    ev.add_argument("--workers", type=int, help="host tasks: local Dask worker processes")
    return p


def _render_options(args) -> dict:
    options = {k: getattr(args, k) for k in ("frames", "fps", "format")}
    if args.size is not None:
        try:
            options["width"], options["height"] = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--size expects WIDTHxHEIGHT in pixels, got {args.size!r}") from None
    return {k: v for k, v in options.items() if v is not None}


def _run_config(args):
    from cmamae.experiment import config as cfg

    base = cfg.RunConfig.from_dict(cfg.read_file(args.config)) if args.config else cfg.RunConfig()
    explicit = {
        "task": args.task,
        "algo": args.algo,
        "evals": args.evals,
        "seeds": args.seeds,
        "seed": args.seed,
        "preset": args.preset,
        "name": args.name,
        "checkpoint_every": args.checkpoint_every,
        "log_every": args.log_every,
        "chunk": args.chunk,
    }
    import dataclasses

    config = dataclasses.replace(base, **{k: v for k, v in explicit.items() if v is not None})
    return config.with_assignments(cfg.parse_assignments(args.set))


def _cmd_run(args) -> int:
    from cmamae import experiment
    from cmamae.experiment.advance import Execution

    execution = Execution(cluster=args.cluster, workers=args.workers, devices=args.devices)
    common = dict(
        quiet=args.quiet,
        tensorboard=args.tensorboard,
        plots=not args.no_plots,
        execution=execution,
    )
    if args.resume:
        given = [
            f"--{k}"
            for k in ("task", "algo", "evals", "seeds", "preset", "config")
            if getattr(args, k) is not None
        ] + (["--set"] if args.set else [])
        if given:
            raise UsageError(f"--resume takes its settings from the run folder; drop {given}")
        outcome = experiment.resume(args.resume, **common)
    else:
        outcome = experiment.start(_run_config(args), args.out, force=args.force, **common)
    print(f"{outcome.status}: {outcome.iterations_done:,} iterations in {outcome.run_dir}")
    return EXIT_INTERRUPTED if outcome.status == "interrupted" else 0


def _cmd_sweep(args) -> int:
    import dataclasses

    from cmamae.experiment import sweep
    from cmamae.experiment.advance import Execution
    from cmamae.experiment.config import read_file

    budget = ("evals", "seeds", "seed", "preset", "checkpoint_every", "log_every", "chunk")
    common = dict(
        quiet=args.quiet,
        plots=not args.no_plots,
        execution=Execution(cluster=args.cluster, workers=args.workers, devices=args.devices),
    )
    if args.resume:
        flags = ("tasks", "algos", "config", *budget)
        given = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k) is not None]
        given += ["--set"] if args.set else []
        if given:
            raise UsageError(f"--resume takes the grid from the sweep folder; drop {given}")
        outcome = sweep.resume_sweep(args.resume, **common)
    else:
        base = sweep.Sweep.from_dict(read_file(args.config)) if args.config else None
        base = base or sweep.Sweep(tasks=(), algos=())
        changes = {k: getattr(args, k) for k in budget if getattr(args, k) is not None}
        for k in ("tasks", "algos"):
            if getattr(args, k) is not None:
                changes[k] = sweep.split_names(getattr(args, k))
        changes["overrides"] = {**base.overrides, **sweep.parse_overrides(args.set)}
        outcome = sweep.run_sweep(dataclasses.replace(base, **changes), args.out, **common)
    if outcome.status != "finished":
        return EXIT_INTERRUPTED
    print(outcome.report["markdown"].read_text())
    for path in outcome.report.values():
        print(f"wrote {path}")
    return 0


def _expand_runs(paths: list[str]) -> list[Path]:
    from cmamae import rundir

    out: list[Path] = []
    for p in map(Path, paths):
        if rundir.is_run(p):
            out.append(p)
        elif p.is_dir() and any(rundir.is_run(c) for c in p.iterdir()):
            out.extend(sorted(c for c in p.iterdir() if rundir.is_run(c)))
        else:
            raise UsageError(f"{str(p)!r} is neither a run folder (no config.json) nor holds runs")
    return out


def _cmd_report(args) -> int:
    from cmamae.viz import report

    runs = _expand_runs(args.runs)
    out = Path(args.out) if args.out else report.default_out(runs)
    try:
        written = report.report(runs, out, force=args.force)
    except FileExistsError as err:
        raise UsageError(str(err)) from None
    print(written["markdown"].read_text())
    for path in written.values():
        print(f"wrote {path}")
    return 0


def _cmd_plot(args) -> int:
    from cmamae import rundir
    from cmamae.viz import archive_plot

    rundir.read_config(args.run)
    out = args.out or Path(args.run) / rundir.PLOT_DIR
    for path in archive_plot.plot_archive(args.run, out, seed=args.seed).values():
        print(f"wrote {path}")
    return 0


def _cmd_replay(args) -> int:
    from cmamae import rundir
    from cmamae.experiment import replay
    from cmamae.experiment.config import parse_value

    rundir.read_config(args.run)
    if args.measures is not None:
        try:
            elite = [float(v) for v in args.measures.split(",")]
        except ValueError:
            msg = f"--measures expects numbers m1,m2,..., got {args.measures!r}"
            raise UsageError(msg) from None
    elif args.elite == "best":
        elite = "best"
    else:
        elite = parse_value(args.elite)
        if isinstance(elite, bool) or not isinstance(elite, int):
            raise UsageError(f"--elite expects 'best' or a cell index, got {args.elite!r}")
    out = args.out or Path(args.run) / "replay"
    from cmamae.viz.video import RenderUnavailable

    try:
        options = _render_options(args)
        result = replay.replay(
            args.run,
            out,
            elite=elite,
            seed=args.seed,
            episode=args.episode,
            render_options=options,
        )
    except (ValueError, RenderUnavailable) as err:  # bad elite, episode or options; no OpenGL
        raise UsageError(str(err).replace("episode ", "--episode ", 1)) from None
    print("\n".join(replay.describe(result)))
    return 0


def _cmd_evaluate(args) -> int:
    from cmamae.experiment import evaluation

    summary = evaluation.evaluate_run(
        args.run,
        episodes=args.episodes,
        seed=args.seed,
        batch_size=args.batch_size,
        force=args.force,
        quiet=args.quiet,
        cluster=args.cluster,
        workers=args.workers,
    )
    print("\n".join(evaluation.describe(summary, args.run)))
    return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0


_COMMANDS = {
    "run": _cmd_run,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
    "plot": _cmd_plot,
    "replay": _cmd_replay,
    "evaluate": _cmd_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cmamae`` command; returns the exit status."""
    from cmamae import _mujoco_gl, compile_cache
    from cmamae.experiment.checkpoint import CheckpointError, DiskFullError
    from cmamae.experiment.config import ConfigError
    from cmamae.rundir import NotARunError

    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        _mujoco_gl.check()
        if getattr(args, "no_compile_cache", False):
            compile_cache.disable()
        else:
            compile_cache.enable()
        return _COMMANDS[args.command](args)
    except (
        UsageError,
        ConfigError,
        NotARunError,
        CheckpointError,
        DiskFullError,
        _mujoco_gl.GLBackendError,
    ) as err:
        print(f"cmamae {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
