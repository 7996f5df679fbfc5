"""Archive heatmaps and histograms for 1-D to 4-D grids and CVT archives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmamae import archives, rundir
from cmamae.viz import plot_archive


def _archive_run(root, archive, save_archive, fill: int = 40):
    """A run folder holding only a config and ``archive`` filled with ``fill`` random elites."""
    run = root / "run"
    run.mkdir()
    m = archive.measure_dim
    (run / rundir.CONFIG).write_text(
        json.dumps(
            {
                "name": "run",
                "task": "sphere",
                "algo": "map-elites",
                "task_info": {"measure_names": [f"d{i}" for i in range(m)], "min_f": 0.0},
            }
        )
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(fill, archive.solution_dim))
    meas = rng.uniform(-1.0, 1.0, (fill, m))
    save_archive(run, 0, archive, x, -np.sum(x**2, axis=1), meas)
    return run


@pytest.mark.parametrize("dims", [(8,), (6, 5), (3, 4, 4), (2, 3, 4, 4)])
def test_grid_archives(tmp_path, is_png, save_archive, dims):
    archive = archives.GridArchive(solution_dim=3, dims=dims, ranges=[(-1, 1)] * len(dims))
    run = _archive_run(tmp_path, archive, save_archive)
    paths = plot_archive(run, None)
    assert set(paths) == {"heatmap", "histogram"}
    assert paths["heatmap"].parent == run / rundir.PLOT_DIR
    assert all(is_png(p) for p in paths.values())


def test_cvt_archive_and_out_dir(tmp_path, is_png, save_archive):
    centroids = np.random.default_rng(0).uniform(-1, 1, (30, 2))
    archive = archives.CVTArchive(
        solution_dim=3, cells=None, ranges=[(-1, 1)] * 2, centroids=centroids
    )
    run = _archive_run(tmp_path, archive, save_archive)
    paths = plot_archive(run, tmp_path / "figs", seed=0)
    assert paths["heatmap"] == tmp_path / "figs" / "archive_seed0.png"
    assert all(is_png(p) for p in paths.values())


def test_empty_archive_and_errors(tmp_path, is_png, save_archive):
    archive = archives.GridArchive(solution_dim=2, dims=(4, 4), ranges=[(-1, 1)] * 2)
    run = _archive_run(tmp_path, archive, save_archive, fill=0)
    assert all(is_png(p) for p in plot_archive(run, tmp_path / "o").values())
    with pytest.raises(rundir.NotARunError, match="seed 3"):
        plot_archive(run, tmp_path / "o", seed=3)
    with pytest.raises(ValueError, match="seed"):
        plot_archive(run, tmp_path / "o", seed=-1)
    with pytest.raises(rundir.NotARunError):
        plot_archive(tmp_path / "nope", tmp_path / "o")
