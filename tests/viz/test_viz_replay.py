"""Replaying elites: choosing them, re-evaluating them, the per-task figures, bad specs."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from cmamae import algorithms, rundir, tasks
from cmamae.experiment import replay as replay_lib
from cmamae.registry import Registry
from cmamae.viz import replay as rp


@pytest.fixture
def sphere_run(make_run):
    return make_run("sphere", "sep-cma-mae", seeds=1, iterations=1, archive=True)


def _state(run):
    return rundir.load_archive(run, 0)


def test_best_elite_reevaluates_to_stored(sphere_run, tmp_path, is_png):
    """A hand-made run folder has no provenance: replay runs a fresh episode and says so."""
    archive, state = _state(sphere_run)
    out = replay_lib.replay(sphere_run, tmp_path / "out", elite="best")
    occ = np.asarray(state.occupied)
    best = int(np.argmax(np.where(occ, np.asarray(state.objectives), -np.inf)))
    assert out["cell"] == best
    assert out["episode"]["kind"] == "fresh" and "before cmamae recorded" in out["note"]
    assert out["replayed"]["objective"] == pytest.approx(out["stored"]["objective"], rel=1e-5)
    np.testing.assert_allclose(
        out["replayed"]["measures"], out["stored"]["measures"], rtol=1e-5, atol=1e-5
    )
    assert is_png(out["files"]["figure"])
    record = json.loads(out["files"]["json"].read_text())
    assert record["cell"] == best
    assert record["stored"]["objective"] == pytest.approx(float(state.objectives[best]))
    assert record["render"]["clipped_components"] >= 0


def test_cell_and_measures_select_the_same_elite(sphere_run, tmp_path):
    archive, state = _state(sphere_run)
    cell = int(np.flatnonzero(np.asarray(state.occupied))[0])
    measures = np.asarray(state.measures)[cell].tolist()
    assert rp.select_elite(archive, state, cell) == cell
    assert rp.select_elite(archive, state, str(cell)) == cell
    assert rp.select_elite(archive, state, measures) == cell
    out = replay_lib.replay(sphere_run, tmp_path, elite=measures)
    assert out["cell"] == cell and out["files"]["json"].name == f"replay_seed0_cell{cell}.json"


def test_bad_elite_specs(sphere_run, tmp_path):
    archive, state = _state(sphere_run)
    occ = np.asarray(state.occupied)
    empty = int(np.flatnonzero(~occ)[0])
    with pytest.raises(ValueError, match="elite must be"):
        rp.select_elite(archive, state, "worst")
    with pytest.raises(ValueError, match="elite must be"):
        rp.select_elite(archive, state, True)
    with pytest.raises(ValueError, match="elite must be"):
        rp.select_elite(archive, state, None)
    with pytest.raises(ValueError, match=r"elite must be a cell index in \[0, 100\)"):
        rp.select_elite(archive, state, 100)
    with pytest.raises(ValueError, match=f"elite: cell {empty} is empty"):
        rp.select_elite(archive, state, empty)
    with pytest.raises(ValueError, match="expected 2 measure value"):
        rp.select_elite(archive, state, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        rp.select_elite(archive, state, [0.0, float("nan")])
    # The measures at the centre of an empty cell: the error names the nearest occupied cell.
    b = archive.boundaries
    i, j = np.unravel_index(empty, archive.dims)
    centre = [(b[0][i] + b[0][i + 1]) / 2, (b[1][j] + b[1][j + 1]) / 2]
    with pytest.raises(ValueError, match=r"no elite at measures .* nearest occupied cell is \d+"):
        rp.select_elite(archive, state, centre)
    with pytest.raises(ValueError, match="elite"):
        replay_lib.replay(sphere_run, tmp_path, elite="worst")
    empty_state = archive.init()
    with pytest.raises(ValueError, match="empty"):
        rp.select_elite(archive, empty_state, "best")


def test_generic_renderer_for_unregistered_tasks(sphere_run, tmp_path, monkeypatch, is_png):
    monkeypatch.setattr(rp, "RENDERERS", Registry("renderer"))
    out = replay_lib.replay(sphere_run, tmp_path)
    assert is_png(out["files"]["figure"]) and out["render"] == {}


def test_arm(make_run, tmp_path, is_png):
    run = make_run(
        "arm",
        "map-elites",
        task="arm",
        seeds=1,
        iterations=1,
        archive=True,
        task_settings={"solution_dim": 6, "archive_dims": [10, 10]},
    )
    out = replay_lib.replay(run, tmp_path, elite="best")
    assert out["replayed"]["objective"] == pytest.approx(out["stored"]["objective"], rel=1e-5)
    np.testing.assert_allclose(
        out["render"]["end_effector"], out["stored"]["measures"], rtol=1e-4, atol=1e-4
    )
    assert is_png(out["files"]["figure"])


def test_pendulum_with_archive(tmp_path, make_run, save_archive, is_png):
    settings = {
        "num_episodes": 1,
        "num_steps": 20,
        "hidden_size": 4,
        "with_measures": True,
        "archive_dims": [4, 4],
    }
    run = make_run("pend", "sep-cma-mae", task="pendulum", task_settings=settings, seeds=1)
    task = tasks.get("pendulum", **settings)
    x = np.random.default_rng(0).normal(size=(8, task.solution_dim)).astype(np.float32)
    obj, meas = task.evaluate(jax.numpy.asarray(x), jax.random.PRNGKey(0))
    save_archive(run, 0, algorithms.get("sep-cma-mae", task).scheduler.best_archive, x, obj, meas)
    out = replay_lib.replay(run, tmp_path)
    # One episode with the same key (0): the figure's episode is the stored evaluation.
    assert out["replayed"]["objective"] == pytest.approx(out["stored"]["objective"], rel=1e-4)
    assert out["render"]["episode_return"] == pytest.approx(out["stored"]["objective"], rel=1e-4)
    assert is_png(out["files"]["figure"])
