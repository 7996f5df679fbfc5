"""Drawing one replayed elite: choosing it from an archive (:func:`select_elite`) and the
figures and videos of its episode. Which episode is replayed, and how exactly, is decided above
this layer (:mod:`cmamae.experiment.replay`, ``cmamae replay``).

How an elite is drawn (:func:`renderer_for`) follows the task's replay hook
(:class:`cmamae.tasks.base.ReplayHook`), never the task's internals: a video of its ``qpos``
when the hook has a MuJoCo model (:func:`render_video`, drawn by :mod:`cmamae.viz.video`), its
per-step curves when it has series (:func:`render_series`), else a renderer registered for the
task's name (:func:`register_renderer`: the benchmark functions and the arm draw their
solution), else :func:`render_generic`, the solution vector next to the archive heatmap with
the elite marked. A renderer takes a :class:`ReplayContext` and returns ``{label: written
path}``; it may add JSON-friendly entries to ``ctx.info``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from matplotlib.cm import ScalarMappable

from cmamae.registry import Registry
from cmamae.viz._common import new_figure, save
from cmamae.viz.archive_plot import CMAP, draw_archive_panel

ELITE_EXPECTED = "'best', a cell index (int) or a sequence of measure values"


@dataclasses.dataclass
class ReplayContext:
    """Everything a renderer may use.

    Attributes:
        run_dir, out_dir: the run folder and where to write.
        config: the run's config.json.
        task: the task rebuilt from the config (``tasks.get(task, **task_settings)``).
        archive, state: the result archive of ``seed`` and its contents.
        seed: the run's seed index.
        cell: the elite's cell.
        solution: ``(solution_dim,)`` the elite.
        stored_objective, stored_measures ``(m,)``: as stored in the archive.
        objective, measures ``(m,)``: of the replayed episode.
        names: measure names.
        stem: file-name stem for the written files (``replay_seed0_cell12``).
        info: extra JSON-friendly results of the renderer.
        options: the renderer's options (:func:`render_options_of`).
        trajectory: the replayed episode step by step (the task's replay hook's entries for
            this elite, NumPy, no batch axis), or None.
    """

    run_dir: Path
    out_dir: Path
    config: dict
    task: Any
    archive: Any
    state: Any
    seed: int
    cell: int
    solution: np.ndarray
    stored_objective: float
    stored_measures: np.ndarray
    objective: float
    measures: np.ndarray
    names: list[str]
    stem: str
    info: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    trajectory: dict | None = None


Renderer = Callable[[ReplayContext], dict]
#: Renderers of tasks without a replay hook, by task name.
RENDERERS: Registry[Renderer] = Registry("renderer")


def register_renderer(task_name: str, fn: Renderer | None = None):
    """Register ``fn(ctx) -> {label: path}`` for tasks named ``task_name`` that have no replay
    hook (:data:`RENDERERS`); usable as a decorator. Such renderers take no options."""
    return RENDERERS.register(task_name, fn)


# --------------------------------------------------------------------------- choosing the elite
def _nearest_occupied(archive, occ: np.ndarray, measures: np.ndarray) -> int:
    """The occupied cell whose centre (grid) or centroid (CVT) is nearest to ``measures``,
    distances scaled by the measure ranges."""
    idx = np.flatnonzero(occ)
    if hasattr(archive, "centroids"):
        centres = np.asarray(archive.centroids, float)[idx]
    else:
        b = archive.boundaries
        coords = np.unravel_index(idx, archive.dims)
        centres = np.stack([(b[i][c] + b[i][c + 1]) / 2 for i, c in enumerate(coords)], axis=1)
    width = np.array([hi - lo for lo, hi in archive.ranges], float)
    dist = np.sum(((centres - measures) / width) ** 2, axis=1)
    return int(idx[np.argmin(dist)])


def select_elite(archive, state, elite="best") -> int:
    """The cell of the elite named by ``elite``: ``"best"`` (highest objective), a cell
    index, or measure values ``(m,)`` (the cell ``archive.index_of`` gives them).

    Raises:
        ValueError: naming ``elite``, for a malformed spec, a cell out of range, an empty
            cell (with the nearest occupied cell for measures), or an empty archive.
    """
    occ = np.asarray(state.occupied, bool)
    cells = occ.size
    if not occ.any():
        raise ValueError(f"elite {elite!r}: the archive is empty, there is no elite to replay")
    if isinstance(elite, str):
        text = elite.strip()
        if text.lower() == "best":
            objectives = np.where(occ, np.asarray(state.objectives, float), -np.inf)
            return int(np.argmax(objectives))
        try:
            elite = int(text)
        except ValueError:
            try:
                elite = [float(v) for v in text.split(",")]
            except ValueError:
                raise ValueError(f"elite must be {ELITE_EXPECTED}, got {elite!r}") from None
    if isinstance(elite, (int, np.integer)) and not isinstance(elite, (bool, np.bool_)):
        cell = int(elite)
        if not 0 <= cell < cells:
            raise ValueError(f"elite must be a cell index in [0, {cells}), got {cell}")
        if not occ[cell]:
            raise ValueError(f"elite: cell {cell} is empty (no elite to replay)")
        return cell
    if isinstance(elite, (Sequence, np.ndarray)) and not isinstance(elite, (str, bytes)):
        try:
            measures = np.asarray(elite, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"elite must be {ELITE_EXPECTED}, got {elite!r}") from None
        m = archive.measure_dim
        if measures.shape != (m,):
            raise ValueError(
                f"elite: expected {m} measure value(s), got {list(np.ravel(measures))!r}"
            )
        if not np.all(np.isfinite(measures)):
            raise ValueError(f"elite: measure values must be finite, got {measures.tolist()!r}")
        cell = int(np.asarray(archive.index_of(jnp.asarray(measures[None])))[0])
        if not occ[cell]:
            near = _nearest_occupied(archive, occ, measures)
            near_m = np.asarray(state.measures, float)[near].round(6).tolist()
            raise ValueError(
                f"elite: no elite at measures {measures.tolist()!r} (cell {cell} is empty); "
                f"the nearest occupied cell is {near} (elite measures {near_m})"
            )
        return cell
    raise ValueError(f"elite must be {ELITE_EXPECTED}, got {elite!r}")


# --------------------------------------------------------------------------- renderers
def _archive_panel(ctx: ReplayContext, fig, ax) -> None:
    norm = draw_archive_panel(
        ax, ctx.archive, ctx.state, ctx.names, cell=ctx.cell, point=ctx.stored_measures
    )
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label="objective")


def _solution_panel(ax, solution: np.ndarray, ylabel: str = "value") -> None:
    n = solution.size
    if n <= 200:
        ax.stem(np.arange(n), solution, basefmt="k-")
    else:
        ax.plot(np.arange(n), solution, linewidth=0.8)
    ax.set_xlabel("solution index")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _title(ctx: ReplayContext) -> str:
    meas = ", ".join(f"{n}={v:.4g}" for n, v in zip(ctx.names, ctx.measures))
    return (
        f"{ctx.config.get('task', '?')} · {ctx.config.get('algo', '?')} · seed {ctx.seed} · "
        f"cell {ctx.cell}\nobjective {ctx.objective:.6g} (stored {ctx.stored_objective:.6g})"
        + (f" · {meas}" if meas else "")
    )


def _two_panels(ctx: ReplayContext):
    fig = new_figure(12.0, 4.8)
    ax0, ax1 = fig.subplots(1, 2)
    fig.suptitle(_title(ctx), fontsize="medium")
    return fig, ax0, ax1


def render_generic(ctx: ReplayContext) -> dict[str, Path]:
    """The solution vector (stems) and the archive with the elite marked."""
    fig, ax0, ax1 = _two_panels(ctx)
    _solution_panel(ax0, ctx.solution)
    _archive_panel(ctx, fig, ax1)
    return {"figure": save(fig, ctx.out_dir / f"{ctx.stem}.png")}


def render_linear_projection(ctx: ReplayContext) -> dict[str, Path]:
    """Linear-projection benchmarks: the solution with the ±5.12 box and the shifted optimum
    2.048 drawn, and the archive with the elite marked."""
    from cmamae.tasks.functions import BOUND, SHIFT

    fig, ax0, ax1 = _two_panels(ctx)
    _solution_panel(ax0, ctx.solution, "x_i")
    for y, style, label in ((BOUND, ":", "±5.12"), (-BOUND, ":", None), (SHIFT, "--", "optimum")):
        ax0.axhline(y, color="tab:red", linestyle=style, linewidth=1, label=label)
    ax0.legend(fontsize="small", loc="lower right")
    _archive_panel(ctx, fig, ax1)
    ctx.info["clipped_components"] = int(np.sum(np.abs(ctx.solution) > BOUND))
    return {"figure": save(fig, ctx.out_dir / f"{ctx.stem}.png")}


def arm_joints(theta: np.ndarray, link_lengths=None) -> np.ndarray:
    """Joint positions ``(n + 1, 2)`` of the planar arm from the angles ``(n,)`` (base at
    the origin, the last row the end effector), as ``tasks.functions.arm_measures``."""
    cum = np.cumsum(np.asarray(theta, float))
    lengths = np.ones_like(cum) if link_lengths is None else np.asarray(link_lengths, float)
    steps = lengths[:, None] * np.stack([np.cos(cum), np.sin(cum)], axis=1)
    return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def render_arm(ctx: ReplayContext) -> dict[str, Path]:
    """The planar arm's links from its joint angles, end effector starred; and the archive
    (whose measures are the end effector's position)."""
    fig, ax0, ax1 = _two_panels(ctx)
    joints = arm_joints(ctx.solution)
    ax0.plot(joints[:, 0], joints[:, 1], "-", color="tab:blue", linewidth=1.5)
    ax0.plot(joints[:-1, 0], joints[:-1, 1], "o", color="tab:blue", markersize=3)
    ax0.plot([0], [0], "s", color="k", markersize=7, label="base")
    ax0.plot(
        joints[-1:, 0],
        joints[-1:, 1],
        "*",
        color="red",
        markersize=14,
        markeredgecolor="k",
        label="end effector",
    )
    reach = float(ctx.solution.size)
    ax0.set_xlim(-reach, reach)
    ax0.set_ylim(-reach, reach)
    ax0.set_aspect("equal")
    ax0.set_xlabel("x")
    ax0.set_ylabel("y")
    ax0.grid(alpha=0.3)
    ax0.legend(fontsize="small")
    _archive_panel(ctx, fig, ax1)
    ax1.set_aspect("equal")
    ctx.info["end_effector"] = joints[-1].tolist()
    return {"figure": save(fig, ctx.out_dir / f"{ctx.stem}.png")}


def render_series(ctx: ReplayContext) -> dict[str, Path]:
    """The task's per-step curves (its replay hook's ``series``) over the replayed episode,
    and the archive when the task has measures."""
    hook, traj = ctx.task.replay, ctx.trajectory
    steps = int(traj.get("steps", len(next(iter(traj.values())))))
    time_s = np.arange(steps) * hook.step_seconds
    with_archive = ctx.archive is not None and ctx.archive.measure_dim > 0
    rows = len(hook.series)
    fig = new_figure(12.0 if with_archive else 7.0, 3.0 * rows)
    grid = fig.subplots(rows, 2 if with_archive else 1, squeeze=False)
    for (entry, label), ax in zip(hook.series, grid[:, 0]):
        ax.plot(time_s, np.asarray(traj[entry])[:steps])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    grid[-1, 0].set_xlabel("time (s)")
    if with_archive:
        gs = grid[0, 1].get_subplotspec().get_gridspec()
        for ax in grid[:, 1]:
            ax.remove()
        _archive_panel(ctx, fig, fig.add_subplot(gs[:, 1]))
    text = _title(ctx)
    if "reward" in traj:
        ret = float(np.sum(np.asarray(traj["reward"])[:steps]))
        ctx.info["episode_return"] = ret
        text += f"\nepisode shown: return {ret:.5g}"
    fig.suptitle(text, fontsize="medium")
    return {"figure": save(fig, ctx.out_dir / f"{ctx.stem}.png")}


def check_video_options(options: dict) -> None:
    """Raise ValueError for bad video options (before any evaluation)."""
    from cmamae.viz import video

    video.check_options(
        options.get("frames"),
        options.get("fps"),
        options.get("width"),
        options.get("height"),
        options.get("format", "auto"),
    )


VIDEO_OPTIONS = ("frames", "fps", "width", "height", "format")


def render_video(ctx: ReplayContext) -> dict[str, Path]:
    """A video of the replayed episode (MP4 when ffmpeg is found, else GIF): the task's
    ``start_qpos``, then its ``qpos`` after each executed step, drawn by MuJoCo's offscreen
    renderer with the task's tracking camera (:func:`cmamae.viz.video.render_video`).

    Options (``ctx.options``): ``frames`` (most frames, default all), ``fps`` (playback rate,
    default real time, at most 50 frames/s by skipping steps), ``width``/``height`` (pixels,
    default 640 × 480 for MP4, 320 × 240 for GIF), ``format`` (``auto``, ``mp4``, ``gif``).
    """
    from cmamae.viz import video

    hook, traj, opts = ctx.task.replay, ctx.trajectory, ctx.options
    check_video_options(opts)
    fmt = opts.get("format", "auto")
    if fmt == "auto":
        fmt = "mp4" if video.ffmpeg_exe() else "gif"
    width, height = (640, 480) if fmt == "mp4" else (320, 240)
    width, height = opts.get("width", width), opts.get("height", height)
    steps = int(traj["steps"])
    qpos = np.concatenate([np.asarray(traj["start_qpos"])[None], np.asarray(traj["qpos"])[:steps]])
    idx, fps = video.frame_plan(len(qpos), hook.step_seconds, opts.get("frames"), opts.get("fps"))
    out = video.render_video(
        hook.mujoco_model(),
        qpos[idx],
        ctx.out_dir / ctx.stem,
        fps=fps,
        width=width,
        height=height,
        fmt=fmt,
        camera=dict(hook.camera),
    )
    ctx.info.update(
        episode_steps=steps,
        video_frames=out["frames"],
        video_fps=out["fps"],
        video_seconds=out["frames"] / out["fps"],
        video_steps_per_frame=int(idx[1] - idx[0]) if len(idx) > 1 else 1,
        video_format=out["format"],
        video_size=[out["width"], out["height"]],
        gl_backend=out["gl_backend"],
    )
    return {"video": out["path"]}


for _name in ("sphere", "rastrigin", "plateau"):
    register_renderer(_name, render_linear_projection)
register_renderer("arm", render_arm)


def renderer_for(task) -> Renderer:
    """How replay draws an elite of ``task``: a video when its replay hook has a MuJoCo
    model, its per-step curves when it has series, else the renderer registered for its
    name, else :func:`render_generic`."""
    hook = getattr(task, "replay", None)
    if hook is not None and hook.mujoco_model is not None:
        return render_video
    if hook is not None and hook.series:
        return render_series
    return RENDERERS.get(task.name) if task.name in RENDERERS else render_generic


def render_options_of(renderer: Renderer) -> tuple[str, ...]:
    """The option names ``renderer`` takes (only the video takes any)."""
    return VIDEO_OPTIONS if renderer is render_video else ()


def check_render_options(renderer: Renderer, options: dict) -> None:
    """Raise ValueError for options ``renderer`` does not take, or bad video options."""
    unknown = sorted(set(options) - set(render_options_of(renderer)))
    if unknown:
        raise ValueError(
            f"render options {unknown} are not used here (this task's replay takes "
            f"{sorted(render_options_of(renderer))})"
        )
    if renderer is render_video:
        check_video_options(options)


def jsonable(x):
    """``x`` with NumPy arrays and scalars turned into lists and Python numbers."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    return x
