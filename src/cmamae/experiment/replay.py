"""``cmamae replay``: one elite of a run folder, the very episode that scored it, drawn.

By default the replayed episode is the elite's **scoring** episode, re-run from its provenance
(:mod:`cmamae.provenance`: the iteration's evaluation key, the elite's row and batch size, the
run's seed and device layout), and the replay says whether it reproduced the stored objective
and measures bit for bit, and if not by how much and why that is likely (other versions or
another machine than the run recorded in ``provenance.json``). After ``cmamae evaluate``, the
replay can show one of the re-evaluation episodes instead (``episode="median"`` or an episode
number), likewise reproduced from its key, row and batch size. Run folders written before
provenance was recorded replay a fresh episode (key 0) and say so.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import provenance, rundir, validate
from cmamae.compiled_loop import evaluate_fn, seed_keys
from cmamae.experiment import evaluation
from cmamae.experiment.config import ConfigError, ResolvedRun
from cmamae.viz import replay as draw
from cmamae.viz._common import measure_names

EPISODE_EXPECTED = "'stored', 'median' or an episode number (0 = the first re-evaluation)"


@dataclasses.dataclass
class Episode:
    """Which episode is replayed and how to run it again.

    Attributes:
        kind: ``"stored"`` (the scoring episode), ``"re-evaluation"`` or ``"fresh"``.
        description: in words, for the user.
        keys: the evaluation keys ``(seeds,)`` of the batch (one per seed of the layout).
        row: the elite's row in the batch; batch_size: the batch's size.
        layout: the layout the batch runs in; seed: the elite's seed index in it.
        expected: ``(objective, measures)`` the episode should give (None for "fresh").
        index: the re-evaluation's number (None unless ``kind`` is "re-evaluation").
        environment: the environment recorded with the scoring episode (None: none was);
            where it differs from this machine's, that explains a gap.
    """

    kind: str
    description: str
    keys: jax.Array
    row: int
    batch_size: int
    layout: provenance.Layout
    seed: int
    expected: tuple[float, np.ndarray] | None
    index: int | None = None
    environment: dict | None = None


def parse_episode(episode) -> str | int | None:
    """``None``, ``"stored"``, ``"median"`` or an episode number >= 0 (from CLI text too)."""
    if episode is None or episode in ("stored", "median"):
        return episode
    if isinstance(episode, str) and episode.strip().lstrip("-").isdigit():
        episode = int(episode)
    return validate.integer("episode", episode, 0, expected=EPISODE_EXPECTED, error=ConfigError)


def _stored_episode(run_dir, resolved, state, seed, cell) -> Episode | str:
    """The scoring episode, or the reason it cannot be replayed."""
    it, row = int(state.eval_iteration[cell]), int(state.eval_row[cell])
    record = rundir.read_provenance(run_dir)
    segment = rundir.provenance_segment(record, it)
    if it < 0 or segment is None:
        return (
            "this run folder was written before cmamae recorded where each elite was scored "
            "(its iteration, row and device layout), so the scoring episode cannot be re-run"
        )
    scheduler = resolved.algorithm.scheduler
    sc = provenance.scoring(scheduler, it, row)
    layout = provenance.Layout.from_json(segment["layout"])
    _, run_keys = seed_keys(jax.random.key(resolved.config.seed), resolved.seeds)
    keys = jnp.stack([provenance.evaluation_key(k, sc) for k in run_keys])
    phase = "gradient pre-phase batch" if sc.phase == "pre-phase" else "batch"
    return Episode(
        kind="stored",
        description=(
            f"the scoring episode (iteration {sc.iteration}, row {sc.row} of its "
            f"{sc.batch_size}-solution {phase}; {layout.describe()})"
        ),
        keys=keys,
        row=sc.row,
        batch_size=sc.batch_size,
        layout=layout,
        seed=seed,
        expected=(
            np.asarray(state.objectives)[cell].item(),
            np.asarray(state.measures, np.float64)[cell],
        ),
        environment=segment.get("environment"),
    )


def _reevaluation_episode(run_dir, resolved, seed, cell, which) -> Episode:
    summary = evaluation.read_summary(run_dir)
    if summary is None:
        raise ConfigError(
            f"episode {which!r}: run {str(run_dir)!r} has no re-evaluations; run cmamae "
            f"evaluate {run_dir} first (or replay the stored episode)"
        )
    saved = evaluation.load_seed(run_dir, seed)
    j = int(np.searchsorted(saved["cells"], cell))
    if j >= len(saved["cells"]) or saved["cells"][j] != cell:
        raise ConfigError(f"cell {cell} of seed {seed} was not re-evaluated (the run went on?)")
    count = saved["objectives"].shape[0]
    if which == "median":
        k = int(np.argsort(saved["objectives"][:, j], kind="stable")[(count - 1) // 2])
        label = f"the median of {count} re-evaluations (episode {k})"
    else:
        if not 0 <= which < count:
            raise ConfigError(
                f"episode must be in [0, {count}) (the re-evaluations done), got {which}"
            )
        k, label = which, f"re-evaluation episode {which} of {count}"
    entries = summary["seeds"]
    g = entries[seed]["first_row"] + j  # the elite's place in the pooled order of all seeds
    total = sum(e["elites"] for e in entries)
    host = resolved.task.host_evaluated
    size = total if host else int(summary["rows_per_batch"])
    return Episode(
        kind="re-evaluation",
        description=f"{label}, evaluation seed {summary['episode_seed']}",
        keys=evaluation.episode_key(int(summary["episode_seed"]), k)[None],
        row=g % size,
        batch_size=size,
        layout=provenance.Layout(seeds=1, host=host),
        seed=0,
        expected=(float(saved["objectives"][k, j]), saved["measures"][k, j]),
        index=k,
    )


def _run_episode(task, scheduler, ep: Episode, solution: np.ndarray, trajectory: bool):
    """``(objective, measures, trajectory or None)`` of ``solution`` run as ``ep`` says."""
    mesh = None if ep.layout.host else ep.layout.mesh(scheduler)
    placed = [(ep.seed, ep.row, solution)]
    evaluate = evaluate_fn(scheduler, task)
    ((f, m),) = provenance.evaluate_at_rows(
        task, evaluate, ep.keys, ep.batch_size, placed, ep.layout, mesh
    )
    traj = None
    if trajectory:
        batch = np.zeros((ep.layout.seeds, ep.batch_size, solution.size), solution.dtype)
        batch[ep.seed, ep.row] = solution
        full = provenance.evaluate_like_run(task.replay.trajectory, ep.keys, batch, ep.layout, mesh)
        traj = {k: np.asarray(v)[ep.seed, ep.row] for k, v in full.items()}
    return f, m, traj


def _verdict(ep: Episode, objective: float, measures: np.ndarray, dtype) -> dict:
    """Whether the replay reproduced what the episode gave, in numbers and in words."""
    f0, m0 = ep.expected
    same = bool(
        np.asarray(objective, dtype) == np.asarray(f0, dtype)
        and np.array_equal(np.asarray(measures, dtype), np.asarray(m0, dtype))
    )
    gap_f = float(objective - f0)
    gap_m = float(np.max(np.abs(np.asarray(measures) - np.asarray(m0)), initial=0.0))
    ulps = provenance.rounding_ulps(objective, measures, f0, np.asarray(m0, dtype))
    out = {
        "reproduced": same,
        "within_rounding": same or ulps <= provenance.ROUNDING_ULPS,
        "objective_gap": gap_f,
        "measures_gap": gap_m,
    }
    if same:
        out["explanation"] = "reproduced bit for bit"
        return out
    differences = provenance.environment_differences(ep.environment or {})
    rel = abs(gap_f) / max(abs(f0), 1e-12)
    if out["within_rounding"] and not differences:
        out["explanation"] = (
            f"reproduced up to float rounding (at most {ulps:.0f} units in the last place): "
            "the run computed this evaluation inside its compiled loop, where XLA may order "
            "a sum differently than in a standalone evaluation"
        )
        return out
    if differences:
        cause = "likely cause: the run was scored elsewhere: " + "; ".join(differences)
    elif ep.environment is None:
        cause = "no environment was recorded for this episode, so the cause cannot be named"
    else:
        cause = (
            "the versions and machine are the recorded ones, so the likely cause is float "
            "rounding: XLA compiled the run's evaluation inside its fused loop, where it may "
            "order a sum differently than a standalone evaluation (a few ulps on the benchmark "
            "functions)"
        )
        if rel > 1e-5:
            cause += ", amplified by the episode's dynamics"
    out["explanation"] = (
        f"not reproduced: objective off by {gap_f:+.6g} ({rel:.2%}), measures by up to "
        f"{gap_m:.4g}; {cause}"
    )
    return out


def replay(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    elite="best",
    seed: int = 0,
    episode=None,
    render_options: dict | None = None,
) -> dict:
    """Replay one elite of seed ``seed``'s result archive and draw it.

    Args:
        run_dir: the run folder.
        out_dir: where to write (default: ``RUN/replay``).
        elite: ``"best"``, a cell index, or measure values ``(m,)``
            (:func:`cmamae.viz.replay.select_elite`).
        seed: which seed's archive.
        episode: ``None`` (the scoring episode when the run recorded provenance, else a fresh
            one), ``"stored"`` (the scoring episode; an error without provenance),
            ``"median"`` or an episode number (a re-evaluation episode of ``cmamae
            evaluate``).
        render_options: options of the task's drawing (e.g. ``{"fps": 10}`` for a video).

    Writes ``replay_seed<seed>_cell<cell>.{png|mp4|gif}`` and ``.json`` (the record returned,
    ``files`` mapping labels to paths).

    Raises:
        ConfigError / NotARunError / ValueError: bad arguments, naming them, before anything
            is evaluated or written.
    """
    config = rundir.read_config(run_dir)
    resolved = ResolvedRun.from_json(config)
    task, scheduler = resolved.task, resolved.algorithm.scheduler
    seed = validate.integer("seed", seed, 0, resolved.seeds - 1, error=ConfigError)
    episode = parse_episode(episode)
    archive, state = rundir.load_archive(run_dir, seed)
    cell = draw.select_elite(archive, state, elite)
    renderer = draw.renderer_for(task)
    options = dict(render_options or {})
    draw.check_render_options(renderer, options)
    if task.solution_dim != archive.solution_dim:
        raise ConfigError(
            f"run {os.fspath(run_dir)!r}: task {task.name!r} rebuilt from the config has "
            f"solution_dim {task.solution_dim}, but the archive holds {archive.solution_dim}"
        )

    note = None
    if episode in (None, "stored"):
        found = _stored_episode(run_dir, resolved, state, int(seed), cell)
        if isinstance(found, str):
            if episode == "stored":
                raise ConfigError(f"episode 'stored': {found}")
            note = found
            found = Episode(
                kind="fresh",
                description="a fresh episode (key 0): " + found,
                keys=jax.random.key(0)[None],
                row=0,
                batch_size=1,
                layout=provenance.Layout(seeds=1, host=task.host_evaluated),
                seed=0,
                expected=None,
            )
        ep = found
    else:
        ep = _reevaluation_episode(run_dir, resolved, int(seed), cell, episode)

    solution = np.asarray(state.solutions)[cell]
    want_traj = task.replay is not None and not ep.layout.host
    objective, measures, traj = _run_episode(task, scheduler, ep, solution, want_traj)
    dtype = np.asarray(state.objectives).dtype
    verdict = _verdict(ep, objective, measures, dtype) if ep.expected is not None else {}
    if traj is not None and "objective" in traj:
        # the recorded run of the same episode (what is drawn) against the evaluation
        verdict["drawn_episode_objective"] = float(traj["objective"])

    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "replay"
    out.mkdir(parents=True, exist_ok=True)
    stored_objective = np.asarray(state.objectives)[cell].item()
    stored_measures = np.asarray(state.measures, np.float64)[cell]
    ctx = draw.ReplayContext(
        run_dir=Path(run_dir),
        out_dir=out,
        config=config,
        task=task,
        archive=archive,
        state=state,
        seed=int(seed),
        cell=cell,
        solution=np.asarray(solution, float),
        stored_objective=stored_objective,
        stored_measures=stored_measures,
        objective=objective,
        measures=measures,
        names=measure_names(config, archive.measure_dim),
        stem=f"replay_seed{int(seed)}_cell{cell}",
        options=options,
        trajectory=traj,
    )
    files = dict(renderer(ctx))
    json_path = out / f"{ctx.stem}.json"
    files["json"] = json_path
    record = {
        "run": os.fspath(run_dir),
        "name": config.get("name"),
        "task": config.get("task"),
        "algo": config.get("algo"),
        "seed": int(seed),
        "elite": draw.jsonable(elite),
        "cell": cell,
        "measure_names": ctx.names,
        "stored": {"objective": stored_objective, "measures": stored_measures.tolist()},
        "episode": {
            "kind": ep.kind,
            "description": ep.description,
            "index": ep.index,
            "row": ep.row,
            "batch_size": ep.batch_size,
            "layout": ep.layout.to_json(),
        },
        "replayed": {"objective": objective, "measures": measures.tolist()},
        **(
            {
                "expected": {
                    "objective": ep.expected[0],
                    "measures": list(map(float, ep.expected[1])),
                }
            }
            if ep.expected is not None
            else {}
        ),
        **verdict,
        "reevaluations": _elite_reevaluations(run_dir, int(seed), cell),
        "note": note,
        "render": draw.jsonable(ctx.info),
        "files": {k: os.fspath(v) for k, v in files.items()},
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return {**record, "files": files}


def _elite_reevaluations(run_dir, seed: int, cell: int) -> dict | None:
    """Mean and standard deviation of the elite's re-evaluations, if there are any."""
    if evaluation.read_summary(run_dir) is None:
        return None
    try:
        saved = evaluation.load_seed(run_dir, seed)
    except rundir.NotARunError:
        return None
    j = np.flatnonzero(saved["cells"] == cell)
    if len(j) == 0 or saved["objectives"].shape[0] == 0:
        return None
    f, m = saved["objectives"][:, j[0]], saved["measures"][:, j[0]]
    ddof = 1 if len(f) > 1 else 0
    return {
        "episodes": int(len(f)),
        "objective_mean": float(f.mean()),
        "objective_std": float(f.std(ddof=ddof)),
        "measures_mean": m.mean(axis=0).tolist(),
        "measures_std": m.std(axis=0, ddof=ddof).tolist(),
    }


def describe(record: dict) -> list[str]:
    """The replay in sentences, for the command line."""
    names = record["measure_names"]

    def meas(values):
        return ", ".join(f"{n} {v:.4g}" for n, v in zip(names, values)) or "no measures"

    lines = [
        f"Replayed seed {record['seed']}, cell {record['cell']} ({record['task']}, "
        f"{record['algo']}).",
        f"Episode: {record['episode']['description']}.",
        f"Stored:   objective {record['stored']['objective']:.6g}; "
        f"{meas(record['stored']['measures'])}.",
        f"Replayed: objective {record['replayed']['objective']:.6g}; "
        f"{meas(record['replayed']['measures'])}.",
    ]
    if "explanation" in record:
        target = (
            "the stored scores"
            if record["episode"]["kind"] == "stored"
            else ("that episode's saved scores")
        )
        lines.append(f"Compared with {target}: {record['explanation']}.")
    drawn = record.get("drawn_episode_objective")
    if drawn is not None and drawn != record["replayed"]["objective"]:
        lines.append(
            f"The drawn episode (re-run while recording states) returned {drawn:.6g}, "
            f"{drawn - record['replayed']['objective']:+.3g} from the replayed objective."
        )
    re = record.get("reevaluations")
    if re:
        lines.append(
            f"Over {re['episodes']} re-evaluations: objective {re['objective_mean']:.6g} ± "
            f"{re['objective_std']:.3g} (mean ± standard deviation)."
        )
    render = record.get("render") or {}
    for label, path in record["files"].items():
        extra = ""
        if label == "video":
            extra = (
                f" ({render.get('video_seconds', 0):.2f} s, {render.get('video_frames')} "
                f"frames, {render.get('episode_steps')} steps)"
            )
        lines.append(f"Wrote {label}: {path}{extra}")
    return lines
