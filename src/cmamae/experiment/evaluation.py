"""Re-evaluating a run's elites over many episodes: honest scores and the corrected archive.

Every stored objective and measure is one episode of a noisy task, and the archive keeps the
luckiest sample per cell, so its best, QD score and coverage overstate what the policies do.
:func:`evaluate_run` (``cmamae evaluate RUN``) and :func:`evaluate_result` (a
:func:`cmamae.run` result) re-evaluate every elite of every seed's result archive ``episodes``
times with fresh start states and keep, per elite, the mean and standard deviation of its
objective and measures, and the **corrected archive**: the elites re-inserted at their mean
measures with their mean objectives into an empty archive of the same shape (Flageat et al.
2023, "Uncertain Quality-Diversity"). Its stats are the corrected QD score, coverage and best.

Episode ``k`` evaluates every elite with the key ``fold_in(key(seed), k)`` (common random
numbers: on a task whose start state comes from the key, all elites start alike). The elites of
all seeds, seed after seed (elite ``g`` of that order), are evaluated in equal compiled batches
of at most ``batch_size`` (default: the run's main batch), elite ``g`` at row ``g % b`` of batch
``g // b`` (``b`` = :func:`even_batch`; the last batch padded with zeros), so that one episode
replays exactly from (key, row, batch size) (:mod:`cmamae.provenance`); host tasks evaluate all
elites as one batch on the Dask
evaluator. A run folder's evaluation lives in ``RUN/evaluation/``, saved after every episode:
an interrupted evaluation continues where it stopped, and asking for more episodes later adds
to the ones done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import rundir, validate
from cmamae.experiment import checkpoint
from cmamae.experiment.config import ConfigError
from cmamae.provenance import Layout, evaluate_like_run

FORMAT = 1
SUMMARY = "summary.json"
STAT_NAMES = ("qd_score", "coverage", "obj_max", "num_elites")


@dataclasses.dataclass
class SeedEvaluation:
    """The re-evaluations of one seed's elites.

    Attributes:
        cells: ``(k,)`` the elites' cells in the result archive, ascending.
        objectives: ``(episodes, k)`` one row per episode.
        measures: ``(episodes, k, m)``.
        stored: the result archive's state (the stored, single-episode scores).
        corrected: the corrected archive's state (``None`` until the evaluation ends).
    """

    cells: np.ndarray
    objectives: np.ndarray
    measures: np.ndarray
    stored: Any
    corrected: Any = None

    @property
    def episodes(self) -> int:
        """Episodes done (the rows of ``objectives``)."""
        return self.objectives.shape[0]

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        """``(objective (k,), measures (k, m))`` over the episodes done."""
        return self.objectives.mean(axis=0), self.measures.mean(axis=0)

    def std(self) -> tuple[np.ndarray, np.ndarray]:
        """Standard deviations over the episodes (ddof 1; 0 for a single episode)."""
        ddof = 1 if self.episodes > 1 else 0
        return self.objectives.std(axis=0, ddof=ddof), self.measures.std(axis=0, ddof=ddof)

    def median_episode(self, j: int) -> int:
        """The episode whose objective is the median of elite ``j``'s (the lower one of the
        middle two for an even count)."""
        f = self.objectives[:, j]
        return int(np.argsort(f, kind="stable")[(len(f) - 1) // 2])


def corrected_archive(archive, stored, cells: np.ndarray, objectives, measures):
    """The elites ``stored.solutions[cells]`` inserted at ``measures`` ``(k, m)`` with
    ``objectives`` ``(k,)`` into an empty ``archive`` (the result archive's geometry); each
    corrected elite keeps its stored provenance. Non-finite means (an elite whose episodes
    failed) are rejected and counted as the archive does."""
    solutions = jnp.asarray(np.asarray(stored.solutions)[cells])
    dt = np.asarray(stored.objectives).dtype
    state, _ = archive.add(
        archive.init(), solutions, jnp.asarray(objectives, dt), jnp.asarray(measures, dt)
    )
    # eval_row now indexes ``cells``: map it back to each elite's own provenance
    occ = np.asarray(state.occupied)
    pos = np.asarray(state.eval_row)
    origin = np.asarray(cells)[np.where(occ, pos, 0)]
    iteration = np.where(occ, np.asarray(stored.eval_iteration)[origin], -1).astype(np.int32)
    row = np.where(occ, np.asarray(stored.eval_row)[origin], -1).astype(np.int32)
    return state.replace(eval_iteration=jnp.asarray(iteration), eval_row=jnp.asarray(row))


def episode_key(seed: int, episode: int) -> jax.Array:
    """The key of re-evaluation episode ``episode`` (0-based) of evaluation seed ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), episode)


def even_batch(elites: int, batch_size: int) -> int:
    """Rows per compiled batch for ``elites`` elites and batches of at most ``batch_size``:
    as few batches as that allows, of equal size (the padding is less than one row per
    batch)."""
    if elites <= 0:
        return 1
    return math.ceil(elites / math.ceil(elites / batch_size))


class _Episodes:
    """Runs one episode of every elite of every seed: compiled batches for JAX tasks, the
    Dask evaluator for host tasks."""

    def __init__(self, task, scheduler, batch_size: int, evaluator=None):
        from cmamae.compiled_loop import evaluate_fn

        self.task, self.batch_size, self.evaluator = task, batch_size, evaluator
        self.evaluate = None if task.host_evaluated else evaluate_fn(scheduler, task)

    def __call__(self, key, solutions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objectives ``(k,)`` and measures ``(k, m)`` of ``solutions`` ``(k, n)``."""
        k = len(solutions)
        if self.task.host_evaluated:
            args = self.task.episode_args(key, k)
            f, m = self.evaluator.evaluate(solutions, args)
            return np.asarray(f, np.float64), np.asarray(m, np.float64)
        b = even_batch(k, self.batch_size)
        padded = np.zeros((math.ceil(k / b) * b, solutions.shape[1]), solutions.dtype)
        padded[:k] = solutions
        fs, ms = [], []
        for start in range(0, len(padded), b):
            out = evaluate_like_run(
                self.evaluate, key[None], padded[None, start : start + b], Layout(seeds=1)
            )
            fs.append(out[0][0])
            ms.append(out[1][0])
        return np.concatenate(fs)[:k].astype(np.float64), np.concatenate(ms)[:k]


def _elite_cells(state) -> np.ndarray:
    return np.flatnonzero(np.asarray(state.occupied))


def reevaluate(
    task,
    scheduler,
    states: list,
    episodes: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    done: list[SeedEvaluation] | None = None,
    evaluator=None,
    on_episode=None,
    stop=None,
) -> list[SeedEvaluation]:
    """Re-evaluate every elite of ``states`` (one result-archive state per run seed).

    Args:
        task: the run's task.
        scheduler: the run's scheduler.
        states: the result archives' states, one per seed.
        episodes: episodes per elite in all (those in ``done`` count).
        seed: the evaluation seed (episode keys: :func:`episode_key`).
        batch_size: elites per compiled batch (JAX tasks; default ``scheduler.batch_size``).
        done: earlier results to continue (same states, seed and batch size).
        evaluator: a :class:`cmamae.experiment.dask_cluster.DaskEvaluator` (host tasks).
        on_episode: ``on_episode(results)`` after each episode (saving, progress).
        stop: a ``threading.Event``; when set, returns after the current episode.

    Returns:
        One :class:`SeedEvaluation` per seed, its corrected archive filled in.
    """
    batch_size = batch_size or scheduler.batch_size
    validate.integer("episodes", episodes, 1, error=ConfigError)
    validate.integer("batch_size", batch_size, 1, error=ConfigError)
    archive = scheduler.best_archive
    if done is None:
        m = archive.measure_dim
        done = [
            SeedEvaluation(
                cells=(c := _elite_cells(s)),
                objectives=np.zeros((0, len(c))),
                measures=np.zeros((0, len(c), m)),
                stored=s,
            )
            for s in states
        ]
    run = _Episodes(task, scheduler, batch_size, evaluator)
    first = min(r.episodes for r in done)
    for r in done:  # every seed at the same count (an interrupted save may leave one ahead)
        r.objectives, r.measures = r.objectives[:first], r.measures[:first]
    sizes = np.cumsum([0] + [len(r.cells) for r in done])
    solutions = np.concatenate([np.asarray(r.stored.solutions)[r.cells] for r in done])
    for k in range(first, episodes):
        f, m = run(episode_key(seed, k), solutions)
        for s, r in enumerate(done):
            part = slice(sizes[s], sizes[s + 1])
            r.objectives = np.concatenate([r.objectives, f[None, part]])
            r.measures = np.concatenate([r.measures, m[None, part].reshape(1, -1, m.shape[-1])])
        if on_episode is not None:
            on_episode(done)
        if stop is not None and stop.is_set():
            break
    for r in done:  # once, at the end: it writes a (cells, n) archive
        if r.episodes > 0:
            r.corrected = corrected_archive(archive, r.stored, r.cells, *r.mean())
    return done


def corrected_stats(archive, r: SeedEvaluation) -> dict[str, float]:
    """:func:`stats_of` the corrected archive, from the means alone (NumPy, no archive
    written): for progress and partial summaries while episodes are still running."""
    if r.corrected is not None:
        return stats_of(archive, r.corrected)
    mean_f, mean_m = r.mean()
    ok = np.isfinite(mean_f) & np.all(np.isfinite(mean_m), axis=1)
    ok &= mean_f > archive.threshold_min  # a new cell needs f > threshold_min
    cells = np.asarray(archive.index_of(jnp.asarray(mean_m[ok], archive.dtype))) if ok.any() else []
    best: dict[int, float] = {}
    for c, f in zip(np.asarray(cells).tolist(), mean_f[ok].tolist()):
        best[c] = max(best.get(c, -np.inf), f)
    values = np.array(list(best.values()))
    return {
        "qd_score": float(np.sum(values - archive.qd_score_offset)),
        "coverage": len(best) / archive.cells,
        "obj_max": float(values.max()) if len(values) else float("nan"),
        "num_elites": float(len(best)),
    }


def stats_of(archive, state) -> dict[str, float]:
    """QD score, coverage, best objective and elite count of an archive state."""
    s = archive.stats(state)
    return {name: float(getattr(s, name)) for name in STAT_NAMES}


def evaluate_result(result, episodes: int = 10, seed: int = 0, batch_size: int | None = None):
    """:func:`reevaluate` for a :func:`cmamae.run` result: every seed's result archive.

    Returns one :class:`SeedEvaluation` per seed (``.corrected`` the corrected archive's
    state; ``stats_of(result.scheduler.best_archive, r.corrected)`` its stats)."""
    states = [result.archive_state(s) for s in range(result.layout.seeds)]
    return reevaluate(result.task, result.scheduler, states, episodes, seed, batch_size)


# --------------------------------------------------------------------------- run folders
def _folder(run_dir) -> Path:
    return Path(run_dir) / rundir.EVALUATION_DIR


def _seed_path(run_dir, s: int) -> Path:
    return _folder(run_dir) / f"seed{s}.npz"


def corrected_path(run_dir, s: int) -> Path:
    """Where the corrected archive of seed ``s`` is written."""
    return _folder(run_dir) / f"corrected_seed{s}.npz"


def read_summary(run_dir) -> dict | None:
    """``RUN/evaluation/summary.json``, or None when the run has no evaluation."""
    path = _folder(run_dir) / SUMMARY
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def load_seed(run_dir, s: int) -> dict[str, np.ndarray]:
    """The saved re-evaluations of seed ``s``: ``cells``, ``objectives`` ``(episodes, k)``,
    ``measures`` ``(episodes, k, m)`` (no pickle)."""
    path = _seed_path(run_dir, s)
    if not path.is_file():
        raise rundir.NotARunError(
            f"run {str(run_dir)!r} has no re-evaluations of seed {s}; run: cmamae evaluate "
            f"{run_dir}"
        )
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


def _save(run_dir, summary: dict, results: list[SeedEvaluation], archive) -> None:
    for s, r in enumerate(results):
        arrays = dict(cells=r.cells, objectives=r.objectives, measures=r.measures)
        mean_f, mean_m = r.mean() if r.episodes else (np.zeros(0), np.zeros((0, 0)))
        std_f, std_m = r.std() if r.episodes else (np.zeros(0), np.zeros((0, 0)))
        arrays.update(
            mean_objective=mean_f, std_objective=std_f, mean_measures=mean_m, std_measures=std_m
        )
        checkpoint.atomic_write(_seed_path(run_dir, s), lambda f, a=arrays: np.savez(f, **a))
        if r.corrected is not None:
            checkpoint.atomic_write(
                corrected_path(run_dir, s),
                lambda f, c=r.corrected: archive.save_npz(c, f),
            )
    text = json.dumps(summary, indent=2) + "\n"
    checkpoint.atomic_write(_folder(run_dir) / SUMMARY, lambda f: f.write(text.encode()))


def _summary(settings: dict, results: list[SeedEvaluation], archive) -> dict:
    seeds, first_row = [], 0
    for s, r in enumerate(results):
        entry = {"seed": s, "elites": int(len(r.cells)), "episodes": r.episodes}
        entry["first_row"] = first_row  # of the seed's first elite, in the pooled order
        first_row += int(len(r.cells))
        entry["stored"] = stats_of(archive, r.stored)
        if r.episodes > 0:
            entry["corrected"] = corrected_stats(archive, r)
        seeds.append(entry)
    done = min((r.episodes for r in results), default=0)
    out = {"format": FORMAT, **settings, "episodes_done": done, "seeds": seeds}
    if isinstance(settings.get("batch_size"), int):  # rows per compiled batch, as used
        out["rows_per_batch"] = even_batch(first_row, settings["batch_size"])
    return out


def evaluate_run(
    run_dir,
    episodes: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    *,
    force: bool = False,
    quiet: bool = False,
    cluster: str | None = None,
    workers: int | None = None,
) -> dict:
    """``cmamae evaluate RUN``: re-evaluate every elite of every seed's result archive of the
    run folder ``run_dir`` ``episodes`` times (see the module docstring), saving after each
    episode to ``RUN/evaluation/`` (``seed<i>.npz``: per-episode results, means and standard
    deviations; ``corrected_seed<i>.npz``: the corrected archive; ``summary.json``).

    Continues an earlier evaluation with the same ``seed`` and ``batch_size``; another one
    needs ``force`` (which replaces it). Ctrl-C stops after the current episode (what is done
    is saved). Returns the summary (``status`` "finished" or "interrupted").

    Raises:
        ConfigError / NotARunError: bad arguments, not a run, a run without result archives,
            or an existing evaluation with other settings (before anything is written).
    """
    from cmamae import compile_cache
    from cmamae.experiment import progress as progress_lib
    from cmamae.experiment.config import ResolvedRun
    from cmamae.experiment.runner import stop_on_signals

    validate.integer("episodes", episodes, 1, error=ConfigError)
    validate.integer("seed", seed, 0, error=ConfigError)
    if batch_size is not None:
        validate.integer("batch_size", batch_size, 1, error=ConfigError)
    config = rundir.read_config(run_dir)
    resolved = ResolvedRun.from_json(config)
    task, scheduler = resolved.task, resolved.algorithm.scheduler
    missing = [s for s in range(resolved.seeds) if not rundir.archive_path(run_dir, s).is_file()]
    if missing:
        raise rundir.NotARunError(
            f"run {str(run_dir)!r} has no result archive for seed(s) {missing} (archive/): "
            "it has not finished a chunk yet; run or resume it first"
        )
    batch_size = batch_size or scheduler.batch_size
    settings = {"episode_seed": seed, "batch_size": batch_size, "requested_episodes": episodes}
    if task.host_evaluated:
        settings["batch_size"] = "all elites of a seed (host task)"
    states = [rundir.load_archive(run_dir, s)[1] for s in range(resolved.seeds)]
    archive = scheduler.best_archive
    earlier = read_summary(run_dir)
    done = None
    if earlier is not None:
        same = all(earlier.get(k) == settings[k] for k in ("episode_seed", "batch_size"))
        if not same and not force:
            raise ConfigError(
                f"run {str(run_dir)!r} already has an evaluation with episode seed "
                f"{earlier.get('episode_seed')} and batch size {earlier.get('batch_size')}; "
                "pass --force to replace it"
            )
        if same:
            done = _restore(run_dir, states, archive.measure_dim)
    if not done:
        done = None

    compile_cache.enable()
    total = sum(len(_elite_cells(s)) for s in states) * episodes
    evaluator_cm = _evaluator(task, cluster, workers)
    status = "finished"
    with (
        evaluator_cm as evaluator,
        progress_lib.make(total, quiet) as progress,
        stop_on_signals() as stop,
    ):
        t0 = time.perf_counter()
        counted = [sum(r.episodes * len(r.cells) for r in done or [])]

        def on_episode(results):
            evals = sum(r.episodes * len(r.cells) for r in results)
            rate = (evals - counted[0]) / max(time.perf_counter() - t0, 1e-9)
            _save(run_dir, _summary(settings, results, archive), results, archive)
            corrected = [corrected_stats(archive, r) for r in results if r.episodes]
            if corrected:
                mean = {k: float(np.mean([c[k] for c in corrected])) for k in STAT_NAMES}
                progress.update(evals, mean, rate)

        results = reevaluate(
            task,
            scheduler,
            states,
            episodes,
            seed,
            batch_size if not task.host_evaluated else None,
            done=done,
            evaluator=evaluator,
            on_episode=on_episode,
            stop=stop,
        )
        if min(r.episodes for r in results) < episodes:
            status = "interrupted"
            progress.message(
                f"interrupted after {min(r.episodes for r in results)} of {episodes} episodes; "
                f"continue with: cmamae evaluate {run_dir} --episodes {episodes} --seed {seed}"
            )
    summary = _summary(settings, results, archive)
    _save(run_dir, summary, results, archive)
    return {**summary, "status": status}


def _restore(run_dir, states, measure_dim) -> list[SeedEvaluation] | None:
    out = []
    for s, state in enumerate(states):
        try:
            saved = load_seed(run_dir, s)
        except rundir.NotARunError:
            return None
        if not np.array_equal(saved["cells"], _elite_cells(state)):
            return None  # the run went on since: evaluate its new archive from the start
        out.append(
            SeedEvaluation(
                cells=saved["cells"],
                objectives=saved["objectives"],
                measures=saved["measures"].reshape(saved["objectives"].shape + (measure_dim,)),
                stored=state,
            )
        )
    return out


class _NoEvaluator:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _evaluator(task, cluster, workers):
    if not task.host_evaluated:
        if cluster is not None or workers is not None:
            raise ConfigError(
                f"cluster and workers apply to host-evaluated tasks; task {task.name!r} is "
                "evaluated in compiled batches"
            )
        return _NoEvaluator()
    from cmamae.experiment import dask_cluster

    dask_cluster.check_workers(workers)
    return dask_cluster.DaskEvaluator(task, cluster=cluster, workers=workers)


def describe(summary: dict, run_dir) -> list[str]:
    """The evaluation in sentences and an aligned table (stored vs corrected, per seed)."""
    episodes = summary["episodes_done"]
    lines = [
        f"{'Re-evaluated' if summary.get('status') != 'interrupted' else 'Interrupted after'} "
        f"{episodes} episode{'s' * (episodes != 1)} per elite (episode seed "
        f"{summary['episode_seed']}) in {run_dir}.",
        "Stored scores are the single episode each elite was kept for; corrected scores put "
        f"each elite at its mean measures with its mean objective over the {episodes} "
        "re-evaluations (the scoring episode not counted).",
        "",
    ]
    header = (
        "seed",
        "elites",
        "QD score",
        "corrected",
        "coverage",
        "corrected",
        "best",
        "corrected",
    )
    rows = []
    for entry in summary["seeds"]:
        st, co = entry["stored"], entry.get("corrected") or {}
        rows.append(
            (
                str(entry["seed"]),
                str(entry["elites"]),
                f"{st['qd_score']:,.1f}",
                f"{co['qd_score']:,.1f}" if co else "-",
                f"{st['coverage']:.2%}",
                f"{co['coverage']:.2%}" if co else "-",
                f"{st['obj_max']:,.2f}",
                f"{co['obj_max']:,.2f}" if co else "-",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(v.rjust(w) for v, w in zip(r, widths)))
    lines.append("")
    lines.append(f"Wrote {_folder(run_dir)} (summary.json, seed<i>.npz, corrected_seed<i>.npz).")
    return lines
