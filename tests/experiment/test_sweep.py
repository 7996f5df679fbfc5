"""``cmamae sweep``: the grid and its folder names, bad input before any run, and a sweep
interrupted with Ctrl-C and run again that reports exactly what an uninterrupted one does."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmamae import rundir
from cmamae.cli import main
from cmamae.experiment import checkpoint
from cmamae.experiment.config import ConfigError
from cmamae.experiment.sweep import Sweep, parse_overrides, plan

# 10-D sphere on a 10x10 grid, 3 emitters x 8 (batch 24); three cells along sigma0, 300
# iterations each (a few seconds), a checkpoint every 10. The last cell (the default sigma0 = 0.5)
# is the experiment tests' small run (small_run.py): its compiled chunk is cached.
GRID = [
    "--tasks", "sphere", "--algos", "sep-cma-mae", "--set", "task.solution_dim=10",
    "--set", "task.archive_dims=(10, 10)", "--set", "num_emitters=3", "--set", "popsize=8",
    "--set", "sigma0=0.2,0.3,0.5", "--seeds", "2", "--evals", "7200",
    "--checkpoint-every", "10", "--log-every", "10", "--quiet", "--no-plots",
]  # fmt: skip
CELLS = [f"sphere-sep-cma-mae-sigma0={s}" for s in ("0.2", "0.3", "0.5")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep run once without interruption."""
    out = tmp_path_factory.mktemp("sweep") / "ref"
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    return out


def _wait_for_checkpoint(run_dir: Path, proc, timeout=300.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if checkpoint.list_checkpoints(run_dir / rundir.CHECKPOINT_DIR):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint appeared in {run_dir}")


def _record(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


@pytest.mark.slow
def test_interrupted_and_resumed_sweep_reports_the_same(reference, tmp_path, capsys):
    out = tmp_path / "cut"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmamae", "sweep", *GRID, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _wait_for_checkpoint(out / CELLS[1], proc)  # the second cell is running
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout + stderr
    assert f"cmamae sweep --resume {out}" in stdout
    assert _record(out)["finished"] == [CELLS[0]]
    stopped = checkpoint.list_checkpoints(out / CELLS[1] / rundir.CHECKPOINT_DIR)[-1][0]
    assert 0 < stopped < 300
    assert not (out / CELLS[2]).exists() and not (out / "report").exists()

    capsys.readouterr()
    assert main(["sweep", *GRID, "--out", str(out)]) == 0  # the same command again
    log = capsys.readouterr().out
    assert f"[1/3] {CELLS[0]}: finished before, kept" in log
    assert f"[2/3] {CELLS[1]}: resuming" in log and f"[3/3] {CELLS[2]}: starting" in log
    assert _record(out)["finished"] == sorted(CELLS)

    # the same report: table and CSV byte for byte (but the folder), every run's metrics
    ref_md = (reference / "report" / "report.md").read_text()
    assert (out / "report" / "report.md").read_text() == ref_md.replace(str(reference), str(out))
    ref_csv = (reference / "report" / "report.csv").read_bytes()
    assert (out / "report" / "report.csv").read_bytes() == ref_csv
    cols = [c for c in rundir.METRIC_COLUMNS if c != "evals_per_s"]
    for cell in CELLS:
        a, b = rundir.read_metrics(reference / cell), rundir.read_metrics(out / cell)
        assert len(a) == 2 * 30  # both seeds, every 10th of 300 iterations
        pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    # one row per sigma0, each the mean ± standard error of its own two seeds
    table = pd.read_csv(out / "report" / "report.csv", index_col="algorithm")
    assert list(table.index) == [f"sep-cma-mae(sigma0={s})" for s in (0.2, 0.3, 0.5)]
    for cell, label in zip(CELLS, table.index):
        final = rundir.read_metrics(out / cell).groupby("seed").last()["qd_score"].to_numpy()
        assert table.loc[label, "sphere/qd_score/n"] == 2
        np.testing.assert_allclose(table.loc[label, "sphere/qd_score/mean"], final.mean())
        se = final.std(ddof=1) / np.sqrt(2)
        np.testing.assert_allclose(table.loc[label, "sphere/qd_score/se"], se)
    assert "sep-cma-mae(sigma0=0.3)" in ref_md


def test_a_finished_sweep_is_kept_and_other_grids_are_refused(reference, tmp_path):
    sweep = Sweep.from_dict(_record(reference)["sweep"])
    assert [c.action for c in plan(sweep, reference)] == ["keep"] * 3
    other = Sweep.from_dict({**sweep.to_json(), "seed": 1})
    with pytest.raises(ConfigError, match=r"holds another sweep \(seed: 0 there, 1 here\)"):
        plan(other, reference)
    # a cell folder holding a run of other settings (here another seed) is refused too
    shutil.copytree(reference / CELLS[0], tmp_path / CELLS[0])
    with pytest.raises(ConfigError, match=rf"{CELLS[0]}.*holds another run \(seed: 0 there"):
        plan(other, tmp_path)
    # ... and with the same settings it is resumed (not recorded as finished here)
    assert [c.action for c in plan(sweep, tmp_path)] == ["resume", "start", "start"]


def test_grid_order_names_and_values():
    sweep = Sweep(
        tasks=("sphere", "arm"),
        algos=("cma-me", "sep-cma-mae"),
        overrides=parse_overrides(
            ["sigma0=0.1,0.3", "task.archive_dims=(10, 10)", "ranker=imp,'2imp'", "popsize=8"]
        ),
    )
    assert sweep.overrides == {
        "sigma0": [0.1, 0.3],
        "task.archive_dims": [(10, 10)],
        "ranker": ["imp", "2imp"],
        "popsize": [8],
    }
    cells = sweep.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    assert [c.name for c in cells[:4]] == [
        "sphere-cma-me-sigma0=0.1-ranker=imp",
        "sphere-cma-me-sigma0=0.1-ranker=2imp",
        "sphere-cma-me-sigma0=0.3-ranker=imp",
        "sphere-cma-me-sigma0=0.3-ranker=2imp",
    ]
    assert cells[-1].name == "arm-sep-cma-mae-sigma0=0.3-ranker=2imp"
    c = cells[5]
    assert (c.task, c.algo) == ("sphere", "sep-cma-mae")
    assert c.settings == {"sigma0": 0.1, "ranker": "2imp", "popsize": 8}
    assert c.task_settings == {"archive_dims": (10, 10)}
    assert parse_overrides(["task.archive_dims=(10,10),(20, 20)"]) == {
        "task.archive_dims": [(10, 10), (20, 20)]
    }
    assert parse_overrides(["name='a,b',c"]) == {"name": ["a,b", "c"]}
    # a config file: a list is the values, a scalar one value; flags add to it
    file = Sweep.from_dict(
        {"tasks": "sphere", "algos": ["cma-me"], "overrides": {"sigma0": [0.1, 0.2], "k": 3}}
    )
    assert (file.tasks, file.overrides) == (("sphere",), {"sigma0": [0.1, 0.2], "k": [3]})
    assert [c.name for c in file.cells()] == [
        "sphere-cma-me-sigma0=0.1",
        "sphere-cma-me-sigma0=0.2",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tasks", "sphere,nope", "--algos", "cma-me"], "unknown task 'nope' in tasks"),
        (["--tasks", "sphere", "--algos", "cma-me,nope"], "unknown algorithm 'nope' in algos"),
        (
            ["--tasks", "sphere", "--algos", "cma-me", "--set", "nope=1,2"],
            "unknown setting(s) ['nope']",
        ),
        # lm-ma-mae has k, cma-me has not: found before lm-ma-mae's cells would run
        (
            ["--tasks", "sphere", "--algos", "lm-ma-mae,cma-me", "--set", "k=10,20"],
            "cell sphere-cma-me-k=10: algorithm settings",
        ),
        (["--tasks", "sphere", "--algos", "cma-me", "--set", "task.nope=1"], "task settings"),
        (["--tasks", "sphere", "--algos", "cma-me", "--set", "sigma0=0.1,"], "empty value"),
        (["--tasks", "sphere", "--algos", "cma-me", "--set", "sigma0"], "KEY=VALUE"),
        (["--tasks", "sphere,sphere", "--algos", "cma-me"], "more than once"),
        (["--tasks", "sphere", "--algos", "cma-me", "--evals", "0"], "evals must be"),
        (["--algos", "cma-me"], "tasks must list at least one name"),
        (["--tasks", "sphere", "--algos", "cma-me", "--preset", "nope"], "unknown preset"),
        (["--resume", "."], "is not a sweep folder"),
        (["--resume", ".", "--tasks", "arm"], "drop ['--tasks']"),
        (["--config", "bad.toml"], "unknown sweep key(s) ['task']"),
    ],
)
def test_bad_sweep_is_one_line_and_exit_2_before_any_run(
    argv, message, tmp_path, capsys, monkeypatch
):
    (tmp_path / "bad.toml").write_text('task = "sphere"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("cmamae sweep: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written before the error
