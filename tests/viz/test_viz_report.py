"""The results table, its Markdown/CSV forms and the curves, checked against the metrics files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from cmamae import rundir
from cmamae.viz import report as rep


def _final_from_files(runs):
    """{metric: [values]} of the last iteration of every seed, read with the csv module."""
    out = {m: [] for m in ("qd_score", "coverage", "obj_max")}
    for run in runs:
        with open(run / rundir.METRICS) as f:
            rows = list(csv.DictReader(f))
        last = {}
        for r in rows:
            s, it = int(r["seed"]), int(r["iteration"])
            if s not in last or it > int(last[s]["iteration"]):
                last[s] = r
        for r in last.values():
            for m in out:
                out[m].append(float(r[m]))
    return out


@pytest.fixture
def two_algos(make_run):
    # sep-cma-mae: two runs (2 + 1 seeds) pooled; map-elites: one run of 2 seeds.
    a1 = make_run("a1", "sep-cma-mae", seeds=2, metric_seed=1)
    a2 = make_run("a2", "sep-cma-mae", seeds=1, metric_seed=2)
    b = make_run("b", "map-elites", seeds=2, metric_seed=3)
    return {"sep-cma-mae": [a1, a2], "map-elites": [b]}


def test_table_numbers_equal_mean_and_se_from_metrics(two_algos):
    runs = [r for rs in two_algos.values() for r in rs]
    table = rep.summary_table(runs)
    assert list(table.index) == ["sep-cma-mae", "map-elites"]
    assert set(table.columns.get_level_values("task")) == {"sphere"}
    for algo, algo_runs in two_algos.items():
        values = _final_from_files(algo_runs)
        for metric, v in values.items():
            v = np.asarray(v)
            n = len(v)
            mean = v.sum() / n
            se = math.sqrt(((v - mean) ** 2).sum() / (n - 1)) / math.sqrt(n)
            assert table.loc[algo, ("sphere", metric, "mean")] == pytest.approx(mean, rel=1e-12)
            assert table.loc[algo, ("sphere", metric, "se")] == pytest.approx(se, rel=1e-12)
            assert table.loc[algo, ("sphere", metric, "n")] == n
    assert table.loc["sep-cma-mae", ("sphere", "qd_score", "n")] == 3


def test_single_seed_has_nan_se_and_dash(make_run):
    run = make_run("one", "sep-cma-mae", seeds=1)
    table = rep.summary_table([run])
    assert math.isnan(table.loc["sep-cma-mae", ("sphere", "qd_score", "se")])
    assert "± –" in rep.to_markdown(table)


def test_markdown_rows_and_columns(two_algos, make_run):
    arm = make_run(
        "c", "sep-cma-mae", task="arm", task_settings={"solution_dim": 5, "archive_dims": [10, 10]}
    )
    runs = [r for rs in two_algos.values() for r in rs] + [arm]
    table = rep.summary_table(runs)
    lines = rep.to_markdown(table).strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "algorithm",
        "sphere: QD score",
        "sphere: coverage",
        "sphere: best",
        "arm: QD score",
        "arm: coverage",
        "arm: best",
    ]
    assert len(lines) == 2 + 2  # header, separator, two algorithms
    body = {ln.strip("|").split("|")[0].strip(): ln for ln in lines[2:]}
    assert set(body) == {"sep-cma-mae", "map-elites"}
    cells = [c.strip() for c in body["map-elites"].strip("|").split("|")]
    assert len(cells) == 7 and cells[4:] == ["–", "–", "–"]  # never ran on arm
    mean = table.loc["map-elites", ("sphere", "qd_score", "mean")]
    shown = cells[1].split(" ± ")[0].replace(",", "")
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    assert float(shown) == pytest.approx(mean, abs=0.5 * 10**-decimals)
    assert cells[2].endswith("%")


def test_report_writes_markdown_csv_and_curves(two_algos, tmp_path, is_png):
    runs = [r for rs in two_algos.values() for r in rs]
    paths = rep.report(runs, tmp_path / "out")
    assert set(paths) == {"markdown", "csv", "curves"}
    assert "| sep-cma-mae |" in paths["markdown"].read_text()
    assert is_png(paths["curves"])
    csv_table = pd.read_csv(paths["csv"], index_col="algorithm")
    table = rep.summary_table(runs)
    for stat in ("mean", "se", "n"):
        col = f"sphere/qd_score/{stat}"
        np.testing.assert_allclose(csv_table[col], table[("sphere", "qd_score", stat)])


def test_parent_folder_and_not_a_run(two_algos, tmp_path):
    parent = two_algos["map-elites"][0].parent
    assert len(rep.find_runs([parent])) == 3
    with pytest.raises(rundir.NotARunError):
        rep.find_runs([tmp_path / "nothing-here"])
    with pytest.raises(ValueError, match="metrics"):
        rep.summary_table([parent], metrics=("bogus",))


def test_different_task_settings_are_different_columns(make_run):
    a = make_run("s10", "sep-cma-mae")
    b = make_run("s4", "sep-cma-mae", task_settings={"solution_dim": 4, "archive_dims": [10, 10]})
    tasks = list(dict.fromkeys(rep.summary_table([a, b]).columns.get_level_values("task")))
    assert tasks == [
        "sphere(archive_dims=(10,10), solution_dim=10)",
        "sphere(archive_dims=(10,10), solution_dim=4)",
    ]


def test_curve_stats_mean_and_se():
    x, mean, se = rep.curve_stats(
        [
            (np.array([0, 100, 200]), np.array([0.0, 2.0, 4.0])),
            (np.array([0, 100, 200]), np.array([0.0, 4.0, 8.0])),
            (np.array([0, 200]), np.array([0.0, 0.0])),
        ]
    )
    np.testing.assert_array_equal(x, [0, 100, 200])
    np.testing.assert_allclose(mean, [0, 2, 4])
    np.testing.assert_allclose(
        se, [0, np.std([2, 4, 0], ddof=1) / np.sqrt(3), np.std([4, 8, 0], ddof=1) / np.sqrt(3)]
    )


def test_runs_with_old_and_current_setting_names_are_one_configuration():
    from cmamae.viz.report import _algo_labels

    configs = [
        {"algo": "sep-cma-mae", "setting_overrides": {"learning_rate": 0.1}},  # an older run
        {"algo": "sep-cma-mae", "setting_overrides": {"archive_learning_rate": 0.1}},
        {"algo": "sep-cma-mae", "setting_overrides": {"archive_learning_rate": 0.5}},
        {"algo": "not-registered", "setting_overrides": {"x": 1}},
    ]
    labels = _algo_labels(configs)
    assert labels[0] == labels[1] == "sep-cma-mae(archive_learning_rate=0.1)"
    assert labels[2] == "sep-cma-mae(archive_learning_rate=0.5)"
    assert labels[3] == "not-registered"
