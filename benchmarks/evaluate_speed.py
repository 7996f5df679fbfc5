"""``cmamae evaluate`` against the rollout floor, and what re-evaluation does to the scores.

The floor is the task's own compiled evaluation (``jit(evaluate)``) on batches of the run's
elites at the batch ``cmamae evaluate`` uses (:func:`cmamae.experiment.evaluation.even_batch`),
timed after compiling; ``evaluate`` is :func:`cmamae.experiment.evaluation.reevaluate` over
``--episodes`` episodes, timed after a first (compiling) episode. Both count elite evaluations
per second (padding rows not counted). Then the stored and the corrected QD score, coverage
and best of every seed, and one re-evaluation episode of the last seed replayed from its key,
row and batch size (it must give the saved numbers bit for bit).

Example (the docs/tasks.md reduced experiment's ant run)::

    cmamae run --task ant --algo sep-cma-mae --evals 4000 --seeds 2 \\
        --set task.episode_length=100 --name exp100-sep-cma-mae --out /tmp/loco_runs
    OPENBLAS_NUM_THREADS=1 python benchmarks/evaluate_speed.py /tmp/loco_runs/exp100-sep-cma-mae
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from cmamae import rundir
from cmamae.compiled_loop import evaluate_fn
from cmamae.experiment import evaluation
from cmamae.experiment.config import ResolvedRun


def _floor(task, scheduler, solutions: np.ndarray, rows: int, repeats: int) -> float:
    """Elite evaluations per second of ``jit(evaluate)`` on batches of ``rows``."""
    evaluate = jax.jit(evaluate_fn(scheduler, task))
    batches = [solutions[i : i + rows] for i in range(0, len(solutions), rows)]
    batches = [np.concatenate([b, np.zeros((rows - len(b), b.shape[1]), b.dtype)]) for b in batches]
    key = jax.random.key(1)
    jax.block_until_ready(evaluate(batches[0], key))  # compile
    t0 = time.perf_counter()
    for r in range(repeats):
        for b in batches:
            jax.block_until_ready(evaluate(b, jax.random.fold_in(key, r)))
    return repeats * len(solutions) / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished run folder")
    p.add_argument("--episodes", type=int, default=5, help="timed episodes (after one to compile)")
    p.add_argument("--batch-size", type=int, help="default: the run's main batch")
    args = p.parse_args(argv)

    resolved = ResolvedRun.from_json(rundir.read_config(args.run))
    task, scheduler = resolved.task, resolved.algorithm.scheduler
    states = [rundir.load_archive(args.run, s)[1] for s in range(resolved.seeds)]
    cells = [np.flatnonzero(np.asarray(s.occupied)) for s in states]
    solutions = np.concatenate([np.asarray(s.solutions)[c] for s, c in zip(states, cells)])
    batch = args.batch_size or scheduler.batch_size
    rows = evaluation.even_batch(len(solutions), batch)
    print(f"run {args.run}: task {task.name}, {len(solutions)} elites over {len(states)} seeds, ")
    print(f"batches of {rows} rows (at most {batch}), load average {os.getloadavg()[0]:.2f}")

    floor = _floor(task, scheduler, solutions, rows, args.episodes)
    first = evaluation.reevaluate(task, scheduler, states, 1, seed=0, batch_size=batch)
    t0 = time.perf_counter()
    results = evaluation.reevaluate(
        task, scheduler, states, 1 + args.episodes, seed=0, batch_size=batch, done=first
    )
    rate = args.episodes * len(solutions) / (time.perf_counter() - t0)
    print()
    print("| mode | batch rows | elite evaluations/s | ratio to floor |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| floor: jit(task.evaluate) | {rows} | {floor:,.0f} | 1.00 |")
    print(f"| cmamae evaluate | {rows} | {rate:,.0f} | {rate / floor:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    archive = scheduler.best_archive
    print()
    print(f"Stored vs corrected ({results[0].episodes} re-evaluation episodes per elite):")
    print("| seed | elites | QD score | corrected | coverage | corrected | best | corrected |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s, r in enumerate(results):
        a, b = evaluation.stats_of(archive, r.stored), evaluation.stats_of(archive, r.corrected)
        print(
            f"| {s} | {len(r.cells)} | {a['qd_score']:,.1f} | {b['qd_score']:,.1f} | "
            f"{a['coverage']:.2%} | {b['coverage']:.2%} | {a['obj_max']:.2f} | "
            f"{b['obj_max']:.2f} |"
        )

    # one episode replayed from (key, row, batch size): the last elite of the last seed
    from cmamae.provenance import Layout, evaluate_like_run

    g, k = len(solutions) - 1, results[-1].episodes - 1
    batch_rows = np.zeros((1, rows, solutions.shape[1]), solutions.dtype)
    batch_rows[0, g % rows] = solutions[g]
    f, m = evaluate_like_run(
        evaluate_fn(scheduler, task),
        evaluation.episode_key(0, k)[None],
        batch_rows,
        Layout(seeds=1),
    )[:2]
    saved_f = results[-1].objectives[k, -1]
    same = np.float32(f[0, g % rows]) == np.float32(saved_f) and np.array_equal(
        np.float32(m[0, g % rows]), np.float32(results[-1].measures[k, -1])
    )
    print(
        f"\nepisode {k} of elite {g} replayed from its row {g % rows} of {rows}: objective "
        f"{float(f[0, g % rows]):.6g} vs saved {saved_f:.6g}: "
        f"{'bit for bit' if same else 'DIFFERENT'}"
    )


if __name__ == "__main__":
    main()
