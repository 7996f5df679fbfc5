"""Tiny hand-made run folders for the viz tests (config.json, metrics.csv, archive/seed<i>.npz)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from cmamae import algorithms, archives, rundir, tasks

SPHERE = {"solution_dim": 10, "archive_dims": [10, 10]}


def write_run(
    root: Path,
    name: str,
    algo: str,
    task: str = "sphere",
    task_settings: dict | None = None,
    seeds: int = 2,
    iterations: int = 3,
    metric_seed: int = 0,
    archive: bool = False,
) -> Path:
    """A run folder with made-up metrics (``iterations`` logged rows per seed) and, with
    ``archive``, a result archive per seed filled by random solutions of the real task."""
    settings = dict(SPHERE if task_settings is None else task_settings)
    t = tasks.get(task, **settings)
    alg = algorithms.get(algo, t)
    run = root / name
    run.mkdir(parents=True)
    config = {
        "name": name,
        "task": task,
        "task_settings": settings,
        "algo": algo,
        "settings": alg.config,
        "setting_overrides": {},
        "evals": iterations * alg.scheduler.evaluations_per_iteration,
        "seeds": seeds,
        "seed": 0,
        "iterations": iterations,
        "batch_size": alg.scheduler.evaluations_per_iteration,
        "checkpoint_every": 1,
        "log_every": 1,
        "chunk": 1,
        "task_info": {
            "solution_dim": t.solution_dim,
            "measure_names": list(t.measure_names),
            "measure_ranges": [list(r) for r in t.measure_ranges],
            "archive_dims": list(t.archive_dims),
            "min_f": t.min_f,
            "max_f": t.max_f,
        },
        "versions": {},
    }
    (run / rundir.CONFIG).write_text(json.dumps(config))
    rng = np.random.default_rng(metric_seed)
    with open(run / rundir.METRICS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rundir.METRIC_COLUMNS)
        for it in range(1, iterations + 1):
            for s in range(seeds):
                cov = min(1.0, it * rng.uniform(0.05, 0.2))
                w.writerow(
                    [
                        s,
                        it,
                        it * 100,
                        int(cov * 100),
                        cov,
                        it * rng.uniform(100, 1000),
                        rng.uniform(1, 10),
                        rng.uniform(50, 100),
                        rng.uniform(10, 50),
                        0,
                        rng.uniform(1e3, 1e4),
                    ]
                )
    if archive:
        arch = alg.scheduler.best_archive
        for s in range(seeds):
            x = np.random.default_rng(s).normal(size=(64, t.solution_dim)).astype(np.float32)
            obj, meas = t.evaluate(jax.numpy.asarray(x), jax.random.PRNGKey(0))
            save_archive(run, s, arch, x, obj, meas)
    return run


def elite_state(archive, solutions, objectives, measures) -> archives.ArchiveState:
    """A result-archive state holding the best of the given solutions per cell, built on the
    host (no compilation: ``archive.add`` would cost a jit per archive shape)."""
    objectives = np.asarray(objectives, np.float32)
    cells = np.asarray(archive.index_of(np.asarray(measures, np.float32)))
    state = archive.init()
    occ = np.zeros(archive.cells, bool)
    sol, obj = np.array(state.solutions), np.array(state.objectives)
    meas, thr = np.array(state.measures), np.array(state.thresholds)
    for i in np.argsort(objectives):  # best last, so it wins its cell
        c = cells[i]
        occ[c] = True
        sol[c], obj[c], meas[c], thr[c] = solutions[i], objectives[i], measures[i], objectives[i]
    return archives.ArchiveState(
        occupied=occ,
        solutions=sol,
        objectives=obj,
        measures=meas,
        thresholds=thr,
        num_invalid=np.int32(0),
    )


def save_archive(run: Path, seed: int, archive, solutions, objectives, measures) -> None:
    """Write ``archive/seed<seed>.npz`` of :func:`elite_state`."""
    path = rundir.archive_path(run, seed)
    path.parent.mkdir(exist_ok=True)
    archive.save_npz(elite_state(archive, solutions, objectives, measures), path)


@pytest.fixture
def make_run(tmp_path):
    return lambda name, algo, **kw: write_run(tmp_path, name, algo, **kw)


def _is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(name="save_archive")
def save_archive_fixture():
    """:func:`save_archive`."""
    return save_archive


@pytest.fixture
def is_png():
    """``is_png(path)``: a non-trivial PNG file is there."""
    return _is_png
