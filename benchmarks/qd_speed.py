"""sep-CMA-MAE iteration time excluding evaluation: ours vs pyribs, same CPU, same run.

One iteration = ask (ψ = 5 emitters × λ = 40), insert into a 10⁴-cell 4-D grid archive
(α = 0.001) and the result archive, tell every emitter, restart checks. The "evaluation" is a
trivial function of the first coordinates (objective −Σ_{i<8} x_i², measures x₀..x₃ scaled
into the grid) so that solutions spread over cells and both archives do real insertion work;
for pyribs it runs outside the timed region, for us it is inside the compiled step, where
reading 8 coordinates per solution costs next to nothing.

Both libraries run with float32 solutions (pyribs: ``dtype=np.float32`` on both archives,
which its emitters inherit) and the same archives. pyribs is timed around
``scheduler.ask()`` and ``scheduler.tell()``. Ours is timed two ways:

* per call: one call of the compiled, state-donating step per iteration (the host-side
  ask/tell way of driving it); this includes one jit dispatch (~0.1 ms here) and the
  host's wait for the result, which are most of the time at small n;
* in ``lax.scan``: ``compiled_scan`` (:mod:`cmamae.scheduler`), K iterations per call with the
  per-iteration stats it returns, timed per call and divided by K: how ``cmamae.run`` and the
  experiment runner drive it.

All configurations are timed interleaved, one call of each per round, so that load from
other processes hits them alike; the table gives the median (and the minimum) wall time over
rounds, after a warm-up that includes compilation, and in brackets the median CPU time of
the process (all its threads: XLA may split a large loop over two); on a machine shared with
other jobs CPU time varies less than wall time. The load average is printed before and after.

    python benchmarks/qd_speed.py [--dims 100 20000] [--iters 30] [--ribs-float64] [--all-modes]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter
from cmamae.es import SepCMAES
from cmamae.scheduler import Scheduler, compiled_scan

PSI, LAM, SIGMA0, ALPHA, DIMS = 5, 40, 0.02, 0.001, (10, 10, 10, 10)
RANGES = [(-0.1, 0.1)] * 4
OBJ_COORDS = 8


def evaluate_np(x):
    return -np.sum(x[:, :OBJ_COORDS] ** 2, axis=1), x[:, :4] * 0.5 / SIGMA0 * 0.1


def evaluate_jax(x, key):
    del key
    return -jnp.sum(x[:, :OBJ_COORDS] ** 2, axis=1), x[:, :4] * 0.5 / SIGMA0 * 0.1


def scan_length(n: int) -> int:
    """Iterations per ``lax.scan`` call: calls of ~50-100 ms at n = 100 and n = 20,000."""
    return int(np.clip(200_000 // n, 10, 200))


def ours(n: int, batching: str, scan: bool):
    """Functions running our iterations (blocking), keyed "call" (one jitted step) and, with
    ``scan``, "scan" (``scan_length(n)`` iterations in one ``compiled_scan``; it returns the
    wall and CPU seconds per iteration); and the mode "auto" resolved to. Both share one state."""
    archive = GridArchive(
        solution_dim=n,
        dims=DIMS,
        ranges=RANGES,
        learning_rate=ALPHA,
        threshold_min=-1.0,
        qd_score_offset=-1.0,
    )
    emitter = EvolutionStrategyEmitter(
        SepCMAES(popsize=LAM, sigma0=SIGMA0),
        num_emitters=PSI,
        ranker="imp",
        restart_rule="basic",
        batching=batching,
    )
    scheduler = Scheduler(archive, (emitter,))
    key = jax.random.key(1)
    # The iteration's key is derived inside the compiled step (as compiled_scan does), so a
    # call costs one dispatch and no host-side key construction.
    step = jax.jit(
        lambda s: scheduler.step(jax.random.fold_in(key, s.iteration), s, evaluate_jax),
        donate_argnums=(0,),
    )
    box = {"state": scheduler.init(jax.random.key(0), jnp.zeros(n))}

    def call():
        box["state"] = step(box["state"])
        jax.block_until_ready(box["state"])

    fns = {"call": call}
    if scan:
        k = scan_length(n)

        def scanned():
            t, c = time.perf_counter(), time.process_time()
            box["state"], metrics = compiled_scan(scheduler, key, box["state"], evaluate_jax, k)
            jax.block_until_ready((box["state"], metrics))
            return (time.perf_counter() - t) / k, (time.process_time() - c) / k

        fns["scan"] = scanned
    return fns, emitter.resolved_batching(n)


def pyribs(n: int, dtype):
    """A function running one pyribs iteration (ask + tell; evaluation untimed) and
    returning the wall and CPU seconds it took."""
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import EvolutionStrategyEmitter as RibsES
    from ribs.schedulers import Scheduler as RibsScheduler

    archive = RibsGrid(
        solution_dim=n,
        dims=DIMS,
        ranges=RANGES,
        learning_rate=ALPHA,
        threshold_min=-1.0,
        qd_score_offset=-1.0,
        dtype=dtype,
    )
    result = RibsGrid(solution_dim=n, dims=DIMS, ranges=RANGES, qd_score_offset=-1.0, dtype=dtype)
    emitters = [
        RibsES(
            archive,
            x0=np.zeros(n, dtype),
            sigma0=SIGMA0,
            ranker="imp",
            es="sep_cma_es",
            selection_rule="mu",
            restart_rule="basic",
            batch_size=LAM,
            seed=i,
        )
        for i in range(PSI)
    ]
    scheduler = RibsScheduler(archive, emitters, result_archive=result)

    def run():
        t, c = time.perf_counter(), time.process_time()
        x = scheduler.ask()
        t_ask, c_ask = time.perf_counter() - t, time.process_time() - c
        f, m = evaluate_np(x)
        t, c = time.perf_counter(), time.process_time()
        scheduler.tell(f, m)
        return t_ask + time.perf_counter() - t, c_ask + time.process_time() - c

    return run


def timed(fn) -> tuple[float, float]:
    """Wall and CPU (all threads of this process) seconds of ``fn()``, or what it returns."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out if out is not None else (time.perf_counter() - t, time.process_time() - c)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 20000])
    parser.add_argument("--iters", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--ribs-float64", action="store_true", help="also time pyribs with float64 archives"
    )
    parser.add_argument(
        "--all-modes",
        action="store_true",
        help="also time our per-call step with batching forced to vmap and to map",
    )
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; sep-CMA-MAE, ψ={PSI}, λ={LAM}, "
        f"10^4-cell 4-D grid + result archive; ms per iteration excluding evaluation, "
        f"median (min) [median CPU time] over {args.iters} interleaved rounds; load average "
        f"{os.getloadavg()[0]:.1f} at the start\n"
    )
    modes = ("vmap", "map") if args.all_modes else ()
    head = "| n | ours per call (auto → mode) |"
    head += "".join(f" ours per call, {m} |" for m in modes)
    head += " ours in lax.scan (K) | pyribs float32 |"
    head += " pyribs float64 |" if args.ribs_float64 else ""
    head += " pyribs / ours per call | pyribs / ours in scan |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for n in args.dims:
        fns, resolved = ours(n, "auto", scan=True)
        configs = {"auto": fns["call"], "scan": fns["scan"]}
        for mode in modes:
            configs[mode] = ours(n, mode, scan=False)[0]["call"]
        configs["ribs32"] = pyribs(n, np.float32)
        if args.ribs_float64:
            configs["ribs64"] = pyribs(n, np.float64)
        for fn in configs.values():
            for _ in range(args.warmup):
                fn()
        times = {k: [] for k in configs}
        for _ in range(args.iters):
            for k, fn in configs.items():
                times[k].append(1e3 * np.array(timed(fn)))
        wall = {k: np.array(v)[:, 0] for k, v in times.items()}
        cpu = {k: np.array(v)[:, 1] for k, v in times.items()}
        med = {k: float(np.median(v)) for k, v in wall.items()}
        cell = {k: f"{med[k]:.2f} ({wall[k].min():.2f}) [{np.median(cpu[k]):.2f}]" for k in times}
        row = f"| {n:,} | {cell['auto']} (→ {resolved}) | "
        row += "".join(f"{cell[m]} | " for m in modes)
        row += f"{cell['scan']} (K = {scan_length(n)}) | {cell['ribs32']} | "
        row += f"{cell['ribs64']} | " if args.ribs_float64 else ""
        row += f"{med['ribs32'] / med['auto']:.1f}× | {med['ribs32'] / med['scan']:.1f}× |"
        print(row, flush=True)
        del configs, fns
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
