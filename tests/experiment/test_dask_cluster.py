"""Dask evaluation of host tasks on a 2-worker LocalCluster: same numbers as in-process, a worker
killed mid-batch changes nothing, a raising evaluation is counted and the run goes on, and the
runner's host path (run folder, checkpoints, exact resume) on a cluster."""

from __future__ import annotations

import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

pytest.importorskip("distributed", reason="needs the dask extra")
pytest.importorskip("pybullet_envs.gym_locomotion_envs", reason="needs the qdgym extra")

from cmamae import algorithms, rundir, tasks  # noqa: E402
from cmamae.compiled_loop import init_states, seed_keys  # noqa: E402
from cmamae.experiment import RunConfig, checkpoint, dask_cluster, resume, start  # noqa: E402
from cmamae.experiment.advance import Execution, HostAdvance, dask_evaluate  # noqa: E402


@pytest.fixture(scope="module")
def client():
    c = dask_cluster.connect(workers=2)
    c.wait_for_workers(2, timeout=120)
    yield c
    dask_cluster.close(c)


def _solutions(task, count, seed=0):
    keys = jax.random.split(jax.random.key(seed), count)
    return np.stack([np.asarray(task.initial_solution(k)) for k in keys])


def test_same_numbers_as_in_process_in_order_and_failures_counted(client, caplog):
    task = tasks.get("qd-hopper", episode_length=40)
    x = _solutions(task, 7)
    x[4, 0] = np.nan  # this episode raises (pybullet asserts finite actions)
    key = jax.random.key(5)
    expected = task.evaluate(x, key)
    evaluator = dask_cluster.DaskEvaluator(task, client, chunk_size=3)  # uneven chunks
    with caplog.at_level("WARNING", logger="cmamae.tasks.host"):
        got = evaluator(x, key)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(got[0][4]) and np.isfinite(np.delete(got[0], 4)).all()
    assert evaluator.num_failed == 1 and "row 4 failed twice" in caplog.text
    evaluator.close()  # a borrowed client stays open
    assert client.status == "running"


def test_native_mujoco_tasks_on_the_cluster_match_native_evaluate(client):
    from cmamae.tasks.locomotion import native

    task = tasks.get("walker2d-native", episode_length=30)
    assert task.host_evaluated and task.solution_dim == tasks.get("walker2d").solution_dim
    x = _solutions(task, 5)
    key = jax.random.key(4)
    expected = native.evaluate(tasks.get("walker2d", episode_length=30), x, key)
    got = dask_cluster.DaskEvaluator(task, client, chunk_size=2)(x, key)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert np.all((got[1] >= 0) & (got[1] <= 1))


def test_worker_killed_mid_batch_gives_the_same_result(client):
    # Half-Cheetah never terminates early: 32 x 300 steps keep both workers busy for seconds
    # (pybullet steps about 1,000-2,000 times a second per core), so the kill lands mid-batch
    # on an idle machine too.
    task = tasks.get("qd-halfcheetah", episode_length=300)
    x = _solutions(task, 32, seed=1)
    key = jax.random.key(2)
    evaluator = dask_cluster.DaskEvaluator(task, client, chunk_size=2)
    reference = evaluator(x, key)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    done = threading.Event()

    def kill_soon():
        time.sleep(0.3)
        if not done.is_set():
            os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    got = evaluator(x, key)
    done.set()
    killer.join()
    assert victim not in client.run(os.getpid).values(), "the worker was not killed mid-batch"
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    client.wait_for_workers(2, timeout=120)  # the nanny restarts it for the next tests


def test_raising_evaluations_are_counted_and_the_run_goes_on(client):
    # (the scheduler and seeds of test_runner_on_a_cluster_resumes_exactly: the same programs)
    task = tasks.get("qd-hopper", episode_length=20)
    scheduler = algorithms.get("sep-cma-mae", task, num_emitters=2, popsize=6).scheduler
    init_keys, run_keys = seed_keys(jax.random.key(0), 2)
    evaluator = dask_cluster.DaskEvaluator(task, client)
    on_cluster = dask_evaluate(task, evaluator)

    def poisoned(x, keys):  # the first two solutions of every batch make the episode raise
        x = x.copy()
        x[:, :2, 0] = np.nan
        return on_cluster(x, keys)

    advance = HostAdvance(scheduler, run_keys, poisoned)
    states, metrics = advance(init_states(scheduler, task, init_keys), 2)
    np.testing.assert_array_equal(metrics["num_invalid"], [[2, 4]] * 2)  # per seed
    np.testing.assert_array_equal(metrics["evaluations"], [[12, 24]] * 2)
    assert (metrics["num_elites"][:, -1] > 0).all() and evaluator.num_failed == 8


def test_runner_on_a_cluster_resumes_exactly(client, tmp_path):
    address = client.scheduler.address
    config = RunConfig(
        task="qd-hopper",
        task_settings={"episode_length": 20},
        settings={"num_emitters": 2, "popsize": 6},
        evals=24,  # 2 iterations of 12 (the runner keeps the newest two checkpoints)
        seeds=2,
        checkpoint_every=1,
        log_every=1,
        name="run",
    )
    execution = Execution(cluster=address)
    outcome = start(config, tmp_path, quiet=True, plots=False, execution=execution)
    run = outcome.run_dir
    assert outcome.status == "finished" and outcome.iterations_done == 2
    metrics = rundir.read_metrics(run)
    assert len(metrics) == 4 and metrics["evaluations"].max() == 24
    assert (metrics["coverage"] > 0).all()
    before = metrics.drop(columns="evals_per_s")
    archives = [dict(np.load(rundir.archive_path(run, s))) for s in range(2)]

    # Drop the last checkpoint: the run continues from iteration 1 and ends the same.
    for it, path in checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR):
        if it > 1:
            path.unlink()
    again = resume(run, quiet=True, plots=False, execution=execution)
    assert again.resumed_from == 1 and again.iterations_done == 2
    after = rundir.read_metrics(run).drop(columns="evals_per_s")
    assert before.equals(after)
    for s in range(2):
        with np.load(rundir.archive_path(run, s)) as z:
            for name, value in archives[s].items():
                np.testing.assert_array_equal(z[name], value, err_msg=name)


def test_a_cluster_without_workers_fails_instead_of_waiting_forever(monkeypatch):
    import distributed as dask_distributed

    monkeypatch.setattr(dask_cluster, "POLL_S", 0.2)
    monkeypatch.setattr(dask_cluster, "NO_WORKER_TIMEOUT", 1.0)
    task = tasks.get("qd-hopper", episode_length=5)
    with (
        dask_distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as lc,
        dask_distributed.Client(lc) as empty,
    ):
        t0 = time.monotonic()
        with pytest.raises(dask_cluster.ClusterError, match="no worker for 1 s"):
            dask_cluster.DaskEvaluator(task, empty)(_solutions(task, 2), jax.random.key(0))
        assert time.monotonic() - t0 < 30
