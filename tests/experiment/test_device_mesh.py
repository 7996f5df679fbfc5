"""The compiled loop sharded over a ("seeds", "solutions") device mesh: the mesh shapes, and, on 4
forced host devices (a subprocess with XLA_FLAGS), sharded runs give the unsharded metrics, the
evaluation really is partitioned, and a gradient pre-phase batch runs sharded too; and
``cmamae.run`` over two JAX processes (``jax.distributed``, CPU collectives over gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest
import small_run  # the experiment tests' small run

from cmamae import algorithms, device_mesh, tasks
from cmamae.compiled_loop import seed_keys
from cmamae.experiment.advance import CompiledAdvance


@pytest.mark.parametrize(
    "count, seeds, batches, shape",
    [
        (1, 5, (540,), (1, 1)),  # one device: no mesh, the unsharded program
        (2, 1, (540,), (1, 2)),  # one seed: the solutions take the devices
        (2, 4, (540,), (2, 1)),  # seeds first: no communication
        (2, 3, (540,), (1, 2)),  # an odd seed count: the solutions
        (4, 2, (540,), (2, 2)),
        (4, 3, (540,), (3, 1)),  # the seeds get 3; the 1 left over can only be 1
        (8, 1, (540,), (1, 6)),  # 6 divides 540, 7 and 8 do not
        (2, 1, (525, 15), (1, 1)),  # cma-mega's default batches are odd: nothing to split
        (4, 1, (16, 2), (1, 2)),  # the pre-phase batch bounds the split too
        (3, 1, (), (1, 1)),  # no batches given: seeds only
    ],
)
def test_mesh_shape(count, seeds, batches, shape):
    assert device_mesh.mesh_shape(count, seeds, batches) == shape
    devices = jax.devices()[:1]
    assert device_mesh.batch_mesh(devices, seeds, batches) is None  # one device: no mesh


def test_plan_warns_about_unused_devices_and_keeps_the_errors(monkeypatch):
    task = tasks.get("sphere", solution_dim=10, archive_dims=(10, 10))
    scheduler = algorithms.get("cma-mega", task).scheduler  # batches 525 and 15
    two = [jax.devices()[0]] * 2
    monkeypatch.setattr(jax, "devices", lambda: two)
    monkeypatch.setattr(jax, "local_devices", lambda: two)
    with pytest.warns(UserWarning, match=r"devices: 1 of 2 used .* 525 and 15"):
        assert device_mesh.plan("all", 1, scheduler) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_mesh.plan(None, 1, scheduler) is None  # one device asked: nothing unused
    with pytest.raises(ValueError, match="devices: 3 requested but only 2"):
        device_mesh.plan(3, 1, scheduler)
    with pytest.raises(ValueError, match="devices must be a positive integer"):
        device_mesh.plan("0", 1, scheduler)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The unsharded metrics of test_advance.py's small run (sphere, sep-cma-mae 3 x 8, batch
    24, two chunks of 10 iterations) with 1 and 2 seeds, computed here on this process's one
    device (the session's compilation cache holds test_advance.py's programs): the folder of
    ``<seeds>.npz`` files (one array per metric) the subprocesses compare their sharded runs
    with."""
    from test_advance import ITERATIONS, _run

    assert ITERATIONS == 20
    task, algo = small_run.task_and_algorithm()
    scheduler = algo.scheduler
    folder = tmp_path_factory.mktemp("plain")
    for seeds in (1, 2):
        _, run_keys = seed_keys(jax.random.key(0), seeds)
        advance = CompiledAdvance(scheduler, task.evaluate, run_keys)
        np.savez(folder / f"{seeds}.npz", **_run(advance, scheduler, task, seeds=seeds))
    return folder


_SHARDED = """
import sys
import warnings
import jax, numpy as np
from cmamae import algorithms, run
from cmamae import device_mesh
from cmamae.compiled_loop import init_states, run_chunk, seed_keys

from small_run import task_and_algorithm  # on PYTHONPATH (_script_env)

assert len(jax.devices()) == 4
warnings.simplefilter("error")  # every device asked for is used
task, algo = task_and_algorithm()  # batch 24
EVALS = 24 * 20
PLAIN = {s: dict(np.load(f"{sys.argv[1]}/{s}.npz")) for s in (1, 2)}  # the fixture plain

def same(sharded, plain, what):
    assert sharded.keys() == plain.keys()
    for k in ("num_elites", "evaluations", "num_invalid"):
        np.testing.assert_array_equal(sharded[k], plain[k], err_msg=f"{what} {k}")
    for k in ("qd_score", "norm_qd_score", "coverage", "obj_max", "obj_mean"):
        np.testing.assert_allclose(sharded[k], plain[k], rtol=1e-5, err_msg=f"{what} {k}")

def mesh_of(result):
    s = jax.tree_util.tree_leaves(result.state)[0].sharding
    return dict(s.mesh.shape), s.spec

# (a) one seed on 2 devices: the solutions are split
sharded = run(task, algo, EVALS, seeds=1, chunk_iterations=10, devices=2)
assert mesh_of(sharded)[0] == {"seeds": 1, "solutions": 2}, mesh_of(sharded)
same(sharded.metrics, PLAIN[1], "1 seed x 2 solution shards")

# (b) 2 seeds x 2 solution shards on 4 devices; the states split over the seeds
sharded = run(task, algo, EVALS, seeds=2, chunk_iterations=10, devices="all")
assert mesh_of(sharded) == ({"seeds": 2, "solutions": 2}, jax.sharding.PartitionSpec("seeds"))
same(sharded.metrics, PLAIN[2], "2 seeds x 2 solution shards")
assert sharded.metrics["evaluations"][0, -1] == EVALS
# ... and its elites replay from their provenance over the same mesh (benchmark functions:
# within float32 rounding; an MJX ant run sharded either way replayed every elite bit for
# bit, docs/tasks.md)
from cmamae import provenance
assert sharded.layout == provenance.Layout(seeds=2, seed_groups=2, solution_shards=2)
states = [jax.tree_util.tree_map(np.asarray, sharded.archive_state(s)) for s in range(2)]
cells = [np.flatnonzero(s.occupied) for s in states]
reps = [r for seed in provenance.reproduce(
    task, algo.scheduler, sharded.run_keys, sharded.layout, states, cells) for r in seed]
# the partitioned program sums the measures in another order: within float32 rounding
assert all(r.ulps <= provenance.ROUNDING_ULPS for r in reps), max(r.ulps for r in reps)
print("replayed", sum(r.exact for r in reps), "of", len(reps), "bit for bit")

# (c) the partitioning is real: inside the compiled chunk each device evaluates 12 solutions
# of its seed; the results are all-gathered; the evaluation alone is bit-exact
seen = []

def inspecting(x, key):
    jax.debug.inspect_array_sharding(x, callback=seen.append)
    return task.evaluate(x, key)

mesh = device_mesh.plan("all", 2, algo.scheduler)
init_keys, run_keys = seed_keys(jax.random.key(0), 2)
states = device_mesh.place(init_states(algo.scheduler, task, init_keys), mesh)
args = (algo.scheduler, device_mesh.place(run_keys, mesh), states, inspecting, 2, mesh)
compiled = run_chunk.lower(*args).compile()
hlo = compiled.as_text()
# the states come back placed as they went in: the runner's ahead-of-time compiled chunk
# takes them again (it refuses other shardings)
placed = [a.sharding for a in jax.tree_util.tree_leaves(states)]
out, _ = compiled(args[1], states)
assert [a.sharding for a in jax.tree_util.tree_leaves(out)] == placed
compiled(args[1], out)
# (each group of devices sees its own seed, unbatched: shard_map over the seeds)
assert seen and seen[-1].spec == jax.sharding.PartitionSpec("solutions"), seen
assert seen[-1].shard_shape((24, 10)) == (12, 10)
assert "all-gather(" in hlo and "f32[12,10]" in hlo
x = jax.random.normal(jax.random.key(1), (2, 24, 10)) * 3.0
keys = jax.random.split(jax.random.key(2), 2)
whole = jax.jit(jax.vmap(task.evaluate))(x, keys)
split = jax.jit(jax.vmap(device_mesh.sharded_evaluate(task.evaluate, mesh), spmd_axis_name="seeds"))
for a, b in zip(whole, split(x, keys)):
    np.testing.assert_array_equal(a, b)

# (d) a gradient pre-phase batch (cma-mega: 16 solutions + 2 gradient samples) runs split
mega = algorithms.get("cma-mega", task, num_emitters=2, popsize=8)
plain = run(task, mega, 18 * 6, seeds=1)
sharded = run(task, mega, 18 * 6, seeds=1, devices=2)
assert mesh_of(sharded)[0] == {"seeds": 1, "solutions": 2}
same(sharded.metrics, plain.metrics, "cma-mega")
print("OK")
"""


def _script_env(xla_flags: str | None) -> dict:
    """The environment of a test script: this folder importable, ``XLA_FLAGS`` set to
    ``xla_flags`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    return env


def _on_host_devices(script: str, count: int, *args: str) -> str:
    """Run ``script`` with command-line arguments ``args`` in a fresh interpreter with
    ``count`` forced host devices (this folder importable); its stdout."""
    env = _script_env(f"--xla_force_host_platform_device_count={count}")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_sharded_runs_give_the_unsharded_metrics(plain):
    out = _on_host_devices(_SHARDED, 4, str(plain))
    assert out.strip().endswith("OK"), out[-2000:]


_ADVANCE = """
import jax, numpy as np
from cmamae import device_mesh
from cmamae.experiment.advance import CompiledAdvance
from cmamae.compiled_loop import seed_keys
from small_run import task_and_algorithm  # on PYTHONPATH (_script_env)
from test_advance import _run

assert len(jax.devices()) == 2
task, algo = task_and_algorithm()
scheduler = algo.scheduler
_, run_keys = seed_keys(jax.random.key(0), 4)
batches = device_mesh.evaluation_batches(scheduler)
mesh = device_mesh.batch_mesh(device_mesh.resolve_devices("all"), 4, batches)
assert mesh is not None and dict(mesh.shape) == {"seeds": 2, "solutions": 1}
plain = _run(CompiledAdvance(scheduler, task.evaluate, run_keys), scheduler, task, seeds=4)
advance = CompiledAdvance(scheduler, task.evaluate, device_mesh.place(run_keys, mesh), mesh)
sharded = _run(advance, scheduler, task, seeds=4)
for k in ("num_elites", "evaluations", "num_invalid"):
    np.testing.assert_array_equal(sharded[k], plain[k], err_msg=k)
for k in ("qd_score", "coverage", "obj_max", "obj_mean"):
    np.testing.assert_allclose(sharded[k], plain[k], rtol=1e-5, err_msg=k)
# an odd seed count: the devices go to the solutions (tests/experiment/test_device_mesh.py)
mesh = device_mesh.batch_mesh(device_mesh.resolve_devices("all"), 3, batches)
assert dict(mesh.shape) == {"seeds": 1, "solutions": 2}
print("OK", sharded["qd_score"][:, -1])
"""


def test_the_runners_sharded_advance_gives_the_unsharded_metrics():
    out = _on_host_devices(_ADVANCE, 2)
    assert out.startswith("OK"), out[-2000:]


_PROCESS = """
import sys
import jax, numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
process, port, plain = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
from cmamae import run
from cmamae.experiment import ConfigError
from cmamae.experiment.advance import Execution

assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
from small_run import task_and_algorithm  # on PYTHONPATH (_script_env)
task, algo = task_and_algorithm()
for seeds, shape in ((1, {"seeds": 1, "solutions": 2}), (2, {"seeds": 2, "solutions": 1})):
    sharded = run(task, algo, 24 * 20, seeds=seeds, devices="all", chunk_iterations=10)
    mesh = jax.tree_util.tree_leaves(sharded.state)[0].sharding.mesh
    assert mesh.is_multi_process and dict(mesh.shape) == shape, mesh
    want = dict(np.load(f"{plain}/{seeds}.npz"))  # the unsharded metrics (the fixture plain)
    assert sharded.metrics.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(sharded.metrics[k], want[k], rtol=1e-5, err_msg=k)
try:  # the experiment runner (run folders, checkpoints) is one process's
    Execution(devices="all").validate(task, algo.scheduler)
    raise AssertionError("the runner accepted several processes")
except ConfigError as err:
    assert "one process" in str(err), err
print("OK", process)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_over_two_jax_processes(tmp_path, plain):
    script = tmp_path / "process.py"
    script.write_text(textwrap.dedent(_PROCESS))
    env = _script_env(None)  # one device each
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(plain)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}: {err[-3000:]}"
        assert out.strip().endswith(f"OK {i}"), out
