"""Replay one elite of a run: pick it from the result archive, rebuild the task from the run's
config, re-evaluate it, and draw it with the task's renderer.

Renderers are looked up by task name in :data:`RENDERERS` (``register_renderer`` adds one);
tasks without one get :func:`render_generic`, the solution vector next to the archive heatmap
with the elite marked. The locomotion tasks get a video of the elite's episode
(:func:`render_locomotion`, drawn by :mod:`cmamae.viz.video`). A renderer takes a
:class:`ReplayContext` and returns ``{label: written path}``; it may add JSON-friendly entries to
``ctx.info``, which land in the replay's JSON under ``"render"``. Optional attributes of a
renderer: ``options`` (the option names it takes in ``ctx.options``), ``check_options(options)``
(raises ValueError before any evaluation) and ``evaluate(task, solution, key) -> (objective,
measures, episode)``, used instead of ``task.evaluate`` for the re-evaluation (``episode`` lands
in ``ctx.episode``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.cm import ScalarMappable

from cmamae import rundir
from cmamae import tasks as tasks_lib
from cmamae.viz._common import measure_names, new_figure, save
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
        objective, measures ``(m,)``: re-evaluated now with ``key``.
        key: the PRNG key of the re-evaluation.
        names: measure names.
        stem: file-name stem for the written files (``replay_seed0_cell12``).
        info: extra JSON-friendly results of the renderer.
        options: the renderer's options (names in its ``options`` attribute).
        episode: what the renderer's ``evaluate`` returned besides the numbers, or None.
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
    key: jax.Array
    names: list[str]
    stem: str
    info: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    episode: Any = None


Renderer = Callable[[ReplayContext], dict]
RENDERERS: dict[str, Renderer] = {}


def register_renderer(task_name: str, fn: Renderer | None = None):
    """Register ``fn(ctx) -> {label: path}`` for ``task_name``; usable as a decorator. The
    option names ``fn`` accepts (``ctx.options``) are its ``options`` attribute, if any."""

    def deco(f: Renderer) -> Renderer:
        RENDERERS[task_name] = f
        return f

    return deco if fn is None else deco(fn)


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
    from cmamae.tasks.benchmarks import BOUND, SHIFT

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
    the origin, the last row the end effector), as ``tasks.benchmarks.arm_measures``."""
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


def pendulum_trajectory(task, solution: np.ndarray, key: jax.Array) -> dict[str, np.ndarray]:
    """The first episode ``task.evaluate`` averages over for ``key``: per step ``(T,)``
    time, angle θ (wrapped to [−π, π), 0 upright), θ̇, torque and reward."""
    from cmamae.tasks import pendulum

    kw = dict(task.evaluate.kwargs)
    policy, num_steps = kw["policy"], kw["num_steps"]
    episode_key = jax.random.split(key, kw["num_episodes"])[0]
    params = policy.unflatten(jnp.asarray(solution, policy.dtype))

    def body(state, _):
        action = policy.apply(params, pendulum.observe(state))
        nxt, reward, torque = pendulum.step(state, action)
        return nxt, jnp.stack([state[0], state[1], torque, reward])

    _, rows = jax.lax.scan(body, pendulum.reset(episode_key), None, length=num_steps)
    rows = np.asarray(rows, float)
    return {
        "time": np.arange(num_steps) * pendulum.DT,
        "angle": np.asarray(pendulum.angle_normalize(rows[:, 0])),
        "angular_velocity": rows[:, 1],
        "torque": rows[:, 2],
        "reward": rows[:, 3],
    }


def render_pendulum(ctx: ReplayContext) -> dict[str, Path]:
    """Angle and torque over the first re-evaluated episode (and the archive, if the task has
    measures)."""
    evaluate = ctx.task.evaluate
    if not (hasattr(evaluate, "kwargs") and "policy" in dict(evaluate.kwargs)):
        return render_generic(ctx)
    traj = pendulum_trajectory(ctx.task, ctx.solution, ctx.key)
    with_archive = ctx.archive is not None and ctx.archive.measure_dim > 0
    fig = new_figure(12.0 if with_archive else 7.0, 6.0)
    grid = fig.subplots(2, 2 if with_archive else 1, squeeze=False)
    ax_a, ax_u = grid[0, 0], grid[1, 0]
    ax_a.plot(traj["time"], traj["angle"], color="tab:blue")
    ax_a.axhline(0.0, color="k", linewidth=0.8, linestyle="--")
    ax_a.set_ylabel("angle θ (rad, 0 = up)")
    ax_u.plot(traj["time"], traj["torque"], color="tab:orange")
    ax_u.set_ylabel("torque")
    ax_u.set_xlabel("time (s)")
    for ax in (ax_a, ax_u):
        ax.grid(alpha=0.3)
    if with_archive:
        gs = grid[0, 1].get_subplotspec().get_gridspec()
        grid[0, 1].remove()
        grid[1, 1].remove()
        _archive_panel(ctx, fig, fig.add_subplot(gs[:, 1]))
    ret = float(traj["reward"].sum())
    fig.suptitle(_title(ctx) + f"\nepisode shown: return {ret:.5g}", fontsize="medium")
    ctx.info["episode_return"] = ret
    return {"figure": save(fig, ctx.out_dir / f"{ctx.stem}.png")}


@functools.lru_cache(maxsize=8)
def _trajectory_fn(robot, adaptation, policy, episode_length: int, noise_scale: float):
    """``rollout.trajectory`` compiled once per task (repeated replays reuse it)."""
    from cmamae.tasks.locomotion import rollout

    kw = dict(robot=robot, adaptation=adaptation, policy=policy)
    kw.update(episode_length=episode_length, noise_scale=noise_scale)
    return jax.jit(functools.partial(rollout.trajectory, **kw))


def locomotion_episode(task, solution: np.ndarray, key: jax.Array):
    """Re-evaluate one locomotion policy with MJX, keeping its states: ``(objective,
    measures (feet,), episode)``, the same numbers as ``task.evaluate`` for ``key``;
    ``episode`` holds ``qpos`` ``(steps + 1, nq)`` (the reset state, then one per executed
    step), ``steps`` and ``dt`` (s per policy step)."""
    from cmamae.tasks.locomotion import rollout
    from cmamae.tasks.locomotion.model import load_model

    kw = dict(task.evaluate.kwargs)
    robot, adaptation = kw["robot"], kw["adaptation"]
    fn = _trajectory_fn(robot, adaptation, kw["policy"], kw["episode_length"], kw["noise_scale"])
    traj = fn(jnp.asarray(solution, kw["policy"].dtype)[None], key)
    steps = int(np.asarray(traj["steps"])[0])
    alive = np.asarray(traj["alive"])[0]
    contacts = np.asarray(traj["contacts"])[0]
    measures = np.sum(contacts & alive[:, None], axis=0) / max(steps, 1)
    start = rollout.start_data(robot, adaptation, key, kw["noise_scale"]).qpos
    qpos = np.concatenate([np.asarray(start)[None], np.asarray(traj["qpos"])[0, :steps]])
    model = load_model(robot, adaptation)
    episode = dict(qpos=qpos, steps=steps, dt=float(model.opt.timestep) * robot.frame_skip)
    return float(np.asarray(traj["objective"])[0]), measures.astype(np.float32), episode


def _check_video_options(options: dict) -> None:
    from cmamae.viz import video

    video.check_options(
        options.get("frames"),
        options.get("fps"),
        options.get("width"),
        options.get("height"),
        options.get("format", "auto"),
    )


def render_locomotion(ctx: ReplayContext) -> dict[str, Path]:
    """A video of the elite's episode (MP4 when ffmpeg is found, else GIF).

    The states are MJX's own from the re-evaluation (:func:`locomotion_episode`, so the video
    shows the episode whose objective and measures the replay reports): the reset state, then
    one frame per executed policy step until the episode ends. Drawn by MuJoCo's offscreen
    renderer with a camera tracking the robot (:func:`cmamae.viz.video.render_video`).

    Options (``ctx.options``): ``frames`` (most frames, default all), ``fps`` (playback rate,
    default real time, at most 50 frames/s by skipping steps), ``width``/``height`` (pixels,
    default 640 × 480 for MP4, 320 × 240 for GIF), ``format`` (``auto``, ``mp4``, ``gif``).
    """
    from cmamae.tasks.locomotion.model import load_model
    from cmamae.viz import video

    opts = ctx.options
    _check_video_options(opts)
    fmt = opts.get("format", "auto")
    if fmt == "auto":
        fmt = "mp4" if video.ffmpeg_exe() else "gif"
    width, height = (640, 480) if fmt == "mp4" else (320, 240)
    width, height = opts.get("width", width), opts.get("height", height)
    episode = ctx.episode
    if episode is None:  # a caller that did not re-evaluate through locomotion_episode
        _, _, episode = locomotion_episode(ctx.task, ctx.solution, ctx.key)
    idx, fps = video.frame_plan(
        len(episode["qpos"]), episode["dt"], opts.get("frames"), opts.get("fps")
    )
    kw = dict(ctx.task.evaluate.kwargs)
    out = video.render_video(
        load_model(kw["robot"], kw["adaptation"]),
        episode["qpos"][idx],
        ctx.out_dir / ctx.stem,
        fps=fps,
        width=width,
        height=height,
        fmt=fmt,
        camera=video.CAMERAS.get(kw["robot"].name),
    )
    ctx.info.update(
        episode_steps=episode["steps"],
        video_frames=out["frames"],
        video_fps=out["fps"],
        video_seconds=out["frames"] / out["fps"],
        video_steps_per_frame=int(idx[1] - idx[0]) if len(idx) > 1 else 1,
        video_format=out["format"],
        video_size=[out["width"], out["height"]],
        gl_backend=out["gl_backend"],
    )
    return {"video": out["path"]}


render_locomotion.options = ("frames", "fps", "width", "height", "format")
render_locomotion.check_options = _check_video_options
render_locomotion.evaluate = locomotion_episode

for _name in ("sphere", "rastrigin", "plateau"):
    register_renderer(_name, render_linear_projection)
register_renderer("arm", render_arm)
register_renderer("pendulum", render_pendulum)
for _name in ("ant", "halfcheetah", "hopper", "walker2d"):
    register_renderer(_name, render_locomotion)


# --------------------------------------------------------------------------- replay
def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def replay(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    elite="best",
    seed: int = 0,
    eval_seed: int = 0,
    render_options: dict | None = None,
) -> dict:
    """Re-evaluate one elite of seed ``seed``'s result archive and draw it.

    Args:
        run_dir: the run folder.
        out_dir: where to write (default: the run's ``plots/``).
        elite: ``"best"``, a cell index, or measure values ``(m,)`` (see :func:`select_elite`).
        seed: which seed's archive.
        eval_seed: seed of the PRNG key of the re-evaluation (stochastic tasks).
        render_options: options of the task's renderer (e.g. ``{"fps": 10}`` for a
            locomotion video, see :func:`render_locomotion`).

    Writes ``replay_seed<seed>_cell<cell>.png`` (or the renderer's files) and
    ``replay_seed<seed>_cell<cell>.json``: the cell, the stored and re-evaluated objective and
    measures, and the renderer's extra results.

    Returns:
        The JSON record as a dict, with ``"files"`` mapping labels (``"figure"``, ``"json"``,
        ...) to the written paths.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    config = rundir.read_config(run_dir)
    archive, state = rundir.load_archive(run_dir, int(seed))
    cell = select_elite(archive, state, elite)
    task_name = config.get("task")
    if not isinstance(task_name, str):
        raise rundir.NotARunError(f"run {os.fspath(run_dir)!r}: config has no task name")
    renderer = RENDERERS.get(task_name, render_generic)
    options = dict(render_options or {})
    unknown = sorted(set(options) - set(getattr(renderer, "options", ())))
    if unknown:
        raise ValueError(
            f"render_options {unknown} are not used by the renderer of task {task_name!r} "
            f"(it takes {sorted(getattr(renderer, 'options', ()))})"
        )
    if hasattr(renderer, "check_options"):
        renderer.check_options(options)
    task = tasks_lib.get(task_name, **(config.get("task_settings") or {}))
    if task.solution_dim != archive.solution_dim:
        raise ValueError(
            f"run {os.fspath(run_dir)!r}: task {task_name!r} rebuilt from the config has "
            f"solution_dim {task.solution_dim}, but the archive holds {archive.solution_dim}"
        )
    solution = np.asarray(state.solutions)[cell]
    key = jax.random.PRNGKey(int(eval_seed))
    episode = None
    if hasattr(renderer, "evaluate"):
        objective, measures, episode = renderer.evaluate(task, solution, key)
        objective, measures = float(objective), np.asarray(measures, float)
    else:
        objectives, measures = task.evaluate(jnp.asarray(solution)[None], key)
        objective = float(np.asarray(objectives)[0])
        measures = np.asarray(measures, float)[0]
    stored_objective = float(np.asarray(state.objectives)[cell])
    stored_measures = np.asarray(state.measures, float)[cell]
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / rundir.PLOT_DIR
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReplayContext(
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
        key=key,
        names=measure_names(config, archive.measure_dim),
        stem=f"replay_seed{int(seed)}_cell{cell}",
        options=options,
        episode=episode,
    )
    files = dict(renderer(ctx))
    json_path = out / f"{ctx.stem}.json"
    files["json"] = json_path
    same_measures = measures.shape == stored_measures.shape and bool(
        np.allclose(measures, stored_measures, rtol=1e-5, atol=1e-6)
    )
    record = {
        "run": os.fspath(run_dir),
        "name": config.get("name"),
        "task": task_name,
        "task_settings": config.get("task_settings") or {},
        "algo": config.get("algo"),
        "seed": int(seed),
        "elite": _jsonable(elite),
        "cell": cell,
        "measure_names": ctx.names,
        "stored": {"objective": stored_objective, "measures": stored_measures.tolist()},
        "reevaluated": {
            "objective": objective,
            "measures": measures.tolist(),
            "eval_seed": int(eval_seed),
        },
        "matches_stored": bool(
            math.isclose(objective, stored_objective, rel_tol=1e-5, abs_tol=1e-6) and same_measures
        ),
        "render": _jsonable(ctx.info),
        "files": {k: os.fspath(v) for k, v in files.items()},
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return {**record, "files": files}
