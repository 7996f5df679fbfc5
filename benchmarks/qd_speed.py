"""sep-CMA-MAE iteration time excluding evaluation: ours vs pyribs, same CPU, same run.

One iteration = ask (ψ = 5 emitters × λ = 40), insert into a 10⁴-cell 4-D grid archive
(α = 0.001) and the result archive, tell every emitter, restart checks. The "evaluation" is a
trivial function of the first coordinates (objective −‖x‖², measures x₀..x₃ scaled into the
grid) so that solutions spread over cells and both archives do real insertion work; for pyribs
it is computed outside the timed region, for us it is inside the compiled step and costs one
pass over the batch.

    python benchmarks/qd_speed.py [--dims 100 20000] [--iters 20]
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


def evaluate_np(x):
    return -np.sum(x * x, axis=1), x[:, :4] * 0.5 / SIGMA0 * 0.1


def evaluate_jax(x, key):
    del key
    return -jnp.sum(x * x, axis=1), x[:, :4] * 0.5 / SIGMA0 * 0.1


def time_ours(n: int, iters: int, batching: str) -> float:
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
    state = scheduler.init(jax.random.key(0), jnp.zeros(n))
    state = step(jax.random.key(1), state)
    jax.block_until_ready(state)
    times = []
    for i in range(iters):
        t = time.perf_counter()
        state = step(jax.random.key(i + 2), state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def time_pyribs(n: int, iters: int) -> float:
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import EvolutionStrategyEmitter as RibsES
    from ribs.schedulers import Scheduler as RibsScheduler

    archive = RibsGrid(
        solution_dim=n,
        dims=DIMS,
        ranges=RANGES,
        learning_rate=ALPHA,
        threshold_min=-1.0,
        dtype=np.float32,
    )
    result = RibsGrid(solution_dim=n, dims=DIMS, ranges=RANGES, dtype=np.float32)
    emitters = [
        RibsES(
            archive,
            x0=np.zeros(n, np.float32),
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
    times = []
    for _ in range(iters + 1):
        t = time.perf_counter()
        x = scheduler.ask()
        t_ask = time.perf_counter() - t
        f, m = evaluate_np(x)
        t = time.perf_counter()
        scheduler.tell(f, m)
        times.append(t_ask + time.perf_counter() - t)
    return 1e3 * float(np.median(times[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 20000])
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; sep-CMA-MAE, ψ={PSI}, λ={LAM}, "
        f"10^4-cell 4-D grid + result archive; median ms per iteration excluding evaluation\n"
    )
    print("| n | ours vmap | ours map | pyribs | × pyribs |")
    print("|---|---|---|---|---|")
    for n in args.dims:
        ours_v = time_ours(n, args.iters, "vmap")
        ours_m = time_ours(n, args.iters, "map")
        ribs_ms = time_pyribs(n, args.iters)
        print(
            f"| {n:,} | {ours_v:.2f} | {ours_m:.2f} | {ribs_ms:.1f} | "
            f"{ribs_ms / min(ours_v, ours_m):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
