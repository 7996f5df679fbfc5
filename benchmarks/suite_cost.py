"""Where the test suite's time goes: a pytest plugin, run by hand.

    python -m pytest -p benchmarks.suite_cost            # the whole suite, as CI runs it
    python -m pytest -p benchmarks.suite_cost tests/es   # or any selection

At the end it prints the CPU-seconds (user + sys) of the pytest processes and of the
processes the tests start, the part of it spent in XLA's compiler (in the pytest processes),
and the files and tests that cost most. On a machine whose cores are all busy (CI: 2 cores, 2
xdist workers), the suite's wall time is about its CPU-seconds over the core count, so
compile CPU-seconds over the core count is a floor no reordering can go under.

Each pytest process (each xdist worker) writes one JSON line per test to a folder of the
session (``$CMAMAE_SUITE_COST``, set by the first process); the first process sums them.
Compile CPU is the process's CPU over each call of JAX's backend compile (every thread of
the process: XLA compiles its kernels on a thread pool), so a compile that another thread's
work overlaps counts a little too much; where that JAX function is missing (another JAX
version) the plugin falls back to JAX's compile durations in wall-clock seconds.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import shutil
import tempfile
import time

import pytest

_ENV = "CMAMAE_SUITE_COST"
_OWNER = "CMAMAE_SUITE_COST_OWNER"
if _ENV not in os.environ:  # the session's first process: xdist's controller or plain pytest
    os.environ[_ENV] = tempfile.mkdtemp(prefix="cmamae-suite-cost-")
    os.environ[_OWNER] = str(os.getpid())

_compile = {"cpu": 0.0, "count": 0}  # this process's XLA compiles so far
_out = None


def _cpu(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _count_compiles() -> None:
    """Add every backend compile's process CPU to ``_compile``."""
    try:
        from jax._src import compiler

        original = compiler.backend_compile_and_load
    except (ImportError, AttributeError):  # another JAX: its wall-clock compile durations
        from jax import monitoring

        def listen(event, seconds, **_):
            if event == "/jax/core/compile/backend_compile_duration":
                _compile["cpu"] += seconds
                _compile["count"] += 1

        monitoring.register_event_duration_secs_listener(listen)
        return

    def timed(*args, **kwargs):
        start = _cpu()
        try:
            return original(*args, **kwargs)
        finally:
            _compile["cpu"] += _cpu() - start
            _compile["count"] += 1

    compiler.backend_compile_and_load = timed


_count_compiles()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _out
    if _out is None:
        name = os.environ.get("PYTEST_XDIST_WORKER", "main")
        _out = open(os.path.join(os.environ[_ENV], f"{name}.jsonl"), "a")  # noqa: SIM115
    wall, own, children = time.time(), _cpu(), _cpu(resource.RUSAGE_CHILDREN)
    compile_cpu, compiles = _compile["cpu"], _compile["count"]
    yield
    row = {
        "test": item.nodeid,
        "wall": time.time() - wall,
        "cpu": _cpu() - own,
        "children": _cpu(resource.RUSAGE_CHILDREN) - children,
        "compile": _compile["cpu"] - compile_cpu,
        "compiles": _compile["count"] - compiles,
    }
    _out.write(json.dumps(row) + "\n")
    _out.flush()


def _rows(folder: str) -> list[dict]:
    rows = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            rows.extend(json.loads(line) for line in f)
    return rows


def _line(label: str, r: dict) -> str:
    total = r["cpu"] + r["children"]
    return (
        f"{total:8.1f} {r['cpu']:8.1f} {r['children']:8.1f} {r['compile']:8.1f} "
        f"{r['compiles']:6d}  {label}"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get(_OWNER) != str(os.getpid()):
        return
    rows = _rows(os.environ[_ENV])
    if not rows:
        return
    write = terminalreporter.write_line
    keys = ("cpu", "children", "compile", "compiles")
    total = {k: sum(r[k] for r in rows) for k in keys}
    files = collections.defaultdict(lambda: dict.fromkeys(keys, 0))
    for r in rows:
        f = files[r["test"].split("::")[0]]
        for k in keys:
            f[k] += r[k]
    cores = os.cpu_count() or 1
    spent = total["cpu"] + total["children"]
    write("")
    write(f"suite cost: {len(rows)} tests, {spent:,.0f} CPU-s (user + sys) in all")
    write(
        f"  pytest processes {total['cpu']:,.0f} CPU-s, of it XLA compiling "
        f"{total['compile']:,.0f} ({total['compiles']:,} compiles); processes the tests "
        f"started {total['children']:,.0f}"
    )
    write(
        f"  on {cores} cores: at least {spent / cores / 60:.1f} min in all, "
        f"{total['compile'] / cores / 60:.1f} min of it compiling in the pytest processes"
    )
    header = f"{'CPU-s':>8} {'pytest':>8} {'started':>8} {'compile':>8} {'count':>6}  "
    write(header + "file")
    for name, f in sorted(files.items(), key=lambda x: -(x[1]["cpu"] + x[1]["children"]))[:25]:
        write(_line(name, f))
    write(header + "test")
    for r in sorted(rows, key=lambda r: -(r["cpu"] + r["children"]))[:25]:
        write(_line(r["test"], r))


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ[_ENV], ignore_errors=True)
