"""QD Ant on PyBullet through Dask: scaling over local workers, host-side cost of an iteration,
ours vs pyribs' scheduler driving the same evaluation function through a Dask client.

1. Environment steps/s and evaluations/s of QD Ant episodes (at most 1000 steps; Xavier-
   initialized policies, some of which fall early, as in a run) on 1 and 2 local worker
   processes (``DaskEvaluator``; each worker keeps its simulator), interleaved round by round;
   the episode function is QDGym's loop (``qdgym.rollout``) returning its executed steps, so
   steps are counted, not assumed. Scaling efficiency = rate(2) / (2 · rate(1)).
2. The host-side cost of one sep-CMA-MAE iteration (ψ = 5, λ = 40, n = 21,256): ask and tell
   (our jitted ask/tell of the runner's host path; pyribs 0.12's ``Scheduler.ask``/``tell``)
   plus dispatch (sending 200 solutions to the workers and gathering the results: measured
   with 1-step episodes; ours: ``DaskEvaluator`` chunks, pyribs' stack: ``client.map`` of one
   episode per solution as the paper's code did). The share of a full iteration is that cost
   over (cost + 200 full episodes at the rate measured in 1. for 2 workers).
3. End to end at a reduced episode length (``--iter-length``, default 100 steps): whole
   iterations (ask, evaluate on 2 workers, tell) of ours and of pyribs + Dask, interleaved,
   compared in environment steps/s (each library's own solutions fall at different steps,
   so evaluations/s alone compares different amounts of simulation).
4. Projected hours for the paper's budget (1M evaluations) on 100 workers, from the per-worker
   rate in 1., the 2-worker efficiency, and our host-side cost per iteration.

    python benchmarks/qdgym_speed.py [--episodes 8] [--rounds 3] [--iter-length 100] [--json F]

Needs ``pip install -e ".[qdgym,dask,bench]"``. Prints the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from qd_quality import ribs_scheduler

from cmamae import algorithms, tasks
from cmamae.compiled_loop import init_states, seed_keys
from cmamae.experiment import dask_cluster
from cmamae.scheduler import host_ask, host_tell
from cmamae.tasks import host, qdgym
from cmamae.tasks.base import bind

PSI, LAM = 5, 40


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def policies(task, count: int) -> np.ndarray:
    keys = jax.random.split(jax.random.key(0), count)
    return np.stack([np.asarray(task.initial_solution(k)) for k in keys])


def counted(env, solution, seed, **settings):
    """QDGym's episode with its executed steps appended to the measures."""
    total, contacts, steps = qdgym.rollout(env, solution, seed, **settings)
    return total, np.append(contacts / steps, steps)


def step_counting(task):
    """``task`` whose episodes also return their executed steps, as a last measure column
    (steps are counted, not assumed: QD Ant's falls end episodes early)."""
    fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
    del fields["evaluate"]
    fields.update(
        measure_names=(*task.measure_names, "steps"),
        measure_ranges=(*task.measure_ranges, (0.0, 1000.0)),
        archive_dims=(*task.archive_dims, 1),
        episode=bind(counted, **dict(task.episode.kwargs)),
    )
    return host.host_task(**fields)


def ours_iteration(task):
    """(ask, tell) callables of our host path for one seed of sep-CMA-MAE on ``task``."""
    scheduler = algorithms.get("sep-cma-mae", task).scheduler
    init_keys, run_keys = seed_keys(jax.random.key(0), 1)
    state = {"s": init_states(scheduler, task, init_keys)}
    pending = {}

    def ask():
        x, _, state["s"] = host_ask(scheduler, run_keys, state["s"])
        jax.block_until_ready(x)
        pending.update(x=x)
        return np.asarray(x[0])

    def tell(f, m):
        x = pending["x"]
        state["s"], _, metrics = host_tell(
            scheduler, run_keys, state["s"], x,
            jnp.asarray(f[None], x.dtype), jnp.asarray(m[None], x.dtype),
        )  # fmt: skip
        jax.block_until_ready(metrics)

    return ask, tell


def ribs_iteration(task):
    """(ask, tell) of pyribs 0.12's scheduler with the same archives, emitters and settings
    (sep-CMA-MAE's defaults on ``task``)."""
    x0 = task.initial_solution(jax.random.key(0))
    scheduler = ribs_scheduler(task, "sep-cma-mae", 0, x0=x0, dtype=np.float32)
    return scheduler.ask, lambda f, m: scheduler.tell(f, m)


def ribs_dispatch(client, task):
    """The paper's stack: one Dask task per solution, ``client.map`` + ``client.gather``."""

    def evaluate(x, key):
        seeds = task.episode_args(key, len(x))
        futures = client.map(
            host.run_episodes, [task.simulator] * len(x), [task.episode] * len(x),
            [row[None] for row in x], [[s] for s in seeds], [task.measure_dim] * len(x),
            pure=False,
        )  # fmt: skip
        out = client.gather(futures)
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    return evaluate


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=8, help="full episodes per scaling round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iter-length", type=int, default=100, help="episode length of part 3")
    p.add_argument("--iter-rounds", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    # pyribs' stack ships every solution in the task graph; Dask warns about the size.
    warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
    print(f"load average before: {load()}")
    full = tasks.get("qd-ant")
    one_step = tasks.get("qd-ant", episode_length=1)
    short = tasks.get("qd-ant", episode_length=args.iter_length)
    clients = {w: dask_cluster.connect(workers=w) for w in (1, 2)}
    for w, c in clients.items():
        c.wait_for_workers(w)
    out: dict = {"load_before": load()}

    # 1. scaling over workers
    x = policies(full, args.episodes)
    counting = step_counting(full)
    evaluators = {w: dask_cluster.DaskEvaluator(counting, c) for w, c in clients.items()}
    for ev in evaluators.values():  # warm-up: build every worker's simulator
        ev(x[: ev.num_workers], jax.random.key(99))
    rates: dict[int, list[float]] = {1: [], 2: []}
    evals: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for w, ev in evaluators.items():
            dt, (_, m) = timed(ev, x, jax.random.key(r))
            steps = m[:, -1]
            rates[w].append(float(steps.sum()) / dt)
            evals[w].append(len(x) / dt)
            mean_steps = float(steps.mean())
    rate = {w: statistics.median(v) for w, v in rates.items()}
    ev_rate = {w: statistics.median(v) for w, v in evals.items()}
    eff = rate[2] / (2 * rate[1])
    out["scaling"] = {"steps_per_s": rate, "evals_per_s": ev_rate, "speedup": rate[2] / rate[1],
                      "efficiency": eff, "mean_steps": mean_steps}  # fmt: skip
    print(f"1. QD Ant, {args.episodes} episodes per round (mean {mean_steps:.0f} steps), median "
          f"of {args.rounds}: 1 worker {rate[1]:,.0f} steps/s ({ev_rate[1]:.2f} eval/s), "
          f"2 workers {rate[2]:,.0f} steps/s ({ev_rate[2]:.2f} eval/s): "
          f"{rate[2] / rate[1]:.2f}x, efficiency {eff:.0%}")  # fmt: skip

    # 2. host-side cost per iteration (ask + tell + dispatch of 200 one-step episodes)
    c2 = clients[2]
    our_ask, our_tell = ours_iteration(full)
    rb_ask, rb_tell = ribs_iteration(full)
    our_eval = dask_cluster.DaskEvaluator(one_step, c2)
    rb_eval = ribs_dispatch(c2, one_step)
    costs: dict[str, list[dict[str, float]]] = {"ours": [], "pyribs": []}
    for r in range(args.rounds + 1):  # the first round compiles / warms up
        for name, ask, ev, tell in (("ours", our_ask, our_eval, our_tell),
                                    ("pyribs", rb_ask, rb_eval, rb_tell)):  # fmt: skip
            t_ask, sol = timed(ask)
            t_eval, (f, m) = timed(ev, sol, jax.random.key(r))
            t_tell, _ = timed(tell, f.astype(np.float32), m.astype(np.float32))
            if r:
                costs[name].append({"ask": t_ask, "dispatch": t_eval, "tell": t_tell})
    episode_s = PSI * LAM * 1000 / rate[2]  # 200 full 1000-step episodes on 2 workers
    out["host_cost"] = {}
    print(f"2. host-side cost of one iteration (n = {full.solution_dim:,}, 200 solutions), "
          f"median of {args.rounds}; share of an iteration with 200 full episodes on 2 workers "
          f"({episode_s:.0f} s):")  # fmt: skip
    for name, rows in costs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        total = sum(med.values())
        share = total / (total + episode_s)
        out["host_cost"][name] = {**med, "total": total, "share": share}
        print(f"   {name:7s} ask {med['ask'] * 1e3:7.1f} ms  tell {med['tell'] * 1e3:7.1f} ms  "
              f"dispatch {med['dispatch'] * 1e3:7.1f} ms  total {total * 1e3:7.1f} ms  "
              f"share {share:.2%}")  # fmt: skip

    # 3. whole iterations at a reduced episode length, 2 workers. The two libraries' solutions
    # differ, and so do their episodes' lengths (falls end them): throughput is compared in
    # environment steps/s, counted per iteration; evaluations/s is printed too.
    short_counting = step_counting(short)
    our_short = dask_cluster.DaskEvaluator(short_counting, c2)
    rb_short = ribs_dispatch(c2, short_counting)
    walls: dict[str, list[float]] = {"ours": [], "pyribs": []}
    steps_done: dict[str, list[float]] = {"ours": [], "pyribs": []}
    for r in range(args.iter_rounds):
        for name, ask, ev, tell in (("ours", our_ask, our_short, our_tell),
                                    ("pyribs", rb_ask, rb_short, rb_tell)):  # fmt: skip
            t0 = time.perf_counter()
            sol = ask()
            f, m = ev(sol, jax.random.key(100 + r))
            tell(f.astype(np.float32), m[:, :-1].astype(np.float32))
            walls[name].append(time.perf_counter() - t0)
            steps_done[name].append(float(m[:, -1].sum()))
    thr = {k: PSI * LAM * len(v) / sum(v) for k, v in walls.items()}
    step_thr = {k: sum(steps_done[k]) / sum(walls[k]) for k in walls}
    mean_len = {k: sum(v) / (PSI * LAM * len(v)) for k, v in steps_done.items()}
    out["iterations"] = {"episode_length": args.iter_length, "evals_per_s": thr,
                         "steps_per_s": step_thr, "mean_steps": mean_len,
                         "walls": walls, "steps": steps_done}  # fmt: skip
    print(f"3. whole iterations, {args.iter_length}-step episodes, 2 workers, "
          f"{args.iter_rounds} interleaved rounds: ours {step_thr['ours']:,.0f} steps/s "
          f"({thr['ours']:.1f} eval/s, mean {mean_len['ours']:.0f} steps), pyribs + Dask "
          f"{step_thr['pyribs']:,.0f} steps/s ({thr['pyribs']:.1f} eval/s, mean "
          f"{mean_len['pyribs']:.0f} steps): {step_thr['ours'] / step_thr['pyribs']:.2f}x "
          "in steps/s")  # fmt: skip

    # 4. projection: 1M evaluations, 100 workers, batch 200 (2 episodes per worker per iteration)
    host_s = out["host_cost"]["ours"]["total"]
    per_iter = host_s + (PSI * LAM / 100) * 1000 / (rate[1] * eff)
    hours = 1_000_000 / (PSI * LAM) * per_iter / 3600
    out["projection_hours"] = hours
    print(
        f"4. projected: 1M evaluations of full episodes on 100 workers: {hours:.1f} h "
        f"(5,000 iterations of {per_iter:.2f} s, every episode counted at 1000 steps: an upper "
        "bound, since falls end episodes early; the paper: about 7 h for Ant on 100 CPUs)"
    )
    for c in clients.values():
        dask_cluster.close(c)
    out["load_after"] = load()
    print(f"load average after: {out['load_after']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
