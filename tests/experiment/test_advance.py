"""Execution modes of the runner: host-side ask/tell reproduces the compiled loop; the compiled
loop with its seeds sharded over two host devices gives the unsharded metrics (the solutions
axis: test_device_mesh.py); bad --devices/--workers/--cluster are one-line errors with exit
status 2."""

from __future__ import annotations

import importlib.util
import time

import jax
import numpy as np
import pytest
from small_run import task_and_algorithm  # the experiment tests' small run

from cmamae.cli import main
from cmamae.compiled_loop import init_states, seed_keys
from cmamae.experiment.advance import CompiledAdvance, HostAdvance

# two chunks of 10: the small run's chunk program (small_run.py), also test_device_mesh.py's
# unsharded runs
ITERATIONS = 20


class _Quiet:
    def message(self, text):
        pass


def _run(advance, scheduler, task, seeds=2):
    init_keys, run_keys = seed_keys(jax.random.key(0), seeds)
    states = advance.place(init_states(scheduler, task, init_keys))
    pieces = []
    for length in (ITERATIONS // 2, ITERATIONS // 2):  # two chunks: the iteration count carries
        advance.prepare(states, length, _Quiet())
        states, metrics = advance(states, length)
        pieces.append(metrics)
    return {k: np.concatenate([p[k] for p in pieces], axis=1) for k in pieces[0]}


@pytest.mark.parametrize("seeds", [1, 2])
def test_host_ask_tell_reproduces_the_compiled_loop(seeds):
    task, algo = task_and_algorithm()
    scheduler = algo.scheduler
    _, run_keys = seed_keys(jax.random.key(0), seeds)
    compiled = _run(
        CompiledAdvance(scheduler, task.evaluate, run_keys), scheduler, task, seeds=seeds
    )
    evaluate = jax.jit(jax.vmap(task.evaluate))  # the evaluation on the host, per seed key
    on_host = _run(
        HostAdvance(scheduler, run_keys, lambda x, keys: evaluate(x, keys)),
        scheduler,
        task,
        seeds=seeds,
    )
    assert compiled.keys() == on_host.keys()
    for k in ("num_elites", "evaluations", "num_invalid"):
        np.testing.assert_array_equal(on_host[k], compiled[k], err_msg=k)
    for k in ("qd_score", "coverage", "obj_max", "obj_mean"):
        np.testing.assert_allclose(on_host[k], compiled[k], rtol=1e-5, err_msg=k)
    assert compiled["evaluations"][0, -1] == ITERATIONS * 24


SPHERE = ["run", "--task", "sphere", "--evals", "1000", "--quiet", "--no-plots"]
HOST = ["run", "--task", "qd-hopper", "--evals", "200", "--quiet", "--no-plots"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*SPHERE, "--devices", "99"], "devices: 99 requested but only"),
        ([*SPHERE, "--devices", "0"], "devices must be a positive integer"),
        ([*SPHERE, "--workers", "2"], "apply to host-evaluated tasks"),
        ([*HOST, "--workers", "0"], "workers must be an integer >= 1"),
        ([*HOST, "--devices", "2"], "is evaluated on the host"),
        ([*HOST, "--cluster", "tcp://127.0.0.1:1"], "cannot reach a Dask scheduler"),
        ([*HOST, "--cluster", "nonsense"], "scheduler address tcp://HOST:PORT"),
        ([*HOST, "--cluster", "udp://x:1"], "scheduler address tcp://HOST:PORT"),
        ([*HOST, "--algo", "pga-me"], "transitions"),
    ],
)
def test_bad_execution_settings_are_one_line_exit_2(argv, message, capsys, tmp_path):
    if "qd-hopper" in argv and importlib.util.find_spec("pybullet_envs") is None:
        pytest.skip("needs the qdgym extra")
    t0 = time.monotonic()
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # nothing written
