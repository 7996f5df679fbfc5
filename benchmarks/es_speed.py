"""Ask+tell time per iteration of ψ = 5 evolution-strategy instances, λ = 40, after compilation.

Ours (both noise generators, ``vmap`` and ``lax.map`` over the instances) beside pyribs'
optimizers alone (``ribs.emitters.opt``, five instances in a Python loop) and evosax (five
states under ``vmap`` and under ``lax.map``), all in this one process on this machine. Fitness is
the sphere −‖x‖² in every library (one cheap pass). Prints the random-number settings, then a
Markdown table with the median milliseconds per iteration and our best mode's speed-up over
pyribs and over evosax's faster mode.

Steady state: for LM-MA-ES every library runs ``WARMUP`` = λ + 2 ≥ k generations before it is
timed, because pyribs' LM-MA-ES loops over min(generation, k) direction vectors (its cost grows
over the first k generations; compiled JAX code, ours and evosax's, costs the same in every
generation). Above n = 50,000, pyribs' LM-MA-ES runs 2 real generations and then has its
generation counter set to k, which makes it do the steady-state arithmetic (k vectors) without
many minutes of warm-up. The other strategies' cost does not depend on the generation; they
(and LM-MA-ES above n = 50,000) warm up 3 generations.

    python benchmarks/es_speed.py                       # n = 1,000, 20,000, 200,000
    python benchmarks/es_speed.py --dims 20000 --reps 5

``--mode user`` times instead exactly what a user writes around a strategy (README, "Evolution
strategies alone"): ``jax.jit(jax.vmap(ask))``, a jitted fitness, ``jax.jit(jax.vmap(tell))``
(or the same with ``jax.lax.map`` over the ψ states), no donation, the state handed from call to
call, each library with its default settings (ours: noise="auto"), after the same warm-up.
Ours and evosax alternate over ``--rounds`` rounds in this process; each round prints the
median of ``--reps`` iterations per cell, and the ratio of the best of our two drivers to the
best of evosax's, then the load average.

    python benchmarks/es_speed.py --mode user --dims 20000 --rounds 5 --reps 7
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import es
from cmamae.emitters.evolution_strategy import batched
from cmamae.es import noise as es_common

PSI, LAM, SIGMA0 = 5, 40, 0.02
WARMUP = LAM + 2  # ≥ k = λ generations: LM-MA-ES's active vectors all in use
LARGE_N = 50_000
OURS = {"cma-es": {}, "sep-cma-es": {}, "lm-ma-es": {"k": LAM}, "openai-es": {}}


def median_ms(step, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):  # compile, then reach the steady state
        step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def warmup_gens(name: str, n: int) -> int:
    return WARMUP if name == "lm-ma-es" and n <= LARGE_N else 3


def time_instances(one, init, mode: str, reps: int, warmup: int) -> float:
    """Median ms of ``one(key, state) -> state`` over ψ instances made by ``init(key)``."""
    step = jax.jit(batched(one, mode), donate_argnums=(1,))
    holder = {"state": jax.vmap(init)(jax.random.split(jax.random.key(0), PSI))}
    counter = iter(range(10**9))

    def run():
        keys = jax.random.split(jax.random.key(next(counter)), PSI)
        holder["state"] = step(keys, holder["state"])
        jax.block_until_ready(holder["state"])

    return median_ms(run, reps, warmup)


def time_ours(name: str, n: int, noise: str, mode: str, reps: int) -> float:
    strategy = es.get(name, popsize=LAM, sigma0=SIGMA0, noise=noise, **OURS[name])

    def one(key, state):
        k_ask, _ = jax.random.split(key)
        x, state = strategy.ask(k_ask, state)
        return strategy.tell(state, x, -jnp.sum(x * x, axis=1))

    init = lambda k: strategy.init(k, jnp.zeros(n))  # noqa: E731
    return time_instances(one, init, mode, reps, warmup_gens(name, n))


def time_pyribs(name: str, n: int, reps: int) -> float:
    from ribs.emitters import opt

    cls, extra = {
        "cma-es": (opt.CMAEvolutionStrategy, {}),
        "sep-cma-es": (opt.SeparableCMAEvolutionStrategy, {}),
        "lm-ma-es": (opt.LMMAEvolutionStrategy, {"n_vectors": LAM}),
        "openai-es": (opt.OpenAIEvolutionStrategy, {}),
    }[name]
    opts = []
    for i in range(PSI):
        o = cls(sigma0=SIGMA0, solution_dim=n, batch_size=LAM, seed=i, dtype=np.float32, **extra)
        o.reset(np.zeros(n, np.float32))
        opts.append(o)

    def run():
        for o in opts:
            x = o.ask()
            f = -np.sum(x * x, axis=1)
            order = np.argsort(-f)
            o.tell(order, f, LAM // 2)

    if n <= LARGE_N:
        return median_ms(run, reps, warmup_gens(name, n))
    for _ in range(2):
        run()
    if name == "lm-ma-es":
        for o in opts:  # steady-state cost without k real generations (module docstring)
            o.current_gens = max(o.current_gens, LAM)
    return median_ms(run, reps, 0)


def time_evosax(name: str, n: int, mode: str, reps: int) -> float:
    from evosax import algorithms as ea

    cls = {
        "cma-es": ea.CMA_ES,
        "sep-cma-es": ea.Sep_CMA_ES,
        "lm-ma-es": ea.LM_MA_ES,
        "openai-es": ea.Open_ES,
    }[name]
    strategy = cls(population_size=LAM, solution=jnp.zeros(n))
    params = strategy.default_params

    def one(key, state):
        k_ask, k_tell = jax.random.split(key)
        x, state = strategy.ask(k_ask, state, params)
        state, _ = strategy.tell(k_tell, x, jnp.sum(x * x, axis=1), state, params)  # minimizes
        return state

    init = lambda k: strategy.init(k, jnp.zeros(n), params)  # noqa: E731
    return time_instances(one, init, mode, reps, warmup_gens(name, n))


def user_driver(ask, tell, init, fitness, mode: str):
    """``step()`` running one user-written iteration (``mode``: "vmap" or "map" over the ψ
    instances; separate non-donating jits for ask, fitness and tell, as a user writes them)."""
    if mode == "vmap":
        ask_b, tell_b = jax.jit(jax.vmap(ask)), jax.jit(jax.vmap(tell))
    else:
        ask_b = jax.jit(lambda k, s: jax.lax.map(lambda a: ask(*a), (k, s)))
        tell_b = jax.jit(lambda s, x, f: jax.lax.map(lambda a: tell(*a), (s, x, f)))
    fit = jax.jit(fitness)
    holder = {"state": jax.vmap(init)(jax.random.split(jax.random.key(0), PSI))}
    counter = iter(range(10**9))

    def step():
        keys = jax.random.split(jax.random.key(next(counter)), PSI)
        x, state = ask_b(keys, holder["state"])
        holder["state"] = tell_b(state, x, fit(x))
        jax.block_until_ready(holder["state"])

    return step


def user_steps(name: str, n: int) -> dict:
    """The four user drivers ("ours vmap", "ours map", "evosax vmap", "evosax map")."""
    from evosax import algorithms as ea

    ours = es.get(name, popsize=LAM, sigma0=SIGMA0, **OURS[name])
    cls = {"cma-es": ea.CMA_ES, "sep-cma-es": ea.Sep_CMA_ES, "lm-ma-es": ea.LM_MA_ES}
    evo = cls.get(name, ea.Open_ES)(population_size=LAM, solution=jnp.zeros(n))
    params = evo.default_params
    sides = {
        "ours": (
            ours.ask,
            ours.tell,
            lambda k: ours.init(k, jnp.zeros(n)),
            lambda x: -jnp.sum(x * x, axis=-1),  # maximizes
        ),
        "evosax": (
            lambda k, st: evo.ask(k, st, params),
            lambda st, x, f: evo.tell(jax.random.key(0), x, f, st, params)[0],
            lambda k: evo.init(k, jnp.zeros(n), params),
            lambda x: jnp.sum(x * x, axis=-1),  # minimizes
        ),
    }
    return {
        f"{side} {mode}": user_driver(*sides[side], mode)
        for side in ("ours", "evosax")
        for mode in ("vmap", "map")
    }


def main_user(args):
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; ψ={PSI}, λ={LAM}; user-written "
        f"drivers (module docstring), median of {args.reps} iterations per cell after warm-up "
        f"({WARMUP} generations for LM-MA-ES, else 3), ms per ask+fitness+tell of all ψ instances"
    )
    print(random_settings(args.dims))
    cols = ["ours vmap", "ours map", "evosax vmap", "evosax map"]
    print("| n | ES | round | " + " | ".join(cols) + " | × evosax | load (1 min) |")
    print("|---" * (len(cols) + 5) + "|")
    for n in args.dims:
        for name in OURS:
            if name == "cma-es" and n > args.cma_max_dim:
                continue
            steps = user_steps(name, n)
            for step in steps.values():  # compile and reach the steady state
                for _ in range(warmup_gens(name, n)):
                    step()
            ratios = []
            for r in range(args.rounds):
                row = {c: median_ms(steps[c], args.reps, warmup=1) for c in cols}
                ratios.append(
                    min(row["evosax vmap"], row["evosax map"])
                    / min(row["ours vmap"], row["ours map"])
                )
                cells = " | ".join(f"{row[c]:.1f}" for c in cols)
                load = os.getloadavg()[0]
                print(
                    f"| {n:,} | {name} | {r + 1} | {cells} | {ratios[-1]:.1f} | {load:.1f} |",
                    flush=True,
                )
            print(
                f"| {n:,} | {name} | median | | | | | {np.median(ratios):.1f} "
                f"({min(ratios):.1f}–{max(ratios):.1f}) | |",
                flush=True,
            )


def random_settings(dims) -> str:
    """The PRNG and noise settings this run uses (they decide the random streams)."""
    sizes = ", ".join(f"n={n:,}: {es_common.noise_table_size(n):,}" for n in dims)
    return (
        f"PRNG: jax default impl {jax.config.jax_default_prng_impl!r}, "
        f"jax_threefry_partitionable={jax.config.jax_threefry_partitionable} (ours, evosax)\n"
        f"ours 'table': noise table of N(0,1) floats per instance ({sizes} entries), contiguous "
        "slices at random offsets times random signs (cmamae.es._common.standard_normal; "
        "offsets and signs drawn with jax_threefry_partitionable=True)\n"
        "ours 'shared' (noise='auto' of a standalone ES from 4,096 numbers per ask): the same "
        f"sampling from one process-wide table (seed {es_common.SHARED_TABLE_SEED}) outside "
        "the state\n"
        "ours 'normal': jax.random.normal; pyribs: NumPy default_rng (PCG64), float32\n"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1000, 20000, 200000])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--cma-max-dim", type=int, default=1000, help="largest n at which the Θ(n²) CMA-ES runs"
    )
    parser.add_argument("--skip-evosax", action="store_true")
    parser.add_argument(
        "--mode",
        choices=["emitter", "user"],
        default="emitter",
        help="emitter: one donated jit of ask+tell per library and generator (the default); "
        "user: the drivers a user writes, ours against evosax (module docstring)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="user mode: alternating rounds")
    args = parser.parse_args()
    if args.mode == "user":
        return main_user(args)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; ψ={PSI}, λ={LAM}; "
        f"median of {args.reps} iterations after warm-up ({WARMUP} generations for LM-MA-ES "
        f"up to n = {LARGE_N:,}, else 3), ms per ask+tell of all ψ instances"
    )
    print(random_settings(args.dims))
    cols = [
        "ours table/vmap",
        "ours table/map",
        "ours normal/vmap",
        "ours normal/map",
        "pyribs",
        "evosax vmap",
        "evosax map",
        "× pyribs",
        "× evosax",
    ]
    print("| n | ES | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for n in args.dims:
        for name in OURS:
            if name == "cma-es" and n > args.cma_max_dim:
                continue
            row = {}
            for noise in ("table", "normal"):
                for mode in ("vmap", "map"):
                    row[f"ours {noise}/{mode}"] = time_ours(name, n, noise, mode, args.reps)
            row["pyribs"] = time_pyribs(
                name, n, max(2, args.reps // 2) if n > LARGE_N else args.reps
            )
            for mode in ("vmap", "map"):
                row[f"evosax {mode}"] = (
                    float("nan") if args.skip_evosax else time_evosax(name, n, mode, args.reps)
                )
            best = min(row[c] for c in cols[:4])
            row["× pyribs"] = row["pyribs"] / best
            row["× evosax"] = min(row["evosax vmap"], row["evosax map"]) / best
            cells = [f"{row[c]:.1f}" for c in cols]
            print(f"| {n:,} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
