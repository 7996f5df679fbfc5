"""A reduced-budget QDGym experiment: sep-CMA-MAE, ours vs pyribs 0.12, same evaluation.

Both libraries run the paper's sep-CMA-MAE settings (ψ = 5, λ = 40, σ₀ = 0.02, α = 0.001,
``algorithms.defaults``) on one QDGym task with shorter episodes, the same budget and seeds,
and evaluate through the same function on the same local Dask cluster
(``DaskEvaluator``: one episode per solution, seeded from the iteration's key). Ours runs
through the experiment runner (``cmamae run``'s code path: host-side ask/tell, run folder,
checkpoints); pyribs through its ``Scheduler.ask``/``tell``. Reported: QD score (offset
``min_f``), coverage and best objective of the result archive, mean ± standard error over seeds.

    python benchmarks/qdgym_quality.py --task qd-hopper --episode-length 100 --iterations 30 \
        --seeds 2 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np
from qd_quality import fmt, ribs_scheduler

from cmamae import algorithms, rundir, tasks
from cmamae.experiment import RunConfig, dask_cluster, start
from cmamae.experiment.advance import Execution

ALGO = "sep-cma-mae"


def run_ours(task_name, settings, iterations, seeds, address, out):
    task = tasks.get(task_name, **settings)
    batch = algorithms.get(ALGO, task).scheduler.batch_size
    config = RunConfig(task=task_name, task_settings=settings, algo=ALGO,
                       evals=iterations * batch, seeds=seeds, name="ours")  # fmt: skip
    start(config, out, quiet=True, plots=False, execution=Execution(cluster=address))
    final = rundir.read_metrics(os.path.join(out, "ours"))
    final = final[final["iteration"] == iterations].sort_values("seed")
    return final["qd_score"].to_numpy(), final["coverage"].to_numpy(), final["obj_max"].to_numpy()


def run_ribs_once(task, iterations, seed, evaluator):
    x0 = task.initial_solution(jax.random.key(seed))
    scheduler = ribs_scheduler(task, ALGO, seed, x0=x0)
    key = jax.random.key(10_000 + seed)
    for i in range(iterations):
        x = scheduler.ask()
        f, m = evaluator(x.astype(np.float32), jax.random.fold_in(key, i))
        scheduler.tell(f, m)
    stats = scheduler.result_archive.stats
    return stats.qd_score, stats.coverage, stats.obj_max


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="qd-hopper")
    p.add_argument("--episode-length", type=int, default=100)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    settings = {"episode_length": args.episode_length}
    task = tasks.get(args.task, **settings)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    client = dask_cluster.connect(workers=args.workers)
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        address = client.scheduler.address
        ours = run_ours(args.task, settings, args.iterations, args.seeds, address, out)
        rows["cmamae"] = (*ours, time.perf_counter() - t)
    evaluator = dask_cluster.DaskEvaluator(task, client)
    t = time.perf_counter()
    ribs = np.array([run_ribs_once(task, args.iterations, s, evaluator) for s in range(args.seeds)])
    rows["pyribs"] = (ribs[:, 0], ribs[:, 1], ribs[:, 2], time.perf_counter() - t)
    dask_cluster.close(client)
    batch = algorithms.get(ALGO, task).scheduler.batch_size
    print(f"\n{args.task}, episodes of at most {args.episode_length} steps, {ALGO}, "
          f"{args.iterations} iterations x {batch} = {args.iterations * batch:,} evaluations per "
          f"seed, {args.seeds} seeds, {args.workers} local Dask workers\n")  # fmt: skip
    print("| library | QD score | coverage (%) | best | wall (s) |\n|---|---|---|---|---|")
    for name, (qd, cov, best, wall) in rows.items():
        print(f"| {name} | {fmt(qd, digits=0)} | {fmt(cov, 100)} | {fmt(best, digits=1)} | "
              f"{wall:.0f} |")  # fmt: skip
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
