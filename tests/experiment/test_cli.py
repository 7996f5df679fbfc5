"""The `cmamae` command end to end: exact resume after SIGINT and SIGKILL (with a corrupt newest
checkpoint), report numbers against the metrics files, plot and replay outputs, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from small_run import ARGV as SMALL  # the experiment tests' small run (batch 24)

from cmamae import rundir
from cmamae.cli import main
from cmamae.experiment import checkpoint

ITERATIONS = 1500


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "cmamae", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def _wait_for_checkpoint(run_dir: Path, proc, beyond: int, timeout=180.0):
    """Wait until a checkpoint after more than ``beyond`` iterations exists."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = checkpoint.list_checkpoints(run_dir / rundir.CHECKPOINT_DIR)
        if found and found[-1][0] > beyond:
            return found[-1][0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError("no checkpoint appeared")


def _assert_same_run(a: Path, b: Path, seeds=2):
    ma, mb = rundir.read_metrics(a), rundir.read_metrics(b)
    assert len(ma) == seeds * ITERATIONS  # every iteration logged
    cols = [c for c in rundir.METRIC_COLUMNS if c != "evals_per_s"]  # timing differs
    pd.testing.assert_frame_equal(ma[cols], mb[cols], check_exact=True)
    for s in range(seeds):
        with np.load(rundir.archive_path(a, s)) as x, np.load(rundir.archive_path(b, s)) as y:
            assert x.files == y.files
            for f in x.files:
                np.testing.assert_array_equal(x[f], y[f], err_msg=f)


@pytest.mark.slow
def test_interrupt_kill_corrupt_resume_is_bitwise_exact(tmp_path):
    evals = str(ITERATIONS * 24)
    args = ["run", *SMALL, "--evals", evals, "--log-every", "1", "--out", str(tmp_path)]
    reference = tmp_path / "ref"
    assert main([*args, "--name", "ref"]) == 0

    run = tmp_path / "cut"
    # 1. Ctrl-C: the chunk finishes, a checkpoint is written, exit status 130.
    proc = _cli(*args, "--name", "cut")
    _wait_for_checkpoint(run, proc, 0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in out and "--resume" in err
    stopped = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)[-1][0]
    assert 0 < stopped < ITERATIONS
    assert rundir.archive_path(run, 1).is_file()

    # 2. resume, then SIGKILL in the middle (no chance to clean up).
    proc = _cli("run", "--resume", str(run), "--quiet", "--no-plots")
    newest = _wait_for_checkpoint(run, proc, stopped + 20)
    proc.kill()
    proc.communicate(timeout=60)
    assert newest < ITERATIONS

    # 3. corrupt the newest checkpoint: the previous one is used, with a warning.
    found = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)
    path = found[-1][1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match=path.name):
        assert main(["run", "--resume", str(run), "--quiet", "--no-plots"]) == 0
    _assert_same_run(reference, run)


def test_report_plot_replay_on_real_runs(tmp_path, capsys):
    base = [*SMALL, "--evals", str(30 * 24), "--out", str(tmp_path)]
    for algo in ("sep-cma-mae", "openai-mae"):
        assert main(["run", *base, "--algo", algo]) == 0
    runs = sorted(p for p in tmp_path.iterdir() if rundir.is_run(p))
    assert len(runs) == 2
    out = tmp_path / "report"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "report.csv", index_col="algorithm")
    for run in runs:
        config = rundir.read_config(run)
        final = rundir.final_metrics(run)
        row = table.loc[config["algo"]]
        for metric in ("qd_score", "coverage", "obj_max"):
            values = final[metric].to_numpy()
            assert row[f"sphere/{metric}/mean"] == pytest.approx(values.mean(), rel=1e-9)
            se = values.std(ddof=1) / np.sqrt(len(values))
            assert row[f"sphere/{metric}/se"] == pytest.approx(se, rel=1e-9, abs=1e-12)
            assert row[f"sphere/{metric}/n"] == len(values) == 2
    assert "sep-cma-mae" in capsys.readouterr().out
    assert (out / "qd_curves.png").stat().st_size > 0

    assert main(["plot", str(runs[0])]) == 0
    pngs = list((runs[0] / rundir.PLOT_DIR).glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)

    assert main(["replay", str(runs[0]), "--elite", "best"]) == 0
    files = list((runs[0] / "replay").iterdir())
    assert files and all(p.stat().st_size > 0 for p in files)
    archive, state = rundir.load_archive(runs[0], seed=1)
    cell = int(np.flatnonzero(np.asarray(state.occupied))[0])
    m = ",".join(repr(float(v)) for v in np.asarray(state.measures)[cell])
    assert main(["replay", str(runs[0]), "--seed", "1", f"--measures={m}"]) == 0
    record = json.loads(next((runs[0] / "replay").glob(f"*seed1_cell{cell}.json")).read_text())
    # the scoring episode, reproduced; on the benchmark functions up to float rounding of
    # sums compiled inside the fused loop (docs/tasks.md)
    assert record["cell"] == cell and record["within_rounding"]
    assert record["episode"]["kind"] == "stored"
    stored = float(np.asarray(state.objectives)[cell])
    assert record["replayed"]["objective"] == pytest.approx(stored, rel=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--task", "nope"], "unknown task 'nope'; expected one of"),
        (["run", "--algo", "nope"], "unknown algorithm 'nope'; expected one of"),
        (["run", "--preset", "nope"], "unknown preset 'nope'; expected one of"),
        (["run", "--evals", "0"], "evals must be an integer >="),
        (["run", "--seeds", "-1"], "seeds must be an integer >= 1"),
        (["run", "--seed", "-3"], "seed must be an integer >= 0"),
        (["run", "--set", "nope=1"], "unknown setting(s) ['nope']"),
        (
            ["run", "--set", "learning_rate=0.1"],
            "for algorithm 'sep-cma-mae' (learning_rate is now archive_learning_rate); its "
            "settings are ['archive_learning_rate', 'batching', 'noise', 'num_emitters', ",
        ),
        (["run", "--set", "task.domain=nope"], "domain must be one of ('benchmark', 'scaling')"),
        (["run", "--set", "task.nope=1"], "unknown override(s) ['nope']"),
        (["run", "--set", "sigma0"], "--set expects key=value"),
        (["run", "--config", "missing.toml"], "does not exist"),
        (["run", "--resume", "."], "is not a run folder"),
        (["report", "."], "neither a run folder"),
        (["plot", "."], "is not a run folder"),
        (["replay", "."], "is not a run folder"),
        (["run", "--task", "pendulum"], "has no measures"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written before the error


def test_existing_run_needs_force_and_set_is_never_evaluated(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "keep.txt").write_text("mine")
    argv = ["run", *SMALL, "--evals", "480", "--name", "x", "--out", str(tmp_path / "runs")]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "mine"
    marker = tmp_path / "pwned"
    assert main([*argv, "--force", "--set", f"sigma0=open({str(marker)!r}, 'w')"]) == 2
    assert not marker.exists()
    assert (run / "keep.txt").exists()  # a bad config is rejected before the folder is emptied
    assert main([*argv, "--force"]) == 0
    assert not (run / "keep.txt").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["num_emitters"] == 3 and config["evals"] == 480


def test_config_file_and_flags(tmp_path):
    (tmp_path / "c.toml").write_text(
        'task = "sphere"\nalgo = "map-elites"\nevals = 200\nseeds = 1\n'
        "[task_settings]\nsolution_dim = 10\narchive_dims = [10, 10]\n"
        "[settings]\nbatch_size = 50\n"
    )
    (tmp_path / "c.yaml").write_text("evals: 100\nnope: 1\n")
    out = str(tmp_path / "runs")
    assert main(["run", "--config", str(tmp_path / "c.toml"), "--seeds", "2", "--quiet",
                 "--no-plots", "--out", out]) == 0  # fmt: skip
    config = rundir.read_config(Path(out) / "sphere-map-elites")
    assert (config["evals"], config["seeds"], config["batch_size"]) == (200, 2, 50)
    assert main(["run", "--config", str(tmp_path / "c.yaml"), "--out", out]) == 2


@pytest.mark.parametrize("algo", ["cma-mae", "map-elites", "cma-mega-es", "me-es"])
def test_paper_preset_gives_every_algorithm_the_papers_budget(algo):
    from cmamae.experiment.config import RunConfig

    resolved = RunConfig(task="sphere", algo=algo, preset="paper").build()
    per_iteration = resolved.algorithm.scheduler.evaluations_per_iteration
    assert resolved.seeds == 20
    assert resolved.evals == (10_000 * 540 // per_iteration) * per_iteration
    assert 10_000 * 540 - per_iteration < resolved.evals <= 10_000 * 540
