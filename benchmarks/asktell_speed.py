"""Host-side ask/tell loop time (excluding evaluation): ours (:class:`cmamae.AskTell`) per noise
setting vs pyribs, same CPU, same run.

One iteration = ``ask()`` (ψ emitters × λ solutions, NumPy out) and ``tell()`` (NumPy in,
insert into a 100 × 100 grid archive and, for α < 1, the result archive; ranking; the ES
update; restarts). The evaluation, a cheap NumPy function (objective −Σ x², measures the
first two coordinates), runs outside the timed region. Both libraries use CMA-ES emitters
(ψ = 5, λ = 20 by default, σ₀ = 0.5, α = 0.01, float32 archives) from the same x0.

The configurations are timed interleaved, one iteration of each per round, after a warm-up
that includes compilation; the table gives the median and minimum wall time per iteration
(ms). This is the measurement behind ``noise="auto"`` (:mod:`cmamae.es._common`).

    python benchmarks/asktell_speed.py [--dims 32 100] [--iters 300] [--es cma-es]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import cmamae
from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter
from cmamae.scheduler import Scheduler

SIGMA0, ALPHA, CELLS = 0.5, 0.01, (100, 100)
NOISE = ("table", "normal", "auto")


def evaluate(x):
    return -np.sum(x**2, axis=1), np.clip(x[:, :2] / 5.0, -1, 1)


def ours(n: int, es_name: str, noise: str, psi: int, lam: int):
    strategy = cmamae.es.get(es_name, popsize=lam, sigma0=SIGMA0, noise=noise)
    archive = GridArchive(
        solution_dim=n, dims=CELLS, ranges=[(-1, 1)] * 2, learning_rate=ALPHA, threshold_min=-1e9
    )
    emitter = EvolutionStrategyEmitter(strategy=strategy, num_emitters=psi)
    loop = cmamae.AskTell(Scheduler(archive=archive, emitters=(emitter,)), np.zeros(n, np.float32))

    def step():
        loop.tell(*evaluate(loop.ask()))

    return step


def pyribs(n: int, psi: int, lam: int):
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import EvolutionStrategyEmitter as RibsES
    from ribs.schedulers import Scheduler as RibsScheduler

    kw = dict(solution_dim=n, dims=CELLS, ranges=[(-1, 1)] * 2, dtype=np.float32)
    archive = RibsGrid(learning_rate=ALPHA, threshold_min=-1e9, **kw)
    result = RibsGrid(**kw)
    emitters = [
        RibsES(archive, x0=np.zeros(n), sigma0=SIGMA0, batch_size=lam, es="cma_es", seed=i)
        for i in range(psi)
    ]
    sched = RibsScheduler(archive, emitters, result_archive=result)

    def step():
        sched.tell(*evaluate(sched.ask()))

    return step


def measure(dims, es_name, iters, psi, lam) -> None:
    print(f"# load before: {os.getloadavg()[0]:.2f}")
    for n in dims:
        configs = {f"ours {k}": ours(n, es_name, k, psi, lam) for k in NOISE}
        configs["pyribs"] = pyribs(n, psi, lam)
        eval_cost = _eval_cost(n, psi * lam)
        times = {k: [] for k in configs}
        for _ in range(20):  # warm-up: compiles
            for step in configs.values():
                step()
        for _ in range(iters):
            for k, step in configs.items():
                t0 = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t0 - eval_cost)
        cells = "  ".join(
            f"{k}: {np.median(v) * 1e3:.2f} (min {np.min(v) * 1e3:.2f})" for k, v in times.items()
        )
        print(f"n = {n}, {es_name} {psi} x {lam}, ms per ask+tell: {cells}")
    print(f"# load after: {os.getloadavg()[0]:.2f}")


def _eval_cost(n: int, batch: int) -> float:
    """Median time (s) of the NumPy evaluation each step includes (subtracted)."""
    x = np.random.default_rng(0).normal(size=(batch, n)).astype(np.float32)
    ts = []
    for _ in range(200):
        t0 = time.perf_counter()
        evaluate(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[32])
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--es", default="cma-es")
    p.add_argument("--psi", type=int, default=5)
    p.add_argument("--lam", type=int, default=20)
    a = p.parse_args()
    measure(a.dims, a.es, a.iters, a.psi, a.lam)


if __name__ == "__main__":
    main()
