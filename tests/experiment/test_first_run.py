"""First-run experience (issue 16): lean checkpoints and archive files, the compilation cache,
noise="auto", and the rough edges (MUJOCO_GL, missing extras, file modes, non-TTY progress,
report folder, budget rounding, run --help, 4-D heatmap text, a full disk)."""

from __future__ import annotations

import collections
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cmamae import _mujoco_gl, algorithms, compile_cache, rowsparse, rundir, tasks
from cmamae.cli import main
from cmamae.compiled_loop import init_states, seed_keys
from cmamae.es import noise as es_noise
from cmamae.experiment import checkpoint, progress, runner
from cmamae.experiment.advance import HostAdvance
from cmamae.experiment.config import ResolvedRun, RunConfig
from cmamae.tasks.base import TASKS

# 10-D sphere, 10 x 10 grid, 3 emitters x 8 (batch 24), noise tables (so that checkpoints have
# tables to leave out), 30 iterations, a checkpoint every 10, every iteration logged.
BATCH, ITERATIONS = 24, 30
SMALL = [
    "--task", "sphere", "--set", "task.solution_dim=10", "--set", "task.archive_dims=(10, 10)",
    "--set", "num_emitters=3", "--set", "popsize=8", "--set", "noise='table'", "--seeds", "2",
    "--evals", str(ITERATIONS * BATCH), "--checkpoint-every", "10", "--log-every", "1",
    "--quiet", "--no-plots",
]  # fmt: skip
TABLE_BYTES = 2 * 3 * es_noise.noise_table_size(10) * 4  # seeds x emitters x table, float32


def _run_folder(args, root: Path, name: str) -> Path:
    assert main(["run", *args, "--out", str(root), "--name", name]) == 0
    return root / name


def _assert_same_run(a: Path, b: Path) -> None:
    cols = [c for c in rundir.METRIC_COLUMNS if c != "evals_per_s"]  # timing differs
    ma, mb = rundir.read_metrics(a), rundir.read_metrics(b)
    assert len(ma) == 2 * ITERATIONS
    pd.testing.assert_frame_equal(ma[cols], mb[cols], check_exact=True)
    for s in range(2):
        x, y = rundir.load_archive(a, s)[1], rundir.load_archive(b, s)[1]
        for leaf_x, leaf_y in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)):
            assert np.asarray(leaf_x).tobytes() == np.asarray(leaf_y).tobytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted small run."""
    return _run_folder(SMALL, tmp_path_factory.mktemp("ref"), "reference")


# --------------------------------------------------------------------------- lean checkpoints
def _table_state(key):
    return {
        "table": jax.random.normal(key, (2, 1 << 17)),  # 1 MiB, like a noise table
        "mean": jnp.arange(6.0),
        "key": jax.random.split(key, 2),
    }


def test_initial_leaves_are_left_out_and_rebuilt_bitwise(tmp_path):
    initial = _table_state(jax.random.key(0))
    state = dict(initial, mean=initial["mean"] + 1)
    leaves = checkpoint.InitialLeaves(initial)
    path = checkpoint.save(tmp_path, 5, state, initial=leaves)
    assert path.stat().st_size < 10_000  # the 1 MiB table is not in the file
    with np.load(path) as data:
        specs = json.loads(str(data["header"]))["leaves"]
    assert sum("initial" in s for s in specs) == 1
    template = jax.eval_shape(lambda: state)
    it, restored = checkpoint.load(path, template, initial=lambda: _table_state(jax.random.key(0)))
    assert it == 5
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    with pytest.raises(checkpoint.CheckpointError, match="initial state"):
        checkpoint.load(path, template)
    with pytest.raises(checkpoint.CheckpointError, match="differs"):
        checkpoint.load(path, template, initial=_table_state(jax.random.key(1)))


def test_at_most_keep_checkpoints_exist_at_any_time(tmp_path, monkeypatch):
    seen = []
    write = checkpoint.atomic_write

    def counting(path, fn):
        seen.append(len(checkpoint.list_checkpoints(tmp_path)))
        write(path, fn)

    monkeypatch.setattr(checkpoint, "atomic_write", counting)
    for it in range(1, 7):
        checkpoint.save(tmp_path, it, {"x": jnp.full(3, it)}, keep=3)
    assert seen == [0, 1, 2, 2, 2, 2]  # before each write: at most keep - 1 files
    assert [i for i, _ in checkpoint.list_checkpoints(tmp_path)] == [4, 5, 6]


def test_a_failed_write_after_resuming_from_an_older_checkpoint_keeps_it(tmp_path, monkeypatch):
    """Checkpoints 10 (good) and 20 (torn): a run resumed from 10 writes 20 again. If that
    write fails, 10 must still be there; once it succeeds, the stale files are gone."""
    checkpoint.save(tmp_path, 10, {"x": jnp.full(3, 10)})
    torn = checkpoint.save(tmp_path, 20, {"x": jnp.full(3, 20)})
    torn.write_bytes(torn.read_bytes()[:100])
    stale = checkpoint.save(tmp_path, 30, {"x": jnp.full(3, 30)}, keep=5)
    stale.write_bytes(b"torn")
    template = {"x": jax.ShapeDtypeStruct((3,), jnp.int32)}
    with pytest.warns(UserWarning):
        assert checkpoint.load_latest(tmp_path, template)[0] == 10

    def full(path, write):
        raise checkpoint.DiskFullError(errno.ENOSPC, f"no space left on the device for {path}")

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "atomic_write", full)
        with pytest.raises(checkpoint.DiskFullError, match="ckpt-000000020"):
            checkpoint.save(tmp_path, 20, {"x": jnp.full(3, 21)})
    assert 10 in [i for i, _ in checkpoint.list_checkpoints(tmp_path)]
    checkpoint.save(tmp_path, 20, {"x": jnp.full(3, 21)})
    assert [i for i, _ in checkpoint.list_checkpoints(tmp_path)] == [10, 20]
    assert int(checkpoint.load_latest(tmp_path, template)[1]["x"][0]) == 21


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = checkpoint.save(tmp_path, 1, {"x": jnp.zeros(3)})
        checkpoint.atomic_write(tmp_path / "a.txt", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    for p in (path, tmp_path / "a.txt"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_rowsparse_round_trip_and_damage():
    a = np.zeros((50, 40), np.float32)
    a[[3, 17], :] = np.random.default_rng(0).normal(size=(2, 40))
    a[20, 5] = -0.0
    dense = np.arange(12.0).reshape(3, 4)
    packed = rowsparse.pack({"sol": a, "small": dense, "flat": np.zeros(4000)}, min_bytes=0)
    assert packed["sol"].shape == (3, 40) and "small__rows" not in packed
    restored = rowsparse.unpack(packed)
    assert set(restored) == {"sol", "small", "flat"}
    assert restored["sol"].tobytes() == a.tobytes()
    np.testing.assert_array_equal(restored["small"], dense)
    packed["sol__rows"] = np.packbits(np.ones(50, bool))
    with pytest.raises(ValueError, match="'sol' is damaged"):
        rowsparse.unpack(packed)
    with pytest.raises(ValueError, match="reserved"):
        rowsparse.pack({"x__rows": a})


def test_lean_checkpoints_of_a_run(reference):
    ckpts = checkpoint.list_checkpoints(reference / rundir.CHECKPOINT_DIR)
    assert [i for i, _ in ckpts] == [20, 30]
    for _, path in ckpts:
        with np.load(path) as data:
            specs = json.loads(str(data["header"]))["leaves"]
        # the noise tables of both seeds' emitters: one leaf, recorded by hash only
        assert [s["shape"] for s in specs if "initial" in s] == [
            [2, 3, es_noise.noise_table_size(10)]
        ]
        assert path.stat().st_size < TABLE_BYTES / 20


def _rewrite_as_format_1(path: Path, initial, monkeypatch) -> None:
    """Rewrite checkpoint ``path`` as the first format wrote it: every leaf dense."""
    template = jax.eval_shape(lambda: initial)
    iteration, state = checkpoint.load(path, template, initial=initial)
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "_FORMAT", 1)
        m.setattr(checkpoint.rowsparse, "nonzero_rows", lambda a, min_bytes: None)
        assert checkpoint.save(path.parent, iteration, state, keep=5) == path


def _initial_of(run: Path):
    from cmamae.compiled_loop import init_states, seed_keys

    resolved = ResolvedRun.from_json(rundir.read_config(run))
    init_keys, _ = seed_keys(jax.random.key(resolved.config.seed), resolved.seeds)
    return init_states(resolved.algorithm.scheduler, resolved.task, init_keys)


def test_old_format_checkpoint_resumes_bitwise(reference, tmp_path, monkeypatch):
    run = tmp_path / "old"
    shutil.copytree(reference, run)
    ckpt_dir = run / rundir.CHECKPOINT_DIR
    (_, first), (_, last) = checkpoint.list_checkpoints(ckpt_dir)
    last.unlink()
    _rewrite_as_format_1(first, _initial_of(run), monkeypatch)
    with np.load(first) as data:
        assert json.loads(str(data["header"]))["format"] == 1
        assert first.stat().st_size > TABLE_BYTES  # the tables are in it
    assert main(["run", "--resume", str(run), "--quiet", "--no-plots"]) == 0
    _assert_same_run(reference, run)


def test_config_json_with_old_setting_names_resumes_bitwise(reference, tmp_path):
    """A run folder whose config.json uses older setting names (``learning_rate`` for the
    archive's α) is read with the current names and resumes to the same run."""
    run = tmp_path / "old-names"
    shutil.copytree(reference, run)
    (_, _), (_, last) = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)
    last.unlink()
    config = rundir.read_config(run)
    alpha = config["settings"].pop("archive_learning_rate")
    config["settings"]["learning_rate"] = alpha
    config["setting_overrides"]["learning_rate"] = alpha
    (run / rundir.CONFIG).write_text(json.dumps(config))
    assert ResolvedRun.from_json(config).algorithm.config["archive_learning_rate"] == alpha
    changed = dict(config, setting_overrides={"learning_rate": 0.25, "adam_lr": 0.5})
    with pytest.raises(ValueError, match="es_learning_rate.*'sep-cma-mae'"):  # not its setting
        ResolvedRun.from_json(changed)
    changed["algo"] = "openai-mae"
    upgraded = ResolvedRun.from_json(changed).algorithm
    assert (upgraded.config["archive_learning_rate"], upgraded.config["es_learning_rate"]) == (
        0.25,
        0.5,
    )
    assert main(["run", "--resume", str(run), "--quiet", "--no-plots"]) == 0
    _assert_same_run(reference, run)


class _FullDisk:
    """A file that takes ``room`` bytes, then raises ENOSPC."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data):
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_full_disk_mid_checkpoint_leaves_a_resumable_run(reference, tmp_path, monkeypatch, capsys):
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *a, **kw):
        f = real_fdopen(fd, mode, *a, **kw)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        return _FullDisk(f, room=2000) if "ckpt-000000020" in name else f

    monkeypatch.setattr(checkpoint.os, "fdopen", fdopen)
    capsys.readouterr()
    assert main(["run", *SMALL, "--out", str(tmp_path), "--name", "full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    run = tmp_path / "full"
    ckpt_dir = run / rundir.CHECKPOINT_DIR
    errors = [line for line in err if "error" in line.lower()]  # the rest: progress lines
    assert len(errors) == 1 and errors[0] == err[-1], err
    assert "no space left" in err[-1] and "ckpt-000000020.npz" in err[-1], err
    assert "Errno" not in err[-1]
    assert f"cmamae run --resume {run}" in err[-1]
    assert [i for i, _ in checkpoint.list_checkpoints(ckpt_dir)] == [10]
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()  # space is free again
    assert main(["run", "--resume", str(run), "--quiet", "--no-plots"]) == 0
    _assert_same_run(reference, run)


# --------------------------------------------------------------------------- compile cache
_RUN_WITH_STATS = """
import json, sys
from cmamae import compile_cache
from cmamae.cli import main
code = main(sys.argv[1:])
print("STATS", json.dumps(compile_cache.stats))
sys.exit(code)
"""


def _run_counting(*argv, cache: Path) -> dict:
    """``cmamae *argv`` in a new process with the compile cache in ``cache``; the counts of
    :data:`cmamae.compile_cache.stats` (whole programs loaded, compiled, written...)."""
    env = dict(os.environ, CMAMAE_COMPILE_CACHE=str(cache))
    env.pop(compile_cache.WHOLE_PROGRAMS_ENV, None)  # the default: whole programs kept
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", _RUN_WITH_STATS, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.split("STATS")[-1])


def test_second_run_and_resume_load_whole_programs_bitwise(reference, tmp_path):
    """A second identical run and a resume load the run keys, the state init and the chunk
    from the cache (no tracing, lowering or compiling) and end bitwise equal to a run without
    the cache."""
    cache = tmp_path / "cache"
    run = ["run", *SMALL, "--out", str(tmp_path)]
    first = _run_counting(*run, "--name", "first", cache=cache)
    assert first.get("loaded", 0) == 0 and first["written"] == first["compiled"] == 3
    assert cache.stat().st_mode & 0o777 == 0o700
    names = sorted(p.name.split("-")[0] for p in (cache / compile_cache.PROGRAMS).iterdir())
    assert names == ["init_states", "run_chunk", "seed_keys"]
    assert any(e.startswith("jit_run_chunk") for e in os.listdir(cache))  # JAX's own, too
    second = _run_counting(*run, "--name", "second", cache=cache)
    assert second == {"loaded": 3}
    for name in ("first", "second"):
        _assert_same_run(reference, tmp_path / name)

    resumed = tmp_path / "resumed"  # the second run, cut back to its checkpoint at 20
    shutil.copytree(tmp_path / "second", resumed)
    for it, path in checkpoint.list_checkpoints(resumed / rundir.CHECKPOINT_DIR):
        if it > 20:
            path.unlink()
    shutil.rmtree(resumed / rundir.ARCHIVE_DIR)
    assert _run_counting("run", "--resume", str(resumed), "--quiet", cache=cache) == {"loaded": 3}
    _assert_same_run(reference, resumed)


@pytest.fixture
def programs(tmp_path, monkeypatch) -> Path:
    """The whole-program cache in ``tmp_path`` for this (pytest) process, without JAX's own."""
    monkeypatch.setattr(compile_cache, "programs_dir", lambda: tmp_path)
    monkeypatch.setattr(compile_cache, "stats", collections.Counter())
    return tmp_path


_affine = jax.jit(lambda x, scale: x * scale + 1.0, static_argnums=1)


def _load(context, x=None, scale=2.0):
    x = jnp.arange(3.0) if x is None else x
    fn = lambda x: _affine(x, scale)  # noqa: E731
    compiled, loaded = compile_cache.load_or_compile("affine", fn, (x,), context, scale)
    np.testing.assert_array_equal(compiled(x), x * scale + 1.0)
    return loaded


def test_program_cache_never_returns_another_program(programs, monkeypatch):
    assert not _load({"run": 1}) and _load({"run": 1})
    assert len(list(programs.iterdir())) == 1
    assert not _load({"run": 2}) and _load({"run": 2})  # another context (configuration)
    assert not _load({"run": 1}, scale=3.0)  # another static setting
    assert not _load({"run": 1}, x=jnp.arange(4.0))  # another shape
    assert not _load({"run": 1}, x=jnp.arange(3, dtype=jnp.int32))  # another dtype
    compile_cache._environment()  # fills the per-process part
    for part, value in [("cmamae_files", "edited"), ("distributions", ["jax-0.0.dist-info"])]:
        with monkeypatch.context() as m:  # cmamae's source changed; another installed version
            m.setitem(compile_cache._environment_memo, part, value)
            assert not _load({"run": 1})
    assert _load({"run": 1})
    assert not _load(None) and not _load(None)  # no context: JAX's cache only, nothing kept
    assert len(list(programs.iterdir())) == 7  # one entry per key


def test_a_damaged_or_misplaced_entry_is_compiled_anew(programs):
    assert not _load({"run": 1})
    (a,) = programs.iterdir()
    assert not _load({"run": 2}, scale=5.0)
    (b,) = set(programs.iterdir()) - {a}
    good = a.read_bytes()
    for damaged in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b"", b.read_bytes()):
        a.write_bytes(damaged)
        with pytest.warns(UserWarning, match="compiling anew"):
            assert not _load({"run": 1})
        assert _load({"run": 1})  # written anew
    assert compile_cache.stats["unusable"] == 4
    assert not list(programs.glob(".tmp-*"))


_TWICE = """
import sys, jax, numpy as np
from cmamae import compile_cache
compile_cache.enable(sys.argv[1])
program = lambda key, x: jax.random.uniform(key, (8,)) * x
args = (jax.random.key(0), np.float32(2.0))
for context in (1, 2, 3) if sys.argv[2] == "write" else (2, 1):
    if sys.argv[2] == "write" and context == 3:
        jax.clear_caches()  # as a sweep does between runs
    compiled, loaded = compile_cache.load_or_compile("p", program, args, {"run": context})
    np.asarray(compiled(*args))  # runs
    print(context, "loaded" if loaded else "compiled")
"""


def test_a_program_compiled_twice_in_a_process_loads_and_runs_in_another(tmp_path):
    """The same program under three keys (three runs of a sweep), the third after
    ``jax.clear_caches()``: every entry loads and runs in another process. (Executables that
    XLA's CPU backend serialized after compiling a module a second time in a process lacked
    the kernels of the first compile, and running them there failed: "Function ... not
    found". The entries are exported programs now, compiled through JAX's cache.)"""
    script = tmp_path / "twice.py"
    script.write_text(_TWICE)
    cache = tmp_path / "cache"

    def run(mode):
        env = {k: v for k, v in os.environ.items() if k != compile_cache.WHOLE_PROGRAMS_ENV}
        out = subprocess.run(
            [sys.executable, str(script), str(cache), mode], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split("\n")[:-1]

    assert run("write") == ["1 compiled", "2 compiled", "3 compiled"]
    assert len(list((cache / compile_cache.PROGRAMS).glob("*.stablehlo"))) == 3
    assert run("read") == ["2 loaded", "1 loaded"]


def test_host_ask_tell_programs_load_bitwise(programs):
    task = tasks.get("sphere", solution_dim=10, archive_dims=(10, 10))
    scheduler = algorithms.get("sep-cma-mae", task, num_emitters=3, popsize=6).scheduler
    init_keys, run_keys = seed_keys(jax.random.key(0), 2)
    evaluate = jax.jit(jax.vmap(task.evaluate))

    def run(context):
        advance = HostAdvance(scheduler, run_keys, lambda x, k: evaluate(x, k), context)
        return advance(init_states(scheduler, task, init_keys), 3)[1]

    first = run({"t": 1})
    assert compile_cache.stats == {"compiled": 2, "written": 2}  # ask and tell, once each
    second = run({"t": 1})
    assert compile_cache.stats == {"compiled": 2, "written": 2, "loaded": 2}
    plain = run(None)
    for k in plain:
        assert plain[k].tobytes() == first[k].tobytes() == second[k].tobytes(), k


def test_run_keys_from_the_cache_are_the_eager_keys(programs):
    for seed, seeds in [(0, 1), (7, 3), (2**31 - 1, 2), (2**31, 2)]:
        resolved = RunConfig(task="sphere", evals=1080, seed=seed, seeds=seeds).build()
        want = seed_keys(jax.random.key(seed), seeds)
        for _ in range(2):  # compiled, then loaded (below 2**31)
            got = runner._seed_keys(resolved, {"t": 1})
            for g, w in zip(got, want):
                assert np.array_equal(jax.random.key_data(g), jax.random.key_data(w)), seed
    assert compile_cache.stats == {"compiled": 3, "written": 3, "loaded": 3}


def test_program_context_follows_the_configuration(monkeypatch):
    def resolved(**task_settings):
        return RunConfig(task="sphere", evals=1080, task_settings=task_settings).build()

    a = runner.program_context(resolved(solution_dim=10))
    assert a is not None and a == runner.program_context(resolved(solution_dim=10))
    assert a != runner.program_context(resolved(solution_dim=11))
    again = ResolvedRun.from_json(json.loads(json.dumps(resolved(solution_dim=10).to_json())))
    assert runner.program_context(again) == a  # a resume has the same programs
    renamed = RunConfig(task="sphere", evals=1080, name="x", log_every=3).build()
    assert runner.program_context(renamed) == runner.program_context(resolved())
    monkeypatch.setitem(TASKS._entries, "user-sphere", lambda: tasks.get("sphere"))
    assert runner.program_context(RunConfig(task="user-sphere", evals=1080).build()) is None


def test_compile_cache_folder_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("CMAMAE_COMPILE_CACHE", "off")
    assert compile_cache.default_dir() is None
    monkeypatch.setenv("CMAMAE_COMPILE_CACHE", str(tmp_path / "c"))
    assert compile_cache.default_dir() == tmp_path / "c"
    monkeypatch.delenv("CMAMAE_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "cmamae" / "jax"


# --------------------------------------------------------------------------- noise="auto"
def test_noise_auto_rule_and_what_a_run_records(tmp_path):
    assert es_noise.resolve_noise("auto", 20, 32) == "normal"
    assert es_noise.resolve_noise("auto", 40, 1000) == "table"
    assert es_noise.resolve_noise("table", 20, 32) == "table"
    with pytest.raises(ValueError, match="noise"):
        es_noise.resolve_noise("fast", 20, 32)
    arm = tasks.get("arm")
    assert algorithms.defaults("sep-cma-mae", arm)["noise"] == "auto"
    assert algorithms.get("sep-cma-mae", arm).config["noise"] == "normal"  # 36 x 100 numbers
    big = tasks.get("arm", solution_dim=1000)
    assert algorithms.get("sep-cma-mae", big).config["noise"] == "table"
    state = algorithms.get("sep-cma-mae", arm).scheduler.init(jax.random.key(0), jnp.zeros(100))
    assert state.emitters[0].es.noise.shape == (15, 0)  # no tables
    # config.json records the resolved generator, and a resume keeps the recorded one (runs
    # from before "auto" used tables)
    data = RunConfig(task="arm", evals=3600).build().to_json()
    assert data["settings"]["noise"] == "normal"
    data["settings"]["noise"] = "table"
    assert ResolvedRun.from_json(data).algorithm.config["noise"] == "table"


# --------------------------------------------------------------------------- rough edges
def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "cmamae", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **(env or {})),
    )


def test_unusable_mujoco_gl_is_one_line_and_status_2(tmp_path):
    out = _cli("run", "--task", "sphere", "--out", str(tmp_path), env={"MUJOCO_GL": "bogus"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "MUJOCO_GL=bogus" in lines[0], out.stderr


def test_missing_gl_library_names_the_package(monkeypatch):
    monkeypatch.setattr(_mujoco_gl.ctypes.util, "find_library", lambda name: None)
    for backend, package in (("osmesa", "libosmesa6"), ("egl", "libegl1")):
        reason = _mujoco_gl.problem(backend, system="Linux")
        assert backend in reason and package in reason and "\n" not in reason
    assert _mujoco_gl.problem("disable", system="Linux") is None
    monkeypatch.setattr(_mujoco_gl.ctypes.util, "find_library", lambda name: "lib" + name)
    assert _mujoco_gl.problem("osmesa", system="Linux") is None
    assert "not an OpenGL backend" in _mujoco_gl.problem("vulkan", system="Linux")


def test_task_without_measures_lists_names_without_building_tasks(monkeypatch, capsys):
    built = []
    get = tasks.get

    def recording(name, **kw):
        built.append(name)
        return get(name, **kw)

    monkeypatch.setattr(tasks, "get", recording)
    assert main(["run", "--task", "pendulum"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pendulum" in err[0] and "'qd-ant'" in err[0], err
    assert set(built) == {"pendulum", "arm"}  # arm: the default algorithm's settings in --help


def test_python_310_reads_toml_through_tomli(tmp_path, monkeypatch):
    from cmamae.experiment import config

    text = Path(__file__).parents[2].joinpath("pyproject.toml").read_text()
    assert 'tomli>=1.1; python_version < "3.11"' in text
    (tmp_path / "run.toml").write_text('task = "sphere"\nseeds = 3\n')
    assert config.read_file(tmp_path / "run.toml") == {"task": "sphere", "seeds": 3}
    import tomllib

    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the package tomllib came from
    assert config.read_file(tmp_path / "run.toml") == {"task": "sphere", "seeds": 3}


def test_progress_without_a_terminal_is_whole_lines():
    stream = io.StringIO()
    shown = progress.make(1000, stream=stream)
    assert type(shown) is progress.LogProgress
    stats = dict(qd_score=12345.678, coverage=0.5, obj_max=99.5)
    with shown:
        for evals in range(100, 1001, 100):
            shown.update(evals, stats, 123456.0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # one per chunk
    assert all(line.startswith("evals ") and line.endswith("evals/s 123,456") for line in lines)
    assert max(map(len, lines)) > 80  # not cut at 80 columns


def test_report_goes_beside_the_runs_and_needs_force(reference, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(reference, runs / "a")
    assert main(["report", str(runs)]) == 0
    assert (runs / "report" / "report.md").is_file()
    capsys.readouterr()
    assert main(["report", str(runs / "a")]) == 2  # the same place: runs/report
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    before = (runs / "report" / "report.md").stat().st_mtime_ns
    assert main(["report", str(runs), "--force"]) == 0
    assert (runs / "report" / "report.md").stat().st_mtime_ns >= before
    assert main(["report", str(runs), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "qd_curves.png").is_file()


def test_evals_rounding_is_said_first_and_recorded(tmp_path, capsys):
    # (the reference's iterations and chunks: its compiled program runs again)
    args = [*SMALL, "--evals", str(ITERATIONS * BATCH + 5), "--out", str(tmp_path)]
    assert main(["run", *args]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "725 is not a whole number of iterations of 24" in err[0]
    assert "30 iterations = 720 evaluations" in err[0]
    config = json.loads((tmp_path / "sphere-sep-cma-mae" / rundir.CONFIG).read_text())
    assert (config["evals_requested"], config["evals"]) == (ITERATIONS * BATCH + 5, 720)


def test_run_help_lists_names_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in [*tasks.names(), *algorithms.names(), "paper", "smoke", "--no-compile-cache"]:
        assert name in text, name
    for default in ("default: arm", "default: sep-cma-mae", "2,000", "default: 2", "tenth"):
        assert default in text, default
    assert "popsize=36" in text and "sigma0=0.5" in text  # the default algorithm's settings


@pytest.mark.parametrize("dims", [(6, 6, 6, 6), (10, 10, 5, 5), (10, 8, 8)])
def test_slice_heatmap_text_does_not_overlap(dims):
    from cmamae.archives import GridArchive
    from cmamae.viz import archive_plot

    archive = GridArchive(solution_dim=3, dims=dims, ranges=[(0, 1)] * len(dims), learning_rate=1.0)
    rng = np.random.default_rng(0)
    occupied = rng.random(archive.cells) < 0.3
    state = archive.init().replace(
        occupied=jnp.asarray(occupied),
        objectives=jnp.asarray(rng.normal(size=archive.cells).astype(np.float32)),
    )
    names = [f"front_left_foot_{i}" for i in range(len(dims))]
    fig = archive_plot.heatmap_figure(archive, state, names, "a run title\nits second line")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [
        t
        for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))
        if t.get_visible() and t.get_text().strip()
    ]
    boxes = [t.get_window_extent(renderer) for t in texts]
    inside = fig.bbox
    for i, a in enumerate(boxes):
        assert inside.x0 <= a.x0 and a.x1 <= inside.x1 + 1, texts[i].get_text()
        assert inside.y0 <= a.y0 and a.y1 <= inside.y1 + 1, texts[i].get_text()
        for j in range(i):
            assert not a.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())


def test_archive_files_are_row_sparse_and_old_dense_files_load(tmp_path):
    from cmamae.archives import GridArchive, load_npz

    archive = GridArchive(solution_dim=2000, dims=(20, 20), ranges=[(0, 1)] * 2)
    x = np.random.default_rng(0).normal(size=(5, 2000)).astype(np.float32)
    m = np.random.default_rng(1).random((5, 2))
    state, _ = archive.add(archive.init(), x, np.arange(5.0), m)
    archive.save_npz(state, tmp_path / "sparse.npz")
    dense_bytes = 400 * 2000 * 4
    assert (tmp_path / "sparse.npz").stat().st_size < dense_bytes / 20
    restored = load_npz(tmp_path / "sparse.npz", archive)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # a file written dense (before row-sparse archive files) reads the same
    with np.load(tmp_path / "sparse.npz") as data:
        full = rowsparse.unpack(data)
    np.savez(tmp_path / "dense.npz", **full)
    assert (tmp_path / "dense.npz").stat().st_size > dense_bytes
    old = load_npz(tmp_path / "dense.npz", archive)
    for a, b in zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(state)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_cache_entries_written_without_the_size_bound_get_access_times(tmp_path):
    """Entries from a cache used without JAX's size bound have no access-time files, which
    made JAX's eviction warn on every write; enabling the cache gives them one."""
    (tmp_path / "jit_f-abc-cache").write_bytes(b"x")
    (tmp_path / "jit_g-def-cache").write_bytes(b"y")
    (tmp_path / "jit_g-def-atime").write_bytes(b"12345678")
    compile_cache._give_entries_access_times(tmp_path)
    assert (tmp_path / "jit_f-abc-atime").stat().st_size == 8
    assert (tmp_path / "jit_g-def-atime").read_bytes() == b"12345678"  # kept
