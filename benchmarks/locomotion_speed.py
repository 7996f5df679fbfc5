"""Locomotion speed: MJX rollouts, model adaptations, and end-to-end QD iterations.

Modes (run one or several; every figure is timed after a warm-up call that compiles):

* ``adaptations``: policy steps/s of a batched ant rollout with Gymnasium's model as shipped,
  then with each of our MJX adaptations added in turn (docs/tasks.md's table).
* ``rollout``: the floor, ``jit(task.evaluate)`` on a batch of ψ·λ = 200 policies, and on
  ``seeds`` × 200 (several seeds' batches in one call).
* ``e2e``: ``cmamae.run`` of sep-CMA-MAE, LM-MA-MAE and OpenAI-MAE (ψ = 5, λ = 40), with 1
  and with ``seeds`` seeds batched: evaluations/s, ratio to the floor at the same batch,
  compile time, and the projected hours for the paper's budget (5 seeds × 1M evaluations of
  ``--paper-length``-step episodes, scaled from the measured episode length).
* ``ratio``: the floor and the end-to-end run of each of ``--algos`` at the same batch, both
  compiled first and then timed alternately (best of ``--repeats``), so that the ratio is
  taken under the same load (``rollout`` and ``e2e`` time them minutes apart).
* ``minf``: the lowest objectives of Xavier-initialized policies per robot (how ``min_f``
  was chosen, docs/tasks.md).
* ``brax``: Brax's ant at the same batch, when brax is installed (benchmark-only): its env
  class with the ``spring`` and ``mjx`` backends, and its MJX model in a bare loop with each
  of our model's fidelity choices added (what the difference costs).
* ``native``: the native backend (``mujoco.batch`` on C threads, behind a
  ``pure_callback``) against MJX in one run, batch ψ·λ = 200: the MJX floor
  (``jit(task.evaluate)``, adapted model), the native floor for both models (adapted, and
  Gymnasium's as shipped) with each of ``--threads``, and sep-CMA-MAE end to end through
  ``cmamae.run`` on the native backend (both models, the most threads; episodes of
  ``--e2e-length`` steps, by default ``--episode-length``): policy steps/s
  (batch × episode length / s, what MJX simulates; native stops simulating ended episodes, so
  the simulated steps are also given), the end-to-end run's share of time spent in the
  episodes (its ratio to the floor; the end-to-end figures are the differences between runs of
  1 and 1 + ``--iterations`` iterations, chunks of one iteration, so that a run's own setup,
  ``run_setup_s``, is not spread over its iterations), and the projected core-hours of the
  paper's QD Ant run (1M evaluations of 1000 steps, every episode assumed to run its 1000
  steps: the simulated rate end to end × threads). The policies are what a first iteration
  samples: x₀ + σ₀·N(0, I).
* ``phases``: where the native engine's time goes, ``native_batch.run_episodes`` on the same
  batch with each of ``--threads``, for both models (adapted, as shipped): per shard thread,
  CPU seconds in the physics (``Batch.rollout``), the policies' forward pass and the rest
  (observation, contacts, reward, bookkeeping: NumPy work that holds the GIL), by thread CPU
  clocks, so that the breakdown holds on a loaded machine; the busiest thread's CPU against
  one thread's gives the speedup the threads reach with a free core each (Amdahl with the
  per-shard work). Then the bare ``mujoco.batch`` probe on the same policies and start state
  (one thread, every step simulated, only observation, forward pass and ``Batch.step``): the
  engine's CPU per simulated policy step over the probe's.
* ``solver``: for ``--task`` with 1, 2, 3, ... Newton iterations (``--solver-iterations``):
  MJX policy steps/s of ``jit(rollout.trajectory)`` on ``--batch`` Xavier policies, and
  agreement with native MuJoCo (same model) for the first ``--agree`` of them: how many keep
  ``qpos`` within 1e-3 for the whole episode, the first step at which the others leave it, and
  how often the contact flags differ (docs/tasks.md, the half-cheetah's solver).

    python benchmarks/locomotion_speed.py --modes rollout e2e --episode-length 100
    python benchmarks/locomotion_speed.py --modes adaptations --episode-length 20
    python benchmarks/locomotion_speed.py --modes minf --episode-length 1000
    python benchmarks/locomotion_speed.py --modes solver --task halfcheetah --episode-length 20
    OPENBLAS_NUM_THREADS=1 python benchmarks/locomotion_speed.py --modes native --repeats 3
    OPENBLAS_NUM_THREADS=1 python benchmarks/locomotion_speed.py --modes phases --repeats 3

On a CPU use short episodes (the per-step rate hardly depends on the length); on a GPU use
``--episode-length 1000`` (the paper's setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import cmamae
from cmamae import algorithms, tasks
from cmamae.tasks.base import bind
from cmamae.tasks.locomotion import rollout
from cmamae.tasks.locomotion.model import Adaptation, load_model

PSI, LAM = 5, 40
PAPER_EVALS, PAPER_SEEDS, PAPER_LENGTH = 1_000_000, 5, 1000


def _timed(fn, *args, repeats=1):
    """(compile-and-first-call seconds, best of ``repeats`` later calls in seconds)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best


def _interleaved(fns: dict, args: tuple, repeats: int):
    """Each of ``fns`` (name -> function of ``args``) called once (compiling), then ``repeats``
    rounds that call each once in turn. Returns, per name: the first call's seconds, the
    seconds of each round's call, and the policy steps simulated per call (native tasks, whose
    episodes stop when they end; None for others)."""
    first, rounds, steps = {}, {name: [] for name in fns}, {}
    for name, fn in fns.items():
        with _EpisodeClock() as clock:
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            first[name] = time.perf_counter() - t0
        steps[name] = clock.steps / clock.calls if clock.calls else None
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            rounds[name].append(time.perf_counter() - t0)
    return first, rounds, steps


def _policies(task, batch, seed=0):
    keys = jax.random.split(jax.random.key(seed), batch)
    return jax.vmap(task.initial_solution)(keys)


def with_adaptation(task, adaptation: Adaptation):
    kwargs = dict(task.evaluate.kwargs)
    kwargs["adaptation"] = adaptation
    return dataclasses.replace(task, evaluate=bind(rollout.evaluate, **kwargs))


def floor(task, batch: int, repeats: int):
    """Seconds per batched rollout (compile, run) of ``batch`` policies."""
    x = _policies(task, batch)
    fn = jax.jit(task.evaluate)
    return _timed(fn, x, jax.random.key(1), repeats=repeats)


def mode_adaptations(args, out):
    task = tasks.get("ant", episode_length=args.episode_length, backend="mjx")
    steps = [
        (
            "Gymnasium ant.xml as shipped (RK4, all geoms collide, pyramidal, 100/50 iters)",
            Adaptation.none(),
        ),
        ("+ Euler integrator", dataclasses.replace(Adaptation.none(), euler=True)),
        (
            "+ only the 4 feet collide with the floor",
            dataclasses.replace(Adaptation.none(), euler=True, feet_only=True),
        ),
        (
            "+ Newton 1 iteration, 4 line-search iterations",
            dataclasses.replace(
                Adaptation.none(),
                euler=True,
                feet_only=True,
                solver_iterations=1,
                ls_iterations=4,
                newton=True,
            ),
        ),
        ("+ Euler damping disabled (mjDSBL_EULERDAMP)", Adaptation(elliptic=False)),
        ("+ elliptic cones (the default adaptation)", Adaptation()),
        ("  variant: 2 solver iterations", Adaptation(solver_iterations=2)),
        (
            "  variant: 4 solver iterations, 8 line-search iterations",
            Adaptation(solver_iterations=4, ls_iterations=8),
        ),
        ("  variant: 1 solver iteration, 8 line-search iterations", Adaptation(ls_iterations=8)),
        ("  variant: 1 solver iteration, 16 line-search iterations", Adaptation(ls_iterations=16)),
        ("  variant: 1 solver iteration, 50 line-search iterations", Adaptation(ls_iterations=50)),
    ]
    rows = []
    for i, (label, adaptation) in enumerate(steps):
        if args.rows and i not in args.rows:
            continue
        first, best = floor(with_adaptation(task, adaptation), args.batch, args.repeats)
        sps = args.batch * args.episode_length / best
        rows.append(dict(model=label, compile_s=round(first - best, 1), steps_per_s=round(sps)))
        print(f"{label:80s} compile {first - best:6.1f} s  {sps:9.0f} policy steps/s", flush=True)
    out["adaptations"] = dict(batch=args.batch, episode_length=args.episode_length, rows=rows)


def mode_rollout(args, out):
    task = tasks.get(args.task, episode_length=args.episode_length, backend=args.backend)
    res = {}
    for seeds in sorted({1, args.seeds}):
        batch = PSI * LAM * seeds
        first, best = floor(task, batch, args.repeats)
        res[seeds] = dict(
            batch=batch,
            compile_s=round(first - best, 1),
            s_per_batch=round(best, 3),
            evals_per_s=round(batch / best, 1),
            steps_per_s=round(batch * args.episode_length / best),
        )
        print(f"floor, batch {batch}: {res[seeds]}", flush=True)
    out["rollout"] = res


def mode_e2e(args, out):
    task = tasks.get(args.task, episode_length=args.episode_length, backend=args.backend)
    floor_rate = {k: v["evals_per_s"] for k, v in out.get("rollout", {}).items()}
    res = []
    for name in args.algos:
        algo = algorithms.get(name, task)
        batch = algo.scheduler.batch_size
        for seeds in sorted({1, args.seeds}):
            evals = batch * args.iterations

            def run(algo=algo, evals=evals, seeds=seeds):
                return cmamae.run(task, algo, evals=evals, seeds=seeds, key=jax.random.key(0))

            t0 = time.perf_counter()
            jax.block_until_ready(run().state)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            jax.block_until_ready(run().state)
            took = time.perf_counter() - t0
            rate = evals * seeds / took
            row = dict(
                algo=name,
                seeds=seeds,
                batch=batch * seeds,
                compile_s=round(first - took, 1),
                evals_per_s=round(rate, 1),
            )
            if seeds in floor_rate:
                row["ratio_to_floor"] = round(rate / floor_rate[seeds], 3)
            scale = PAPER_LENGTH / args.episode_length
            row["projected_h_paper_budget"] = round(
                PAPER_EVALS * PAPER_SEEDS / (rate / scale) / 3600, 2
            )
            res.append(row)
            print(row, flush=True)
    out["e2e"] = res


def mode_ratio(args, out):
    task = tasks.get(args.task, episode_length=args.episode_length, backend=args.backend)
    floor_fn = jax.jit(task.evaluate)
    key = jax.random.key(1)
    res = []
    for name in args.algos:
        algo = algorithms.get(name, task)
        batch = algo.scheduler.batch_size
        for seeds in sorted({1, args.seeds}):
            x = _policies(task, batch * seeds)
            evals = batch * args.iterations

            def run(algo=algo, evals=evals, seeds=seeds):
                return cmamae.run(task, algo, evals=evals, seeds=seeds, key=jax.random.key(0))

            jax.block_until_ready(floor_fn(x, key))
            jax.block_until_ready(run().state)
            t_floor = t_e2e = float("inf")
            for _ in range(max(args.repeats, 1)):
                t0 = time.perf_counter()
                jax.block_until_ready(floor_fn(x, key))
                t_floor = min(t_floor, time.perf_counter() - t0)
                t0 = time.perf_counter()
                jax.block_until_ready(run().state)
                t_e2e = min(t_e2e, time.perf_counter() - t0)
            floor_rate, e2e_rate = batch * seeds / t_floor, evals * seeds / t_e2e
            row = dict(
                algo=name,
                seeds=seeds,
                batch=batch * seeds,
                floor_evals_per_s=round(floor_rate, 1),
                e2e_evals_per_s=round(e2e_rate, 1),
                ratio_to_floor=round(e2e_rate / floor_rate, 3),
            )
            res.append(row)
            print(row, flush=True)
    out["ratio"] = res


def mode_brax(args, out):
    """Brax's ant (benchmark-only) at batch ψ·λ: its env class with the ``spring`` and ``mjx``
    backends, then Brax's MJX ant model in a bare MJX loop (``frame_skip`` ``mjx.step``s
    per policy step, nothing else) alone and with each of our model's fidelity choices,
    and our task's model in the same loop: where the difference to Brax comes from."""
    if importlib.util.find_spec("brax") is None:
        print("brax is not installed: no outside reference", flush=True)
        out["brax"] = None
        return
    from brax import envs  # benchmark-only dependency

    from cmamae.tasks.policies import MLPPolicy

    batch, length = PSI * LAM, args.episode_length
    keys = jax.random.split(jax.random.key(0), batch)
    res = {}
    for backend in ("spring", "mjx"):
        env = envs.get_environment("ant", backend=backend)
        policy = MLPPolicy((env.observation_size, 128, 128, env.action_size))

        def episode(flat, key, env=env, policy=policy):
            def body(s, _):
                s = env.step(s, policy.apply(flat, s.obs))
                return s, s.reward

            return jax.lax.scan(body, env.reset(key), None, length=length)[1].sum()

        x = jax.vmap(policy.init_flat)(keys)
        _, best = _timed(jax.jit(jax.vmap(episode)), x, keys, repeats=args.repeats)
        res[f"brax env, {backend}"] = round(batch * length / best)
        print(f"brax env, {backend}: {res[f'brax env, {backend}']:,} policy steps/s", flush=True)
    for name, model in _brax_model_variants():
        res[name] = _bare_steps_per_s(model, keys, length, args.repeats)
        print(f"{name}: {res[name]:,} policy steps/s", flush=True)
    task = tasks.get("ant", episode_length=length, backend="mjx")
    kw = dict(task.evaluate.kwargs)
    ours = load_model(kw["robot"], kw["adaptation"])
    res["our ant model, bare loop"] = _bare_steps_per_s(ours, keys, length, args.repeats)
    print(f"our ant model, bare loop: {res['our ant model, bare loop']:,} policy steps/s")
    out["brax"] = dict(batch=batch, policy_steps_per_s=res)


def _brax_model_variants():
    """``(name, MjModel)``: Brax's MJX ant (its ant.xml with its MJX solver settings), then
    with each of our ant model's choices (docs/tasks.md), then with all four."""
    import mujoco
    from etils import epath

    path = str(epath.resource_path("brax") / "envs/assets/ant.xml")
    feet = [f"{leg}_foot_geom" for leg in ("left", "right", "third", "fourth")]
    legs = [f"{leg}_ankle_geom" for leg in ("left", "right", "third", "fourth")]
    changes = {
        "elliptic cones": lambda m: setattr(m.opt, "cone", mujoco.mjtCone.mjCONE_ELLIPTIC),
        "8 line-search iterations": lambda m: setattr(m.opt, "ls_iterations", 8),
        "contact margin 0.01": lambda m: [_set_geom(m, g, "margin", 0.01) for g in feet + legs],
        "lower-leg capsules collide, not foot spheres": lambda m: [
            *(_set_geom(m, g, "contype", 0) for g in feet),
            *(_set_geom(m, g, "contype", 1) for g in legs),
        ],
    }

    def model(*names):
        m = mujoco.MjModel.from_xml_path(path)
        m.opt.solver, m.opt.iterations, m.opt.ls_iterations = mujoco.mjtSolver.mjSOL_NEWTON, 1, 4
        m.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
        for n in names:
            changes[n](m)
        return m

    yield "brax ant model, bare loop", model()
    for n in changes:
        yield f"  + {n}", model(n)
    yield "  + all four", model(*changes)


def _set_geom(model, geom: str, field: str, value) -> None:
    import mujoco

    getattr(model, f"geom_{field}")[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom)] = (
        value
    )


def _bare_steps_per_s(model, keys, length: int, repeats: int) -> int:
    """Policy steps/s of ``len(keys)`` Xavier MLPs on ``model`` (an ant: 27 observations,
    8 actions), 5 ``mjx.step``s per policy step and nothing else, from ``qpos0`` at rest."""
    from cmamae.tasks.locomotion import physics
    from cmamae.tasks.policies import MLPPolicy

    mjx = physics.mjx
    mx = mjx.put_model(model, impl=physics.IMPL)
    data0 = mjx.make_data(mx, impl=physics.IMPL)
    policy = MLPPolicy((model.nq - 2 + model.nv, 128, 128, model.nu))

    def episode(flat):
        params = policy.unflatten(flat)

        def body(d, _):
            d = d.replace(ctrl=policy.apply(params, jnp.concatenate([d.qpos[2:], d.qvel])))
            d = jax.lax.fori_loop(0, 5, lambda _, d: mjx.step(mx, d), d)
            return d, d.qpos[0]

        return jax.lax.scan(body, data0, None, length=length)[1].sum()

    x = jax.vmap(policy.init_flat)(keys)
    _, best = _timed(jax.jit(jax.vmap(episode)), x, repeats=repeats)
    return round(len(keys) * length / best)


def _es_samples(task, batch: int, sigma: float = 0.02, seed: int = 0):
    """``batch`` samples x₀ + σ·N(0, I) around a Xavier x₀: what a first QD iteration
    evaluates (independent Xavier policies end their episodes sooner)."""
    k0, k1 = jax.random.split(jax.random.key(seed))
    x0 = task.initial_solution(k0)
    return x0 + sigma * jax.random.normal(k1, (batch, x0.shape[0]), x0.dtype)


class _EpisodeClock:
    """Seconds and simulated policy steps spent in ``native_batch.run_episodes`` (wrapped
    while the context is open)."""

    def __enter__(self):
        from cmamae.tasks.locomotion import native_batch

        self.module, self.inner = native_batch, native_batch.run_episodes
        self.seconds, self.steps, self.calls = 0.0, 0, 0

        def timed(*a, **kw):
            t0 = time.perf_counter()
            episodes = self.inner(*a, **kw)
            self.seconds += time.perf_counter() - t0
            self.steps += int(episodes.steps.sum())
            self.calls += 1
            return episodes

        native_batch.run_episodes = timed
        return self

    def __exit__(self, *exc):
        self.module.run_episodes = self.inner


def mode_native(args, out):
    """The native backend against MJX (module docstring). Floors: ``--repeats`` rounds that
    time each function once in turn, rates from the median round, ratios the median of the
    rounds' ratios (:func:`_interleaved`); end to end: best of ``--repeats``."""
    length, batch = args.episode_length, PSI * LAM
    key = jax.random.key(1)
    rows = []

    def record(row):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        row["load_avg_1min"] = round(load, 2)
        rows.append(row)
        print(row, flush=True)

    # The floors are timed in rounds, each function once per round in turn, and every ratio
    # is the median of the rounds' ratios: this machine's speed moved by 40 % within minutes
    # (docs/tasks.md), so only numbers taken at the same moment compare.
    mjx_task = tasks.get(args.task, episode_length=length, backend="mjx")
    x = _es_samples(mjx_task, batch)
    fns = {("mjx", "adapted", "-"): jax.jit(mjx_task.evaluate)}
    for adapted in (True, False):
        for threads in args.threads:
            task = tasks.get(
                args.task, episode_length=length, backend="native", adapted=adapted, threads=threads
            )
            fns["native", "adapted" if adapted else "as shipped", threads] = jax.jit(task.evaluate)
    first, rounds, steps = _interleaved(fns, (x, key), args.repeats)
    mjx_times = rounds["mjx", "adapted", "-"]

    def vs(times, reference):
        return float(np.median(np.asarray(reference) / np.asarray(times)))

    floors = {}
    for (backend, model, threads), times in rounds.items():
        rate = batch * length / float(np.median(times))
        row = dict(
            what="floor",
            backend=backend,
            model=model,
            threads=threads,
            compile_s=round(first[backend, model, threads] - float(np.median(times)), 1),
            evals_per_s=round(batch * rate / (batch * length), 1),
            policy_steps_per_s=round(rate),
        )
        simulated = steps[backend, model, threads]
        row["simulated_steps_per_s"] = round(
            rate if simulated is None else simulated / float(np.median(times))
        )
        if backend == "native":
            floors[model, threads] = times
            row["vs_mjx_floor"] = round(vs(times, mjx_times), 2)
        record(row)
    threads, e2e_length = max(args.threads), args.e2e_length or length
    for adapted in (True, False):
        model = "adapted" if adapted else "as shipped"
        task = tasks.get(
            args.task,
            episode_length=e2e_length,
            backend="native",
            adapted=adapted,
            threads=threads,
        )
        algo = algorithms.get("sep-cma-mae", task)
        batch_size = algo.scheduler.batch_size

        def run(iterations, task=task, algo=algo, batch_size=batch_size):
            return cmamae.run(
                task,
                algo,
                evals=batch_size * iterations,
                seeds=1,
                key=jax.random.key(0),
                chunk_iterations=1,
            )

        def best_run(iterations):
            """(seconds, seconds in episodes, simulated steps) of the fastest repeat."""
            best = None
            for _ in range(max(args.repeats, 1)):
                with _EpisodeClock() as clock:
                    t0 = time.perf_counter()
                    jax.block_until_ready(run(iterations).state)
                    took = time.perf_counter() - t0
                if best is None or took < best[0]:
                    best = (took, clock.seconds, clock.steps)
            return best

        t0 = time.perf_counter()
        jax.block_until_ready(run(1).state)  # compiles the one-iteration chunk
        compile_s = time.perf_counter() - t0
        # Runs of 1 and 1 + --iterations iterations from the same key: their first iteration
        # is the same, so the differences are the iterations alone, without the run's own
        # setup (fresh archives, results to the host) that a short run would spread over
        # its few iterations.
        short, long = best_run(1), best_run(1 + args.iterations)
        took, in_episodes, simulated = (b - a for a, b in zip(short, long))
        e2e_sim_rate = simulated / took
        core_hours = PAPER_EVALS * PAPER_LENGTH / e2e_sim_rate * threads / 3600
        record(
            dict(
                what="sep-CMA-MAE end to end, 1 seed",
                backend="native",
                model=model,
                threads=threads,
                compile_s=round(compile_s - short[0], 1),
                run_setup_s=round(short[0] - took / args.iterations, 3),
                evals_per_s=round(batch_size * args.iterations / took, 1),
                episode_length=e2e_length,
                seconds_per_iteration=round(took / args.iterations, 3),
                policy_steps_per_s=round(batch_size * args.iterations * e2e_length / took),
                simulated_steps_per_s=round(e2e_sim_rate),
                ratio_to_floor=round(in_episodes / took, 3),
                projected_core_hours_paper_run=round(core_hours, 1),
            )
        )
    record(_runner_paths(args, threads, e2e_length))
    one, most = min(args.threads), max(args.threads)
    summary = dict(  # medians over the rounds of the ratios within a round
        native_floor_vs_mjx_floor=round(vs(floors["adapted", most], mjx_times), 2),
        as_shipped_native_vs_adapted_mjx=round(vs(floors["as shipped", most], mjx_times), 2),
        thread_scaling=round(vs(floors["adapted", most], floors["adapted", one]), 2),
    )
    print(summary, flush=True)
    out["native"] = dict(batch=batch, episode_length=length, rows=rows, summary=summary)


def _runner_paths(args, threads: int, length: int) -> dict:
    """The runner's two ways to run a native task (cmamae.experiment.advance): host-side
    ask/tell around native_batch.evaluate_seeds (what it uses) and the compiled loop with the
    episodes in a host callback; sep-CMA-MAE, 1 seed, adapted ant, ``--iterations`` iterations
    timed alternately, best of ``--repeats``; first call (compiles) apart."""
    from cmamae.compiled_loop import init_states, seed_keys
    from cmamae.experiment.advance import CompiledAdvance, HostAdvance, native_evaluate

    task = tasks.get(args.task, episode_length=length, backend="native", threads=threads)
    scheduler = algorithms.get("sep-cma-mae", task).scheduler
    init_keys, run_keys = seed_keys(jax.random.key(0), 1)
    host = HostAdvance(scheduler, run_keys, native_evaluate(task, scheduler))
    compiled = CompiledAdvance(scheduler, task.evaluate, run_keys)
    quiet = type("Quiet", (), {"message": lambda self, text: None})()
    paths = {"host ask/tell": host, "compiled loop + callback": compiled}
    states, first, best = {}, {}, {}
    for name, advance in paths.items():
        start = init_states(scheduler, task, init_keys)
        t0 = time.perf_counter()
        for chunk in (1, args.iterations):  # the compiled loop compiles a program per length
            advance.prepare(start, chunk, quiet)
        states[name], _ = advance(start, 1)
        jax.block_until_ready(states[name])
        first[name] = time.perf_counter() - t0
    for _ in range(max(args.repeats, 1)):
        for name, advance in paths.items():
            t0 = time.perf_counter()
            states[name], _ = advance(states[name], args.iterations)
            jax.block_until_ready(states[name])
            took = (time.perf_counter() - t0) / args.iterations
            best[name] = min(best.get(name, took), took)
    return dict(
        what="runner paths, sep-CMA-MAE, 1 seed, s per iteration",
        backend="native",
        threads=threads,
        episode_length=length,
        **{f"{n} first_call_s": round(first[n], 2) for n in paths},
        **{f"{n} s_per_iteration": round(best[n], 3) for n in paths},
    )


class _PhaseClock:
    """CPU seconds per thread in the native engine's phases while the context is open:
    ``physics`` (``Batch.rollout`` / ``Batch.step``), ``forward`` (the policies' forward pass,
    ``native.apply``) and ``total`` (a shard's whole episode loop); thread CPU clocks, so
    other processes' load hardly changes them."""

    def __enter__(self):
        import collections
        import threading

        import mujoco.batch

        from cmamae.tasks.locomotion import native, native_batch

        self.cpu = collections.defaultdict(float)
        self.patched = []

        def wrap(owner, name, phase):
            inner = getattr(owner, name)

            def timed(*a, **kw):
                t0 = time.thread_time()
                try:
                    return inner(*a, **kw)
                finally:
                    self.cpu[phase, threading.get_ident()] += time.thread_time() - t0

            self.patched.append((owner, name, inner))
            setattr(owner, name, timed)

        wrap(mujoco.batch.Batch, "rollout", "physics")
        wrap(mujoco.batch.Batch, "step", "physics")
        wrap(native, "apply", "forward")
        wrap(native_batch, "_shard", "total")
        return self

    def __exit__(self, *exc):
        for owner, name, inner in reversed(self.patched):
            setattr(owner, name, inner)

    def threads(self) -> list[dict[str, float]]:
        """Per shard thread: its CPU seconds in each phase, ``rest`` = the others (NumPy
        observation, contacts, reward, bookkeeping, compaction: the GIL-held part)."""
        out = []
        for tid in sorted({t for phase, t in self.cpu if phase == "total"}):
            row = {p: self.cpu[p, tid] for p in ("total", "physics", "forward")}
            row["rest"] = row["total"] - row["physics"] - row["forward"]
            out.append(row)
        return out


def _bare_probe(model, robot, policy, x, qpos, qvel, length: int, repeats: int) -> dict:
    """The bare ``mujoco.batch`` probe on one thread: a ``Batch`` of ``len(x)`` simulations
    from ``qpos``/``qvel``, every one stepped for all ``length`` policy steps (no contacts,
    reward or termination), the observation and the NumPy forward pass of the engine
    (``env.observe``, ``native.apply``) before each ``Batch.step`` of ``frame_skip`` physics
    steps. Best of ``repeats`` by thread CPU: seconds in total, physics and forward."""
    import mujoco.batch

    from cmamae.tasks.locomotion import env, native, native_batch

    batch = mujoco.batch.Batch(model, len(x), 1)  # runs on the calling thread
    q, v, ctrl = batch.bind("qpos"), batch.bind("qvel"), batch.bind("ctrl")
    layers = native_batch.layer_views(policy, x)
    best = None
    for _ in range(max(repeats, 1) + 1):  # the first is a warm-up
        batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        q[:], v[:] = qpos, qvel
        cpu = dict(total=0.0, physics=0.0, forward=0.0)
        t0 = time.thread_time()
        for _ in range(length):
            t1 = time.thread_time()
            action = native.apply(policy, layers, env.observe(robot, q, v, xp=np))
            t2 = time.thread_time()
            ctrl[:] = action
            batch.step(nstep=robot.frame_skip)
            cpu["forward"] += t2 - t1
            cpu["physics"] += time.thread_time() - t2
        cpu["total"] = time.thread_time() - t0
        if best is None or cpu["total"] < best["total"]:
            best = cpu
    return best


def mode_phases(args, out):
    """Where the native engine's time goes, for both models (adapted, Gymnasium's as shipped):
    per shard thread, CPU seconds in physics, the policies' forward pass and the rest, for each
    of ``--threads``, on the batch the ``native`` mode times (best of ``--repeats`` by the
    busiest thread). ``cpu_bound_speedup``: one thread's CPU over the busiest thread's, the
    speedup with a free core per thread. Then the bare probe (:func:`_bare_probe`) on the same
    policies and start state: its CPU per simulated policy step against the engine's on one
    thread (``engine_over_probe``), what the engine's bookkeeping (contacts, reward,
    termination, compaction) adds to MuJoCo's physics and the forward pass."""
    from cmamae.tasks.locomotion import native, native_batch

    length, batch = args.episode_length, PSI * LAM
    rows = []

    def record(row):
        row["load_avg_1min"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(row, flush=True)

    for adapted in (True, False):
        model = "adapted" if adapted else "as shipped"
        task = tasks.get(args.task, episode_length=length, backend="native", adapted=adapted)
        s = dict(task.evaluate.kwargs)
        x = np.asarray(_es_samples(task, batch), np.float64)
        qpos, qvel = native.start_state(task, jax.random.key(1))
        one, engine_one = None, None
        for threads in args.threads:
            run = functools.partial(
                native_batch.run_episodes,
                s["robot"],
                s["adaptation"],
                s["policy"],
                x,
                qpos,
                qvel,
                length,
                threads,
            )

            simulated = int(run().steps.sum())
            best = None
            for _ in range(max(args.repeats, 1)):
                with _PhaseClock() as clock:
                    run()
                per_thread = clock.threads()
                if best is None or max(t["total"] for t in per_thread) < max(
                    t["total"] for t in best
                ):
                    best = per_thread
            total = {p: sum(t[p] for t in best) for p in ("total", "physics", "forward", "rest")}
            busiest = max(t["total"] for t in best)
            one = one or busiest
            if threads == 1:
                engine_one = total["total"] / simulated
            record(
                dict(
                    model=model,
                    what="engine (run_episodes)",
                    threads=threads,
                    simulated_policy_steps=simulated,
                    cpu_s=round(total["total"], 4),
                    cpu_us_per_simulated_step=round(total["total"] / simulated * 1e6, 1),
                    busiest_thread_cpu_s=round(busiest, 4),
                    cpu_bound_speedup=round(one / busiest, 2),
                    **{
                        f"{p}_share": round(total[p] / total["total"], 3)
                        for p in ("physics", "forward", "rest")
                    },
                    per_thread_cpu_s=[round(t["total"], 4) for t in best],
                )
            )
        load = load_model(s["robot"], s["adaptation"])
        probe = _bare_probe(load, s["robot"], s["policy"], x, qpos, qvel, length, args.repeats)
        per_step = probe["total"] / (batch * length)
        record(
            dict(
                model=model,
                what="bare Batch probe (every step simulated; no contacts, reward, termination)",
                threads=1,
                simulated_policy_steps=batch * length,
                cpu_s=round(probe["total"], 4),
                cpu_us_per_simulated_step=round(per_step * 1e6, 1),
                physics_share=round(probe["physics"] / probe["total"], 3),
                forward_share=round(probe["forward"] / probe["total"], 3),
                engine_over_probe=round(engine_one / per_step, 3) if engine_one else None,
            )
        )
    out["phases"] = dict(batch=batch, episode_length=length, rows=rows)


def mode_solver(args, out):
    """Newton iterations: MJX speed and agreement with native MuJoCo (docstring above). The
    variants are compiled first, then timed round-robin ``--repeats`` times (best of each), so
    that a busy machine slows all of them alike."""
    import numpy as np

    from cmamae.tasks.locomotion import native

    base = tasks.get(args.task, episode_length=args.episode_length, backend="mjx")
    x = _policies(base, args.batch)
    key = jax.random.key(1)
    m = min(args.agree, args.batch)
    variants = {}
    for n in args.solver_iterations:
        task = with_adaptation(base, Adaptation(solver_iterations=n))
        kw = dict(task.evaluate.kwargs)
        fn = jax.jit(lambda s, k, kw=kw: rollout.trajectory(s, k, **kw))
        t0 = time.perf_counter()
        traj = {k: np.asarray(v)[:m] for k, v in fn(x, key).items()}
        variants[n] = dict(task=task, fn=fn, traj=traj, first=time.perf_counter() - t0)
    best = {n: float("inf") for n in variants}
    for _ in range(max(args.repeats, 1)):
        for n, v in variants.items():
            t0 = time.perf_counter()
            jax.block_until_ready(v["fn"](x, key))
            best[n] = min(best[n], time.perf_counter() - t0)
    rows = []
    for n, v in variants.items():
        traj = v["traj"]
        nat = native.trajectory(v["task"], np.asarray(x[:m]), key)
        err = np.abs(traj["qpos"] - nat["qpos"]).max(axis=2)  # (m, episode_length)
        left = [int(np.argmax(e > 1e-3)) + 1 for e in err if (e > 1e-3).any()]
        rel = np.abs(traj["objective"] - nat["objective"]) / np.maximum(np.abs(nat["objective"]), 1)
        row = dict(
            solver_iterations=n,
            compile_s=round(v["first"] - best[n], 1),
            steps_per_s=round(args.batch * args.episode_length / best[n]),
            agree=f"{m - len(left)}/{m}",
            first_step_apart_median=float(np.median(left)) if left else None,
            first_step_apart_min=min(left) if left else None,
            contact_flags_differ=round(float(np.mean(traj["contacts"] != nat["contacts"])), 4),
            objective_rel_err_median=round(float(np.median(rel)), 5),
            objective_rel_err_max=round(float(np.max(rel)), 5),
        )
        rows.append(row)
        print(row, flush=True)
    out["solver"] = dict(
        task=args.task, batch=args.batch, episode_length=args.episode_length, rows=rows
    )


def mode_minf(args, out):
    """The lowest objectives of Xavier-initialized policies (a run's x0 and what its first
    iterations sample), at full episode length: how docs/tasks.md chose each ``min_f``."""
    res = {}
    for name in args.robots:
        task = tasks.get(name, episode_length=args.episode_length, backend=args.backend)
        fn = jax.jit(task.evaluate)
        objs = []
        for i in range(args.minf_batches):
            x = _policies(task, PSI * LAM, seed=100 + i)
            objs.append(jax.device_get(fn(x, jax.random.key(i))[0]))
        objs = jnp.concatenate([jnp.asarray(o) for o in objs])
        res[name] = dict(
            n=int(objs.size),
            min=round(float(objs.min()), 2),
            p1=round(float(jnp.percentile(objs, 1)), 2),
            median=round(float(jnp.median(objs)), 2),
            max=round(float(objs.max()), 2),
        )
        print(name, res[name], flush=True)
    out["minf"] = res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--modes",
        nargs="+",
        default=["rollout", "e2e", "brax"],
        choices=[
            "adaptations",
            "rollout",
            "e2e",
            "ratio",
            "brax",
            "minf",
            "solver",
            "native",
            "phases",
        ],
    )
    p.add_argument(
        "--backend",
        default="mjx",
        choices=["mjx", "native", "auto"],
        help="backend of 'rollout', 'e2e', 'ratio' and 'minf' ('native' compares both)",
    )
    p.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="for 'native' and 'phases'"
    )
    p.add_argument("--solver-iterations", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--agree", type=int, default=16, help="policies compared with native")
    p.add_argument("--robots", nargs="+", default=["ant", "halfcheetah", "hopper", "walker2d"])
    p.add_argument("--minf-batches", type=int, default=2, help="batches of 200 for 'minf'")
    p.add_argument("--task", default="ant")
    p.add_argument("--episode-length", type=int, default=100)
    p.add_argument(
        "--e2e-length",
        type=int,
        help="episode length of 'native''s end-to-end rows (default: --episode-length)",
    )
    p.add_argument(
        "--batch", type=int, default=PSI * LAM, help="batch of 'adaptations' and 'solver'"
    )
    p.add_argument("--rows", type=int, nargs="*", help="rows of 'adaptations' to run (0-7)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=2, help="QD iterations per e2e timing")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--algos", nargs="+", default=["sep-cma-mae", "lm-ma-mae", "openai-mae"])
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    out = dict(
        device=str(jax.devices()[0]),
        platform=platform.platform(),
        jax=jax.__version__,
        episode_length=args.episode_length,
    )
    print(out, flush=True)
    modes = ("adaptations", "solver", "minf", "rollout", "e2e", "ratio", "brax", "native", "phases")
    for mode in modes:
        if mode in args.modes:
            globals()[f"mode_{mode}"](args, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    jnp.zeros(())  # initialize the backend before timing
    main()
