"""The native backend (``backend="native"``: ``mujoco.batch`` behind a ``jax.pure_callback``)
against the per-episode native twin (native.py, one ``MjData``, MuJoCo's own contact list):
equal numbers for every robot and both models, independent of batch order, batch size, thread
count and the seed ``vmap``; the derived foot contacts against MuJoCo's per physics step; the
runner (bitwise resume after SIGKILL) and Dask (the batched chunks equal the local run); bad
input. No MJX compilation here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

pytest.importorskip("mujoco.batch", reason="the native backend needs mujoco >= 4.0")

from cmamae import cli, rundir, tasks  # noqa: E402
from cmamae.experiment import RunConfig, checkpoint, resume, start  # noqa: E402
from cmamae.experiment.advance import Execution  # noqa: E402
from cmamae.tasks.locomotion import (  # noqa: E402
    ROBOTS,
    backend_of,
    native,
    native_batch,
    resolve_backend,
)

LENGTH = 60
ROBOT_NAMES = sorted(ROBOTS)


def _policies(task, count=10, seed=0):
    """``count`` policies from still (zeros) through Xavier to violent (×4: most end early)."""
    keys = jax.random.split(jax.random.key(seed), count - 1)
    xavier = np.stack([np.asarray(task.initial_solution(k)) for k in keys])
    scales = np.geomspace(0.3, 4.0, count - 1).astype(np.float32)[:, None]
    return np.concatenate([np.zeros((1, task.solution_dim), np.float32), xavier * scales])


# ---------------------------------------------------------------- the twin, every robot
@pytest.mark.parametrize("adapted", [True, False], ids=["adapted", "as-shipped"])
@pytest.mark.parametrize("name", ROBOT_NAMES)
def test_equals_the_per_episode_twin(name, adapted):
    task = tasks.get(name, episode_length=LENGTH, adapted=adapted, backend="native")
    assert backend_of(task) == "native" and not task.host_evaluated
    x = _policies(task)
    key = jax.random.key(3)
    twin_f, twin_m = native.evaluate(task, x, key)
    # float64: the batched engine, and the *-native host task that evaluates through it ...
    s = dict(task.evaluate.kwargs)
    qpos, qvel = native.start_state(task, key)
    episodes = native_batch.run_episodes(
        s["robot"], s["adaptation"], s["policy"], x, qpos, qvel, LENGTH, threads=2
    )
    np.testing.assert_array_equal(episodes.total, twin_f)
    np.testing.assert_array_equal(episodes.measures, twin_m)
    host = tasks.get(f"{name}-native", episode_length=LENGTH, adapted=adapted)
    for got, want in zip(host.evaluate(x, key), (twin_f, twin_m)):
        np.testing.assert_array_equal(got, want)
    # ... and the JAX task under jit: the same numbers in the task's float32.
    f, m = jax.jit(task.evaluate)(jnp.asarray(x), key)
    assert f.dtype == m.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(f), twin_f.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(m), twin_m.astype(np.float32))
    # The batch is not trivial: feet touch and lift, and episodes of terminating robots end
    # at different steps (so the engine stopped stepping some and compacted the policies).
    assert 0 < twin_m.mean() < 1 and len(np.unique(twin_m)) > 3
    if ROBOTS[name].terminate:
        assert episodes.steps.min() < LENGTH and (episodes.steps < LENGTH).sum() > len(x) // 4


@pytest.mark.parametrize("adapted", [True, False], ids=["adapted", "as-shipped"])
@pytest.mark.parametrize("name", ROBOT_NAMES)
def test_derived_foot_contacts_equal_mujocos_contact_list(name, adapted):
    """Every physics step of random-torque episodes: the contacts derived from the feet's
    poses equal the twin's reading of ``MjData.contact`` (``dist < includemargin``)."""
    robot = ROBOTS[name]
    task = tasks.get(name, adapted=adapted, backend="native")
    adaptation = dict(task.evaluate.kwargs)["adaptation"]
    env = native.NativeEnv(robot, adaptation)
    feet = native_batch.foot_geometry(robot, adaptation)
    rng = np.random.default_rng(1)
    seen = []
    for episode in range(4):
        env.reset(*native.start_state(task, jax.random.key(episode)))
        for _ in range(150):
            env.data.ctrl[:] = rng.uniform(-1, 1, env.model.nu)
            mujoco.mj_step(env.model, env.data)
            d = env.data
            derived = feet.contacts(d.geom_xpos[None, feet.feet], d.geom_xmat[None, feet.feet])
            np.testing.assert_array_equal(derived[0], env.foot_contacts())
            seen.append(derived[0])
    seen = np.array(seen)
    assert seen.any(axis=0).all() and (~seen).any(axis=0).all()  # every foot both ways


@pytest.mark.parametrize("threads", [1, 2])
def test_simulations_that_warn_go_on_as_mj_step_does(threads, tmp_path, monkeypatch):
    """``Batch.rollout`` stops a simulation whose warning counters rise, where ``mj_step``
    resets a bad state (or zeroes a bad control) and goes on: the engine steps such a
    simulation again one step at a time. A policy with a NaN weight (NaN controls at every
    physics step) and a start with a huge velocity equal the twin's episodes."""
    monkeypatch.chdir(tmp_path)  # MuJoCo logs its warnings to MUJOCO_LOG.TXT there
    task = tasks.get("ant", episode_length=30, backend="native")
    s = dict(task.evaluate.kwargs)
    x = _policies(task, 8, seed=5).astype(np.float64)
    x[1, 40] = np.nan
    qpos, qvel = (np.tile(a, (len(x), 1)) for a in native.start_state(task, jax.random.key(2)))
    qvel[6, 0] = 1e11  # beyond mjMAXVAL: mj_step resets the state with a warning
    episodes = native_batch.run_episodes(
        s["robot"], s["adaptation"], s["policy"], x, qpos, qvel, 30, threads=threads
    )
    env = native.NativeEnv(s["robot"], s["adaptation"])
    for i in range(len(x)):
        total, contact_steps, steps = env.episode(s["policy"], x[i], qpos[i], qvel[i], 30)
        assert episodes.total[i] == total and episodes.steps[i] == steps, i
        np.testing.assert_array_equal(episodes.measures[i], contact_steps / max(steps, 1))
        warned = env.data.warning.number.sum()
        assert warned > 0 if i in (1, 6) else warned == 0, i
    assert not episodes.failed.any() and episodes.steps[1] == 30


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_simulation_mujoco_raises_in_ends_with_nan_and_its_row(threads, monkeypatch):
    """A ``SimulationError`` in one simulation (made here: ``rollout`` raises for the row
    started 7 m forward, at its third policy step) gives that row NaN and its message under
    its own row, whatever shard runs it; the others run on unchanged."""
    batch_module = native_batch.require_batch()
    task = tasks.get("ant", episode_length=20, backend="native")
    s = dict(task.evaluate.kwargs)
    x = _policies(task, 9, seed=6).astype(np.float64)
    qpos, qvel = (np.tile(a, (len(x), 1)) for a in native.start_state(task, jax.random.key(4)))
    run = lambda: native_batch.run_episodes(
        s["robot"], s["adaptation"], s["policy"], x, qpos, qvel, 20, threads=threads
    )
    qpos[5, 0] += 7.0
    want = run()
    rollout, calls = batch_module.Batch.rollout, {}

    def failing(self, nstep, **kw):
        out = rollout(self, nstep, **kw)
        ids = np.arange(self.nsim) if kw.get("ids") is None else kw["ids"]
        bad = ids[self.bind("qpos")[ids, 0] > 5.0]
        calls[id(self)] = calls.get(id(self), 0) + 1
        if len(bad) and calls[id(self)] == 3:
            raise batch_module.SimulationError(bad, "made up", len(ids))
        return out

    monkeypatch.setattr(batch_module.Batch, "rollout", failing)
    got = run()
    assert got.failed.tolist() == [i == 5 for i in range(len(x))]
    assert list(got.errors) == [5] and got.errors[5].startswith("MuJoCo error")
    assert np.isnan(got.total[5]) and np.isnan(got.measures[5]).all() and got.steps[5] == 2
    others = np.arange(len(x)) != 5
    np.testing.assert_array_equal(got.total[others], want.total[others])
    np.testing.assert_array_equal(got.measures[others], want.measures[others])


# ---------------------------------------------------------------- invariance
@pytest.fixture(scope="module")
def ant():
    return tasks.get("ant", episode_length=40, backend="native", threads=2)


@pytest.fixture(scope="module")
def ant_x(ant):
    return jnp.asarray(_policies(ant, 12, seed=4))


@pytest.fixture(scope="module")
def ant_results(ant, ant_x):
    f, m = jax.jit(ant.evaluate)(ant_x, jax.random.key(9))
    return np.asarray(f), np.asarray(m)


def test_batch_order_size_and_threads_do_not_matter(ant, ant_x, ant_results):
    f, m = ant_results
    key = jax.random.key(9)
    perm = np.random.default_rng(0).permutation(len(ant_x))
    fp, mp = ant.evaluate(ant_x[perm], key)
    np.testing.assert_array_equal(np.asarray(fp), f[perm])
    np.testing.assert_array_equal(np.asarray(mp), m[perm])
    for rows in ([5], [11, 0, 3]):
        fs, ms = ant.evaluate(ant_x[np.array(rows)], key)
        np.testing.assert_array_equal(np.asarray(fs), f[rows])
        np.testing.assert_array_equal(np.asarray(ms), m[rows])
    one = tasks.get("ant", episode_length=40, backend="native", threads=1)
    f1, m1 = jax.jit(one.evaluate)(ant_x, key)
    np.testing.assert_array_equal(np.asarray(f1), f)
    np.testing.assert_array_equal(np.asarray(m1), m)


def test_seeds_vmapped_in_one_call_equal_each_seed_alone(ant, ant_x, ant_results):
    keys = jnp.stack([jax.random.key(9), jax.random.key(10)])
    xs = jnp.stack([ant_x, ant_x[::-1]])
    f, m = jax.jit(jax.vmap(ant.evaluate))(xs, keys)
    np.testing.assert_array_equal(np.asarray(f[0]), ant_results[0])
    np.testing.assert_array_equal(np.asarray(m[0]), ant_results[1])
    f1, m1 = ant.evaluate(ant_x[::-1], keys[1])
    np.testing.assert_array_equal(np.asarray(f[1]), np.asarray(f1))
    np.testing.assert_array_equal(np.asarray(m[1]), np.asarray(m1))
    # Only the key batched (the same policies, several episodes each).
    fk, _ = jax.jit(jax.vmap(ant.evaluate, in_axes=(None, 0)))(ant_x, keys)
    np.testing.assert_array_equal(np.asarray(fk[0]), ant_results[0])
    assert not np.array_equal(np.asarray(fk[1]), ant_results[0])  # another start state


def test_host_side_evaluation_equals_the_vmapped_callback(ant, ant_x):
    """The runner's host path (native_batch.evaluate_seeds, no tracing) gives what the
    compiled loop's vmapped callback gives, bit for bit."""
    keys = jnp.stack([jax.random.key(9), jax.random.key(10)])
    xs = np.stack([np.asarray(ant_x), np.asarray(ant_x)[::-1]])
    f, m = jax.jit(jax.vmap(ant.evaluate))(jnp.asarray(xs), keys)
    fh, mh = native_batch.evaluate_seeds(xs, keys, **dict(ant.evaluate.kwargs))
    assert fh.dtype == np.float32 and fh.shape == (2, len(ant_x))
    np.testing.assert_array_equal(fh, np.asarray(f))
    np.testing.assert_array_equal(mh, np.asarray(m))
    with pytest.raises(ValueError, match=r"solutions must be \(seeds, batch, num_params\)"):
        native_batch.evaluate_seeds(xs[0], keys, **dict(ant.evaluate.kwargs))


def test_transitions_and_replay(ant, ant_x, ant_results):
    f, m, tr = jax.jit(ant.evaluate_transitions)(ant_x, jax.random.key(9))
    np.testing.assert_array_equal(np.asarray(f), ant_results[0])
    np.testing.assert_array_equal(np.asarray(m), ant_results[1])
    tr = jax.tree_util.tree_map(np.asarray, tr)
    b = len(ant_x)
    assert tr.obs.shape == tr.next_obs.shape == (b, 40, 27) and tr.actions.shape == (b, 40, 8)
    steps = tr.valid.sum(1)
    assert steps.min() < 40 and steps.max() == 40  # some episodes ended early
    for i in range(b):
        s = steps[i]
        assert tr.valid[i, :s].all() and not tr.valid[i, s:].any()
        np.testing.assert_array_equal(tr.next_obs[i, : s - 1], tr.obs[i, 1:s])
        assert tr.dones[i].sum() == (s < 40) and (s == 40 or tr.dones[i, s - 1] == 1)
    np.testing.assert_allclose((tr.rewards * tr.valid).sum(1), ant_results[0], rtol=1e-5)
    # The replay hook records the same episodes: an elite replayed alone, or in the run's
    # seed layout, gives its stored numbers exactly.
    record = jax.jit(ant.replay.trajectory)
    for row in (0, 7):
        traj = record(ant_x[row : row + 1], jax.random.key(9))
        assert np.asarray(traj["objective"])[0] == ant_results[0][row]
        np.testing.assert_array_equal(np.asarray(traj["measures"])[0], ant_results[1][row])
        steps = int(traj["steps"][0])
        assert traj["qpos"].shape == (1, 40, 15) and np.asarray(traj["alive"])[0].sum() == steps
    keys = jnp.stack([jax.random.key(9), jax.random.key(10)])
    both = jax.jit(jax.vmap(ant.replay.trajectory))(jnp.stack([ant_x, ant_x]), keys)
    np.testing.assert_array_equal(np.asarray(both["objective"][0]), ant_results[0])
    np.testing.assert_array_equal(np.asarray(both["measures"][0]), ant_results[1])
    assert ant.replay.step_seconds == pytest.approx(0.05)


# ---------------------------------------------------------------- backend choice, bad input
def test_auto_is_native_on_a_cpu_and_settings_are_checked(monkeypatch):
    auto = "native" if jax.default_backend() == "cpu" else "mjx"  # MJX where JAX has a GPU
    assert resolve_backend("auto") == auto and backend_of(tasks.get("hopper")) == auto
    assert backend_of(tasks.get("hopper", backend="mjx")) == "mjx"
    assert tasks.get("ant", threads=2) == tasks.get("ant", threads=2)
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'mjx', 'native'\]"):
        tasks.get("ant", backend="gpu")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"^threads must be an integer >= 1, got {bad!r}$"):
            tasks.get("ant", threads=bad)
    with pytest.raises(ValueError, match="threads"):
        tasks.get("ant-native", threads=0)
    monkeypatch.setattr(mujoco, "__version__", "3.3.7")
    with pytest.raises(ValueError, match=r"needs mujoco >= 4\.0 .*found mujoco 3\.3\.7"):
        tasks.get("ant", backend="native")
    assert resolve_backend("auto") == "mjx"  # auto falls back to MJX on an old mujoco


def test_run_folders_record_the_resolved_backend():
    config = RunConfig(task="hopper", task_settings={"episode_length": 5}).build().to_json()
    auto = "native" if jax.default_backend() == "cpu" else "mjx"
    assert config["task_settings"] == {"episode_length": 5, "backend": auto}
    mjx = RunConfig(task="hopper", task_settings={"backend": "mjx"}).build().to_json()
    assert mjx["task_settings"] == {"backend": "mjx"}
    assert "backend" not in RunConfig(task="sphere").build().to_json()["task_settings"]


def test_devices_are_refused_for_the_native_backend(monkeypatch):
    """A sharded program cannot call the host callback: the runner says so before running."""
    from cmamae import algorithms, device_mesh
    from cmamae.experiment import ConfigError
    from cmamae.experiment.advance import Execution

    monkeypatch.setattr(device_mesh, "resolve_devices", lambda devices: ["cpu:0", "cpu:1"])
    task = tasks.get("hopper", episode_length=5, backend="native")
    scheduler = algorithms.get("sep-cma-mae", task).scheduler
    with pytest.raises(ConfigError, match="task.backend=mjx"):
        Execution(devices=2).validate(task, scheduler)
    mjx_task = tasks.get("hopper", episode_length=5, backend="mjx")
    Execution(devices=2).validate(mjx_task, algorithms.get("sep-cma-mae", mjx_task).scheduler)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("task.backend='gpu'", "backend must be one of ['auto', 'mjx', 'native']"),
        ("task.threads=0", "threads must be an integer >= 1, got 0"),
    ],
)
def test_cli_bad_backend_settings_exit_2(setting, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--task", "ant", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------- the runner and Dask
TINY = {"episode_length": 15, "hidden_sizes": (8,), "backend": "native"}
TINY_SETTINGS = {"num_emitters": 2, "popsize": 6}


def _assert_same_archives(a, b, seeds):
    for s in range(seeds):
        with np.load(rundir.archive_path(a, s)) as x, np.load(rundir.archive_path(b, s)) as y:
            assert x.files == y.files
            for f in x.files:
                np.testing.assert_array_equal(x[f], y[f], err_msg=f)


def test_runner_resumes_bitwise_after_sigkill(tmp_path):
    iterations = 40
    common = [
        "run", "--task", "ant", "--evals", str(12 * iterations), "--seeds", "2",
        "--checkpoint-every", "4", "--log-every", "1", "--quiet", "--no-plots",
        "--out", str(tmp_path),
    ]  # fmt: skip
    for key, value in {**TINY, **TINY_SETTINGS}.items():
        text = value if isinstance(value, str) else repr(value)  # task.backend=native
        common += ["--set", f"{'task.' if key in TINY else ''}{key}={text}"]
    assert cli.main([*common, "--name", "ref"]) == 0
    config = rundir.read_config(tmp_path / "ref")
    assert config["task_settings"]["backend"] == "native"

    run = tmp_path / "cut"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmamae", *common, "--name", "cut"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    t0 = time.monotonic()
    while True:  # kill it once a checkpoint past the first exists
        found = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)
        if found and found[-1][0] > 4:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 300, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_at = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)[-1][0]
    assert killed_at < iterations
    outcome = resume(run, quiet=True, plots=False)
    assert outcome.status == "finished" and outcome.resumed_from >= killed_at - 4
    cols = [c for c in rundir.METRIC_COLUMNS if c != "evals_per_s"]
    ref, cut = rundir.read_metrics(tmp_path / "ref"), rundir.read_metrics(run)
    assert len(ref) == 2 * iterations and ref["coverage"].iloc[-1] > 0
    assert ref[cols].equals(cut[cols])
    _assert_same_archives(tmp_path / "ref", run, seeds=2)


def test_the_runner_takes_the_host_path_with_the_compiled_loops_numbers():
    """Native runs go through HostAdvance (programs without a host callback, which the
    compile cache keeps); three iterations of two seeds equal the compiled loop's chunk."""
    from cmamae import algorithms
    from cmamae.compiled_loop import init_states, seed_keys
    from cmamae.experiment.advance import CompiledAdvance, HostAdvance, native_evaluate

    task = tasks.get("ant", **TINY)
    scheduler = algorithms.get("sep-cma-mae", task, **TINY_SETTINGS).scheduler
    init_keys, run_keys = seed_keys(jax.random.key(3), 2)
    states = init_states(scheduler, task, init_keys)
    with Execution().open(scheduler, task, run_keys, task.evaluate) as advance:
        assert isinstance(advance, HostAdvance)
        host_states, host_metrics = advance(states, 3)
    compiled = CompiledAdvance(scheduler, task.evaluate, run_keys)
    compiled.prepare(states, 3, progress=type("P", (), {"message": lambda self, m: None})())
    loop_states, loop_metrics = compiled(init_states(scheduler, task, init_keys), 3)
    for a, b in zip(jax.tree.leaves(host_states), jax.tree.leaves(loop_states)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in loop_metrics:
        np.testing.assert_array_equal(host_metrics[name], loop_metrics[name])
    # Schedulers the host driver cannot run (transitions, gradients) keep the compiled loop.
    td3 = algorithms.get("pga-me", task).scheduler
    assert native_evaluate(task, td3) is None


def test_a_dask_run_of_batched_chunks_equals_the_local_native_run(tmp_path):
    pytest.importorskip("distributed", reason="needs the dask extra")
    from cmamae.experiment import dask_cluster
    from cmamae.experiment.advance import Execution

    host_settings = {k: v for k, v in TINY.items() if k != "backend"}
    common = dict(settings=TINY_SETTINGS, evals=36, seeds=2, checkpoint_every=3, log_every=1)
    local = start(
        RunConfig(task="ant", task_settings=TINY, name="local", **common),
        tmp_path,
        quiet=True,
        plots=False,
    )
    client = dask_cluster.connect(workers=2)
    try:
        client.wait_for_workers(2, timeout=120)
        task = tasks.get("ant-native", **host_settings)
        x = _policies(task, 9, seed=2)
        evaluator = dask_cluster.DaskEvaluator(task, client)
        assert evaluator._batched
        got = evaluator(x, jax.random.key(1))  # chunks of 3: ceil(9 / (2 chunks x 2 workers))
        want = native.evaluate(tasks.get("ant", **TINY), x, jax.random.key(1))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        remote = start(
            RunConfig(task="ant-native", task_settings=host_settings, name="dask", **common),
            tmp_path,
            quiet=True,
            plots=False,
            execution=Execution(cluster=client.scheduler.address),
        )
    finally:
        dask_cluster.close(client)
    assert local.iterations_done == remote.iterations_done == 3
    cols = [c for c in rundir.METRIC_COLUMNS if c != "evals_per_s"]
    a, b = rundir.read_metrics(local.run_dir), rundir.read_metrics(remote.run_dir)
    assert a[cols].equals(b[cols]) and a["num_elites"].iloc[-1] > 0
    _assert_same_archives(local.run_dir, remote.run_dir, seeds=2)
