"""Trustworthy scores: every elite replays its scoring episode exactly from its provenance
(compiled loop with batched seeds, gradient pre-phase, host tasks on Dask), re-evaluation gives
the corrected archive, and replay / evaluate / report say what they did in words."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import small_run  # the experiment tests' small run

import cmamae
from cmamae import algorithms, provenance, rundir, tasks
from cmamae.cli import main
from cmamae.compiled_loop import seed_keys
from cmamae.experiment import RunConfig, evaluation, start
from cmamae.experiment import replay as replay_lib
from cmamae.tasks.base import Task, bind


def _reproduce_run(run_dir):
    """Every elite of every seed of a run folder re-run from its provenance."""
    config = rundir.read_config(run_dir)
    resolved = RunConfig.from_dict({k: config[k] for k in ("task", "algo")}).build()
    resolved = type(resolved).from_json(config)
    record = rundir.read_provenance(run_dir)
    assert len(record["segments"]) == 1
    layout = provenance.Layout.from_json(record["segments"][0]["layout"])
    states = [rundir.load_archive(run_dir, s)[1] for s in range(resolved.seeds)]
    cells = [np.flatnonzero(np.asarray(s.occupied)) for s in states]
    _, run_keys = seed_keys(jax.random.key(resolved.config.seed), resolved.seeds)
    return provenance.reproduce(
        resolved.task, resolved.algorithm.scheduler, run_keys, layout, states, cells
    )


def _assert_all_exact(reproductions):
    for seed_reps in reproductions:
        assert seed_reps, "no elites"
        bad = [(r.cell, r.objective_gap, r.measures_gap) for r in seed_reps if not r.exact]
        assert not bad, f"{len(bad)} of {len(seed_reps)} elites not reproduced: {bad[:5]}"


def _assert_exact_up_to_an_ulp(reproductions):
    """Benchmark functions: a float32 sum compiled inside the fused loop may round a few ulps
    differently than standalone (from 2-3 % of the elites to most of them, depending on the
    noise generator; optimization barriers do not change it), so elites replay bit for bit
    or within float32 rounding."""
    reps = [r for seed in reproductions for r in seed]
    assert sum(r.exact for r in reps) >= 0.3 * len(reps)
    assert all(r.ulps <= provenance.ROUNDING_ULPS for r in reps), max(r.ulps for r in reps)


@pytest.mark.slow
def test_ant_run_every_elite_replays_its_scoring_episode_exactly(tmp_path, capsys):
    """A short MJX ant run (50-step episodes, 2 seeds batched under one vmap, 3 iterations of
    2 emitters x 8): every elite of both result archives, re-run from its provenance, gives
    its stored objective and measures bit for bit; ``cmamae replay`` says so and draws that
    episode."""
    settings = {"episode_length": 50, "hidden_sizes": [16, 16], "backend": "mjx"}
    config = RunConfig(
        task="ant",
        algo="sep-cma-mae",
        evals=3 * 16,
        seeds=2,
        settings={"num_emitters": 2, "popsize": 8},
        task_settings=settings,
    )
    start(config, tmp_path, quiet=True, plots=False)
    run = tmp_path / "ant-sep-cma-mae"
    reps = _reproduce_run(run)
    _assert_all_exact(reps)
    assert {r.scoring.iteration for seed in reps for r in seed} == {0, 1, 2}

    record = replay_lib.replay(run, tmp_path / "replay", seed=1, render_options={"format": "gif"})
    assert record["episode"]["kind"] == "stored" and record["reproduced"] is True
    # the drawn episode is the same one: re-run while recording its states, same return
    assert record["drawn_episode_objective"] == pytest.approx(
        record["stored"]["objective"], rel=1e-4, abs=1e-4
    )
    lines = replay_lib.describe(record)
    assert any("reproduced bit for bit" in line for line in lines)
    assert not any("PosixPath" in line or "{'" in line for line in lines)


def test_prephase_and_main_batch_elites_replay_exactly():
    """CMA-MEGA (ES) evaluates a gradient pre-phase batch before the main batch: elites from
    both phases replay from their rows (pre-phase rows first)."""
    task = tasks.get("sphere", solution_dim=8, archive_dims=(10, 10))
    algo = algorithms.get("cma-mega-es", task, num_emitters=1, popsize=6)
    sched = algo.scheduler
    assert sched.grad_batch_size > 0
    result = cmamae.run(task, algo, evals=6 * sched.evaluations_per_iteration, seeds=2)
    states = [result.archive_state(s) for s in range(2)]
    cells = [np.flatnonzero(np.asarray(s.occupied)) for s in states]
    reps = provenance.reproduce(task, sched, result.run_keys, result.layout, states, cells)
    _assert_exact_up_to_an_ulp(reps)
    phases = {r.scoring.phase for seed in reps for r in seed}
    assert phases == {"pre-phase", "main"}, phases
    for seed in reps:
        for r in seed:
            size = sched.grad_batch_size if r.scoring.phase == "pre-phase" else sched.batch_size
            assert r.scoring.batch_size == size and 0 <= r.scoring.row < size


def test_provenance_rows_of_the_two_phases():
    task = tasks.get("sphere", solution_dim=4, archive_dims=(5, 5))
    sched = algorithms.get("cma-mega-es", task, num_emitters=1, popsize=4).scheduler
    g, b = sched.grad_batch_size, sched.batch_size
    assert provenance.scoring(sched, 3, 0) == provenance.Scoring(3, "pre-phase", 0, g)
    assert provenance.scoring(sched, 3, g) == provenance.Scoring(3, "main", 0, b)
    with pytest.raises(ValueError, match="no recorded provenance"):
        provenance.scoring(sched, -1, -1)
    with pytest.raises(ValueError, match="outside"):
        provenance.scoring(sched, 0, g + b)


@pytest.mark.slow
def test_host_task_on_dask_replays_exactly(tmp_path):
    """qd-hopper (PyBullet) on a local Dask cluster through the runner's host path: every
    elite replays from its episode argument (reset seed) at its row."""
    pytest.importorskip("distributed")
    pytest.importorskip("pybullet_envs.gym_locomotion_envs")
    from cmamae.experiment.advance import Execution

    config = RunConfig(  # (test_dask_cluster.py's runner run: its compiled ask and tell)
        task="qd-hopper",
        algo="sep-cma-mae",
        evals=3 * 12,
        seeds=2,
        settings={"num_emitters": 2, "popsize": 6},
        task_settings={"episode_length": 20},
    )
    start(config, tmp_path, quiet=True, plots=False, execution=Execution(workers=1))
    run = tmp_path / "qd-hopper-sep-cma-mae"
    record = rundir.read_provenance(run)
    assert record["segments"][0]["layout"]["host"] is True
    _assert_all_exact(_reproduce_run(run))
    # re-evaluated on the Dask evaluator; a re-evaluation episode replays from its reset seed
    summary = evaluation.evaluate_run(run, episodes=2, quiet=True, workers=1)
    assert summary["status"] == "finished" and summary["episodes_done"] == 2
    saved = evaluation.load_seed(run, 0)
    assert np.isfinite(saved["objectives"]).all() and saved["objectives"].shape[0] == 2
    assert not np.array_equal(saved["objectives"][0], saved["objectives"][1])  # fresh starts
    out = replay_lib.replay(run, tmp_path / "replay", episode=1)
    assert out["episode"]["kind"] == "re-evaluation" and out["reproduced"] is True
    out = replay_lib.replay(run, tmp_path / "replay")
    assert out["episode"]["kind"] == "stored" and out["reproduced"] is True


# --------------------------------------------------------------------------- re-evaluation
NOISY_SPHERE = dict(solution_dim=6, archive_dims=(8, 8), measure_ranges=((-2, 2), (-2, 2)))


def _noisy_sphere(sigma: float) -> Task:
    base = tasks.get("sphere", **NOISY_SPHERE)
    return Task(
        **{
            **{f: getattr(base, f) for f in ("solution_dim", "measure_names")},
            "name": "noisy-sphere",
            "archive_dims": base.archive_dims,
            "measure_ranges": base.measure_ranges,
            "min_f": base.min_f,
            "max_f": None,
            "evaluate": bind(_noisy_evaluate, base=base.evaluate, sigma=sigma),
            "initial_solution": base.initial_solution,
        }
    )


def _noisy_evaluate(solutions, key, *, base, sigma):
    f, m = base(solutions, key)
    return f + sigma * jax.random.normal(key, f.shape), m


def test_corrected_archive_equals_stored_on_a_deterministic_task():
    task = tasks.get("sphere", solution_dim=6, archive_dims=(8, 8))
    algo = algorithms.get("sep-cma-mae", task, num_emitters=2, popsize=10)
    result = cmamae.run(task, algo, evals=200, seeds=2)
    out = evaluation.evaluate_result(result, episodes=3)
    archive = result.scheduler.best_archive
    for s, r in enumerate(out):
        stored = result.archive_state(s)
        for name in ("occupied", "solutions"):
            np.testing.assert_array_equal(getattr(r.corrected, name), getattr(stored, name))
        # equal up to the float32 rounding of a sum compiled in the fused loop (an ulp)
        for name in ("objectives", "measures"):
            np.testing.assert_allclose(
                getattr(r.corrected, name), getattr(stored, name), rtol=2e-7, atol=1e-6
            )
        np.testing.assert_array_equal(r.std()[0], 0.0)
        a, b = evaluation.stats_of(archive, r.corrected), evaluation.stats_of(archive, stored)
        assert a == pytest.approx(b, rel=1e-6)
        # corrected elites keep their scoring provenance
        np.testing.assert_array_equal(r.corrected.eval_iteration, stored.eval_iteration)
        np.testing.assert_array_equal(r.corrected.eval_row, stored.eval_row)


def test_corrected_objectives_are_within_4_sigma_over_sqrt_n_and_qd_score_drops():
    sigma, episodes = 5.0, 16
    noisy = _noisy_sphere(sigma)
    clean = tasks.get("sphere", **NOISY_SPHERE)
    algo = algorithms.get("cma-me", noisy, num_emitters=2, popsize=20, sigma0=1.0)
    result = cmamae.run(noisy, algo, evals=400, seeds=1)
    (r,) = evaluation.evaluate_result(result, episodes=episodes, seed=3)
    mean_f, _ = r.mean()
    truth, _ = clean.evaluate(jnp.asarray(np.asarray(r.stored.solutions)[r.cells]), None)
    gap = np.abs(mean_f - np.asarray(truth))
    assert len(r.cells) > 10
    assert np.all(gap < 4 * sigma / np.sqrt(episodes)), gap.max()
    archive = result.scheduler.best_archive
    # the NumPy stats of the means (progress, partial summaries) are the corrected archive's
    partial = evaluation.corrected_stats(archive, dataclasses.replace(r, corrected=None))
    assert partial == pytest.approx(evaluation.stats_of(archive, r.corrected), rel=1e-5)
    stats = archive.stats
    stored_qd = float(stats(r.stored).qd_score)
    assert float(stats(r.corrected).qd_score) < stored_qd
    # the stored scores are the lucky ones: on average above the truth
    stored_f = np.asarray(r.stored.objectives)[r.cells]
    assert float(np.mean(stored_f - np.asarray(truth))) > 0


# --------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def sphere_run(tmp_path_factory):
    """The experiment tests' small run (small_run.py: its compiled chunk is cached)."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["run", *small_run.ARGV, "--evals", "480", "--out", str(root)]) == 0
    return root / "sphere-sep-cma-mae"


def test_evaluate_resumes_adds_episodes_and_feeds_report_and_replay(sphere_run, tmp_path, capsys):
    run = sphere_run
    assert main(["evaluate", str(run), "--episodes", "2", "--quiet"]) == 0
    first = evaluation.load_seed(run, 1)
    assert main(["evaluate", str(run), "--episodes", "3", "--quiet"]) == 0  # adds one
    more = evaluation.load_seed(run, 1)
    assert more["objectives"].shape[0] == 3
    np.testing.assert_array_equal(more["objectives"][:2], first["objectives"])
    out = capsys.readouterr().out
    assert "Re-evaluated 3 episodes per elite" in out and "corrected" in out
    summary = evaluation.read_summary(run)
    assert summary["episodes_done"] == 3 and len(summary["seeds"]) == 2

    assert main(["replay", str(run), "--episode", "median", "--out", str(tmp_path)]) == 0
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["episode"]["kind"] == "re-evaluation" and record["reproduced"] is True
    assert record["reevaluations"]["episodes"] == 3
    out = capsys.readouterr().out
    assert "median of 3 re-evaluations" in out and "Over 3 re-evaluations" in out
    # seed 1's elites come after seed 0's in the evaluation's batches
    assert main(["replay", str(run), "--seed", "1", "--episode", "2", "--out", str(tmp_path)]) == 0
    record = json.loads(next(tmp_path.glob("*seed1*.json")).read_text())
    assert record["episode"]["index"] == 2 and record["reproduced"] is True

    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "QD score (corrected)" in md and "re-evaluation episodes" in md


def test_old_run_folder_without_provenance(sphere_run, tmp_path, capsys):
    """A run folder from before provenance: replay says it cannot reproduce and why; asking for
    the stored episode is an error."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(sphere_run, old)
    (old / rundir.PROVENANCE).unlink()
    assert main(["replay", str(old), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "fresh episode" in out and "before cmamae recorded" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "{run}", "--episodes", "0"], "episodes must be an integer >= 1"),
        (["evaluate", "{tmp}"], "is not a run folder"),
        (["evaluate", "{bare}"], "has no result archive"),
        (["replay", "{old}", "--episode", "stored"], "cannot be re-run"),
        (["replay", "{run}", "--episode", "99"], "episode must be in [0, 3)"),
        (["replay", "{run}", "--episode", "-1"], "episode must be"),
        (["replay", "{bare_eval}", "--episode", "median"], "has no re-evaluations"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(argv, message, sphere_run, tmp_path, capsys):
    import shutil

    if not evaluation.read_summary(sphere_run):
        assert main(["evaluate", str(sphere_run), "--episodes", "3", "--quiet"]) == 0
    bare = tmp_path / "bare"
    shutil.copytree(sphere_run, bare, ignore=shutil.ignore_patterns("archive", "evaluation"))
    bare_eval = tmp_path / "bare_eval"
    shutil.copytree(sphere_run, bare_eval, ignore=shutil.ignore_patterns("evaluation"))
    old = tmp_path / "old"
    shutil.copytree(sphere_run, old, ignore=shutil.ignore_patterns(rundir.PROVENANCE))
    paths = dict(run=sphere_run, tmp=tmp_path / "empty", bare=bare, old=old, bare_eval=bare_eval)
    (tmp_path / "empty").mkdir()
    before = {p: sorted(x.name for x in p.rglob("*")) for p in paths.values()}
    capsys.readouterr()
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert {p: sorted(x.name for x in p.rglob("*")) for p in paths.values()} == before


@pytest.mark.parametrize("algo", ["sep-cma-mae", "lm-ma-mae"])
def test_checkpoint_written_before_provenance_still_resumes(tmp_path, algo):
    """A checkpoint of the structure older versions wrote (archives without provenance, LM-MA-ES
    without its Gram matrix) resumes; with sep-CMA-MAE the resumed run ends with the same
    elites, the old elites' provenance unknown; LM-MA-ES recomputes its Gram matrix (its
    rounding differs from the one tell keeps, so that run goes on as another sample)."""
    from cmamae.experiment import checkpoint, resume, runner

    config = RunConfig(
        task="sphere",
        algo=algo,
        evals=4 * 540,
        seeds=1,
        checkpoint_every=2,
        task_settings={"solution_dim": 40},
    )
    start(config, tmp_path, quiet=True, plots=False)
    run = tmp_path / f"sphere-{algo}"
    reference = rundir.load_archive(run, 0)[1]
    ckpts = checkpoint.list_checkpoints(run / rundir.CHECKPOINT_DIR)
    assert [it for it, _ in ckpts] == [2, 4]
    resolved = config.build()
    from cmamae.compiled_loop import init_states

    template = jax.eval_shape(
        lambda k: init_states(resolved.algorithm.scheduler, resolved.task, k),
        seed_keys(jax.random.key(0), 1)[0],
    )
    _, states = checkpoint.load(ckpts[0][1], template)
    old = runner._without_provenance(states)
    assert len(jax.tree_util.tree_leaves(old)) < len(jax.tree_util.tree_leaves(states))
    for _, path in ckpts:
        path.unlink()
    checkpoint.save(run / rundir.CHECKPOINT_DIR, 2, old)
    outcome = resume(run, quiet=True, plots=False)
    assert outcome.resumed_from == 2 and outcome.iterations_done == 4
    resumed = rundir.load_archive(run, 0)[1]
    if algo == "lm-ma-mae":
        return
    for name in ("occupied", "solutions", "objectives", "measures"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name))
    it = np.asarray(resumed.eval_iteration)[np.asarray(resumed.occupied)]
    assert set(np.unique(it)) <= {-1, 2, 3} and (it == -1).any() and (it >= 2).any()


def test_evaluate_interrupted_then_continued_equals_uninterrupted(
    sphere_run, tmp_path, monkeypatch
):
    """Ctrl-C during cmamae evaluate: the episodes done are saved, exit status 130, and
    running it again finishes with the numbers of an uninterrupted evaluation."""
    import os
    import shutil
    import signal

    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        shutil.copytree(sphere_run, run, ignore=shutil.ignore_patterns("evaluation"))
    assert main(["evaluate", str(a), "--episodes", "4", "--quiet"]) == 0

    save = evaluation._save
    calls = []

    def save_then_interrupt(*args):
        save(*args)
        calls.append(1)
        if len(calls) == 2:  # after the second episode: as if the user pressed Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(evaluation, "_save", save_then_interrupt)
    assert main(["evaluate", str(b), "--episodes", "4", "--quiet"]) == 130
    assert evaluation.read_summary(b)["episodes_done"] == 2
    monkeypatch.setattr(evaluation, "_save", save)
    assert main(["evaluate", str(b), "--episodes", "4", "--quiet"]) == 0
    for s in range(2):
        x, y = evaluation.load_seed(a, s), evaluation.load_seed(b, s)
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
