"""The run folder: where every file of a run lives, and reading them back (never running code).

A run folder (``runs/<name>/``, written by :mod:`cmamae.experiment`) holds:

* ``config.json``: everything needed to rerun (task, algorithm, settings, budget, seeds, key);
* ``metrics.csv``: one row per logged iteration and seed, columns :data:`METRIC_COLUMNS`;
* ``archive/seed<i>.npz``: the result archive of seed ``i`` at the end (or at the last checkpoint
  of an unfinished run), written by :meth:`cmamae.archives.ArchiveBase.save_npz`;
* ``checkpoints/``: the scheduler state every N iterations (:mod:`cmamae.experiment.checkpoint`);
* ``plots/``: figures written by ``cmamae run`` / ``cmamae plot``;
* ``provenance.json``: the device layout and the environment (versions, machine) the
  iterations ran in, one segment per change (:mod:`cmamae.provenance`);
* ``evaluation/``: re-evaluations of the elites (``cmamae evaluate``,
  :mod:`cmamae.experiment.evaluation`).

Everything here reads arrays and JSON only (``allow_pickle=False``), so opening a run folder that
someone else shared cannot execute code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.csv"
ARCHIVE_DIR = "archive"
CHECKPOINT_DIR = "checkpoints"
PLOT_DIR = "plots"
PROVENANCE = "provenance.json"
EVALUATION_DIR = "evaluation"

# Columns of metrics.csv, in order. Stats are the result archive's (ArchiveStats fields).
METRIC_COLUMNS = (
    "seed",
    "iteration",
    "evaluations",
    "num_elites",
    "coverage",
    "qd_score",
    "norm_qd_score",
    "obj_max",
    "obj_mean",
    "num_invalid",
    "evals_per_s",
)


class NotARunError(ValueError):
    """The path is not a run folder (no readable ``config.json``)."""


def is_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a run's ``config.json``."""
    return (Path(path) / CONFIG).is_file()


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's ``config.json`` as a dict; :class:`NotARunError` if there is none."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise NotARunError(f"{os.fspath(run_dir)!r} is not a run folder (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NotARunError(f"{os.fspath(path)!r} is not a readable run config: {err}") from None


def read_metrics(run_dir: str | os.PathLike):
    """The run's ``metrics.csv`` as a :class:`pandas.DataFrame` (columns :data:`METRIC_COLUMNS`),
    empty with those columns when nothing was logged yet."""
    import pandas as pd

    read_config(run_dir)
    path = Path(run_dir) / METRICS
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame({c: [] for c in METRIC_COLUMNS})
    return pd.read_csv(path)


def final_metrics(run_dir: str | os.PathLike):
    """The last logged row of each seed, indexed by seed."""
    frame = read_metrics(run_dir)
    return frame.sort_values(["seed", "iteration"]).groupby("seed").tail(1).set_index("seed")


def archive_path(run_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Where the result archive of ``seed`` is written."""
    return Path(run_dir) / ARCHIVE_DIR / f"seed{int(seed)}.npz"


def load_archive(run_dir: str | os.PathLike, seed: int = 0):
    """``(archive, state)``: the archive object (settings, CVT centroids) and the elites of
    ``seed``'s result archive, read without unpickling."""
    from cmamae.archives import load_archive_npz, load_npz

    read_config(run_dir)
    path = archive_path(run_dir, seed)
    if not path.is_file():
        raise NotARunError(f"run {os.fspath(run_dir)!r} has no archive for seed {seed} ({path})")
    archive = load_archive_npz(path)
    return archive, load_npz(path, archive)


def read_provenance(run_dir: str | os.PathLike) -> dict | None:
    """The run's ``provenance.json`` (``{"format", "segments": [{"from_iteration", "layout",
    "environment"}, ...]}``), or None for runs written before it existed."""
    path = Path(run_dir) / PROVENANCE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NotARunError(f"{os.fspath(path)!r} is not readable: {err}") from None


def provenance_segment(record: dict | None, iteration: int) -> dict | None:
    """The segment of ``record`` that covers ``iteration`` (None when there is none)."""
    if not record:
        return None
    covering = [s for s in record.get("segments", []) if s["from_iteration"] <= iteration]
    return covering[-1] if covering else None
