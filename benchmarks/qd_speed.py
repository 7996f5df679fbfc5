"""sep-CMA-MAE iteration time excluding evaluation: ours vs pyribs, same CPU, same run.

One iteration = ask (ψ = 5 emitters × λ = 40), insert into a 10⁴-cell 4-D grid archive
(α = 0.001) and the result archive, tell every emitter, restart checks. The "evaluation" is a
trivial function of the first coordinates (objective −Σ_{i<8} x_i², measures x₀..x₃ scaled
into the grid) so that solutions spread over cells and both archives do real insertion work;
for pyribs it runs outside the timed region, for us it is inside the compiled step, where
reading 8 coordinates per solution costs next to nothing.

Both libraries run with float32 solutions (pyribs: ``dtype=np.float32`` on both archives,
which its emitters inherit) and the same archives; pyribs is timed around
``scheduler.ask()`` and ``scheduler.tell()``, ours around one call of the compiled,
state-donating step. All configurations are timed interleaved, one iteration of each per
round, so that load from other processes on the machine hits them alike; the table gives
the median (and the minimum) over rounds, after a warm-up that includes compilation.

    python benchmarks/qd_speed.py [--dims 100 20000] [--iters 30] [--ribs-float64]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter
from cmamae.es import SepCMAES
from cmamae.scheduler import Scheduler

PSI, LAM, SIGMA0, ALPHA, DIMS = 5, 40, 0.02, 0.001, (10, 10, 10, 10)
RANGES = [(-0.1, 0.1)] * 4
OBJ_COORDS = 8


def evaluate_np(x):
    return -np.sum(x[:, :OBJ_COORDS] ** 2, axis=1), x[:, :4] * 0.5 / SIGMA0 * 0.1


def evaluate_jax(x, key):
    del key
    return -jnp.sum(x[:, :OBJ_COORDS] ** 2, axis=1), x[:, :4] * 0.5 / SIGMA0 * 0.1


def ours(n: int, batching: str):
    """A function running one of our iterations (blocking), and the mode it resolved to."""
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
    step = jax.jit(lambda k, s: scheduler.step(k, s, evaluate_jax), donate_argnums=(1,))
    box = {"state": scheduler.init(jax.random.key(0), jnp.zeros(n)), "i": 0}

    def run():
        box["i"] += 1
        box["state"] = step(jax.random.key(box["i"]), box["state"])
        jax.block_until_ready(box["state"])

    return run, emitter.resolved_batching(n)


def pyribs(n: int, dtype):
    """A function running one pyribs iteration (ask + tell; evaluation untimed) and
    returning the seconds it took."""
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
        t = time.perf_counter()
        x = scheduler.ask()
        t_ask = time.perf_counter() - t
        f, m = evaluate_np(x)
        t = time.perf_counter()
        scheduler.tell(f, m)
        return t_ask + time.perf_counter() - t

    return run


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out if isinstance(out, float) else time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 20000])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--ribs-float64", action="store_true", help="also time pyribs with float64 archives"
    )
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; sep-CMA-MAE, ψ={PSI}, λ={LAM}, "
        f"10^4-cell 4-D grid + result archive; ms per iteration excluding evaluation, "
        f"median (min) over {args.iters} interleaved rounds\n"
    )
    head = "| n | ours vmap | ours map | ours auto (→ mode) | pyribs float32 |"
    head += " pyribs float64 |" if args.ribs_float64 else ""
    print(head + " pyribs / ours auto |")
    print("|---" * (head.count("|")) + "|")
    for n in args.dims:
        configs = {}
        for mode in ("vmap", "map", "auto"):
            configs[mode], resolved = ours(n, mode)
        configs["ribs32"] = pyribs(n, np.float32)
        if args.ribs_float64:
            configs["ribs64"] = pyribs(n, np.float64)
        for fn in configs.values():
            for _ in range(args.warmup):
                fn()
        times = {k: [] for k in configs}
        for _ in range(args.iters):
            for k, fn in configs.items():
                times[k].append(1e3 * timed(fn))
        med = {k: float(np.median(v)) for k, v in times.items()}
        cell = {k: f"{med[k]:.2f} ({min(times[k]):.2f})" for k in times}
        row = f"| {n:,} | {cell['vmap']} | {cell['map']} | {cell['auto']} (→ {resolved}) | "
        row += f"{cell['ribs32']} | "
        row += f"{cell['ribs64']} | " if args.ribs_float64 else ""
        print(row + f"{med['ribs32'] / med['auto']:.1f}× |", flush=True)
        del configs


if __name__ == "__main__":
    main()
