"""Archive heatmaps and objective histograms of a run's result archive.

Layouts by archive: grid with 1 measure, a strip of cells; 2 measures, an image over the grid
(measure 0 horizontal, measure 1 vertical, the ranges as axes); 3 or 4 measures, a grid of 2-D
slices over the last two measures, the outer measures indexing the subplots (3-D: one subplot
per bin of measure 0; 4-D: rows = bins of measure 0, columns = bins of measure 1); more
measures, a scatter of the elites' first two measures. CVT archives: the centroids (first two
measures) coloured by objective, empty cells grey. Empty grid cells show the grey background.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from cmamae import rundir, validate
from cmamae.viz._common import measure_names, new_figure, save

CMAP = "viridis"
EMPTY = "#d9d9d9"
MAX_SLICES = 400  # outer cells of a 3-D/4-D grid drawn as separate subplots


# --------------------------------------------------------------------------- arrays
def cell_values(state) -> np.ndarray:
    """Elite objective per cell ``(cells,)``, NaN in empty cells."""
    occ = np.asarray(state.occupied, bool)
    return np.where(occ, np.asarray(state.objectives, float), np.nan)


def summary(archive, state) -> dict:
    """Host-side stats (no compilation): num_elites, coverage, qd_score, obj_max."""
    occ = np.asarray(state.occupied, bool)
    obj = np.asarray(state.objectives, float)[occ]
    num = int(occ.sum())
    return {
        "num_elites": num,
        "coverage": num / occ.size,
        "qd_score": float(np.sum(obj - archive.qd_score_offset)),
        "obj_max": float(obj.max()) if num else math.nan,
    }


def _norm(values: np.ndarray) -> Normalize:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return Normalize(lo, hi)


def _is_grid(archive) -> bool:
    return hasattr(archive, "dims") and hasattr(archive, "boundaries")


# --------------------------------------------------------------------------- drawing
def _strip(ax, values, bounds, name, norm):
    """1-D grid: one row of cells over ``bounds`` ``(d + 1,)``."""
    ax.set_facecolor(EMPTY)
    ax.pcolormesh(bounds, [0.0, 1.0], np.ma.masked_invalid(values[None, :]), cmap=CMAP, norm=norm)
    ax.set_yticks([])
    ax.set_xlabel(name)


def _image(ax, values2d, bounds0, bounds1, names, norm, labels=True):
    """2-D grid slice: ``values2d`` ``(d0, d1)`` over the edges ``bounds0``, ``bounds1``."""
    ax.set_facecolor(EMPTY)
    ax.pcolormesh(bounds0, bounds1, np.ma.masked_invalid(values2d.T), cmap=CMAP, norm=norm)
    if labels:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])


def _scatter(ax, points, values, names, norm, empty_points=None):
    """Points ``(k, m)`` coloured by ``values`` ``(k,)`` (best drawn last); ``empty_points``
    grey. Uses the first two coordinates (one coordinate: values on the vertical axis)."""
    ax.set_facecolor("white")
    order = np.argsort(values)
    points, values = points[order], values[order]
    if points.shape[1] == 1:
        ax.scatter(points[:, 0], values, c=values, cmap=CMAP, norm=norm, s=12)
        ax.set_xlabel(names[0])
        ax.set_ylabel("objective")
        return
    if empty_points is not None and len(empty_points):
        ax.scatter(empty_points[:, 0], empty_points[:, 1], color=EMPTY, s=6)
    ax.scatter(points[:, 0], points[:, 1], c=values, cmap=CMAP, norm=norm, s=12)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])


def draw_archive_panel(
    ax, archive, state, names, norm=None, cell: int | None = None, point=None
) -> Normalize:
    """The archive on one axis: 1-D strip, 2-D image, the 2-D slice (last two measures)
    through ``cell`` (or through the best cell) for 3+ grid measures, or a scatter.

    ``point`` ``(m,)``: measures to mark with a red star (the elite of a replay). Returns the
    colour normalization used.
    """
    values = cell_values(state)
    norm = norm or _norm(values)
    m = archive.measure_dim
    if _is_grid(archive) and m <= 2:
        b = archive.boundaries
        if m == 1:
            _strip(ax, values, b[0], names[0], norm)
        else:
            _image(ax, values.reshape(archive.dims), b[0], b[1], names, norm)
    elif _is_grid(archive):
        if cell is None:
            cell = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
        outer = np.unravel_index(int(cell), archive.dims)[:-2]
        grid = values.reshape(archive.dims)[tuple(outer)]
        b = archive.boundaries
        _image(ax, grid, b[-2], b[-1], names[-2:], norm)
        fixed = ", ".join(
            f"{names[i]} ∈ [{b[i][j]:.3g}, {b[i][j + 1]:.3g})" for i, j in enumerate(outer)
        )
        ax.set_title(f"slice {fixed}", fontsize="small")
        if point is not None:
            point = np.asarray(point)[-2:]
    else:
        occ = np.asarray(state.occupied, bool)
        if hasattr(archive, "centroids"):
            pts = np.asarray(archive.centroids, float)
            _scatter(ax, pts[occ], values[occ], names, norm, empty_points=pts[~occ])
            ranges = getattr(archive, "ranges", None)
            if ranges is not None:
                ax.set_xlim(*ranges[0])
                if m > 1:
                    ax.set_ylim(*ranges[1])
        else:
            _scatter(ax, np.asarray(state.measures, float)[occ], values[occ], names, norm)
        if m > 2:
            ax.set_title("projection on the first two measures", fontsize="small")
    if point is not None:
        p = np.asarray(point, float)
        if m == 1 and _is_grid(archive):
            ax.plot([p[0]], [0.5], marker="*", color="red", markersize=14, markeredgecolor="k")
        elif m == 1:
            pass
        else:
            ax.plot([p[0]], [p[1]], marker="*", color="red", markersize=14, markeredgecolor="k")
    return norm


def _interval(edges, i: int) -> str:
    return f"[{edges[i]:.3g}, {edges[i + 1]:.3g})"


def _draw_slices(fig, archive, values, names, norm):
    """3-D/4-D grid: a grid of 2-D slices over the last two measures.

    Text never overlaps at the default size: each panel's title (and each row's label, 4-D) is
    only the interval of its outer measure(s), whose names head the grid once; the inner axes
    carry two ticks (at a quarter and three quarters of the range) on the outer panels, and
    their names are one line under the grid."""
    dims = archive.dims
    b = archive.boundaries
    grid = values.reshape(dims)
    if len(dims) == 3:
        count = dims[0]
        ncols = math.ceil(math.sqrt(count))
        nrows = math.ceil(count / ncols)
        outer = [(i,) for i in range(count)]
        place = [(k // ncols, k % ncols) for k in range(count)]
    else:
        nrows, ncols = dims[0], dims[1]
        outer = [(i, j) for i in range(dims[0]) for j in range(dims[1])]
        place = outer
    if len(outer) > MAX_SLICES:
        raise ValueError(
            f"archive dims {dims} give {len(outer)} slices; plot_archive draws at most "
            f"{MAX_SLICES} (the outer dimensions' cells)"
        )
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    # The panels share their axes: limits and ticks are set once, on the first panel (set on
    # each, every call updated all the shared panels: 10 s for 100 panels).
    ticks = [[e[0] + f * (e[-1] - e[0]) for f in (0.25, 0.75)] for e in (b[-2], b[-1])]
    first = axes[0, 0]
    first.set_xlim(b[-2][0], b[-2][-1])
    first.set_ylim(b[-1][0], b[-1][-1])
    first.set_xticks(ticks[0], [f"{t:.3g}" for t in ticks[0]])
    first.set_yticks(ticks[1], [f"{t:.3g}" for t in ticks[1]])
    for idx, (r, c) in zip(outer, place):
        ax = axes[r, c]
        _image(ax, grid[idx], b[-2], b[-1], names[-2:], norm, labels=False)
        ax.tick_params(labelsize=6, length=2, pad=1)
        if len(dims) == 3:
            ax.set_title(_interval(b[0], idx[0]), fontsize=7, pad=2)
    for k in range(len(outer), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    boxes = [a.get_position() for a in axes.ravel()]
    top, bottom = max(p.y1 for p in boxes), min(p.y0 for p in boxes)
    center = 0.5 * (min(p.x0 for p in boxes) + max(p.x1 for p in boxes))
    header = top + 0.3 / fig.get_figheight()  # 0.3 in above the panels, over their titles
    if len(dims) == 4:
        for c, ax in enumerate(axes[0, :]):
            ax.set_title(_interval(b[1], c), fontsize=7, pad=2)
        for r, ax in enumerate(axes[:, 0]):
            ax.set_ylabel(_interval(b[0], r), fontsize=7, labelpad=2)
        fig.text(center, header, f"columns: {names[1]}", ha="center", fontsize=9)
        fig.text(
            0.015, 0.5 * (top + bottom), f"rows: {names[0]}", rotation=90, va="center", fontsize=9
        )
    else:
        fig.text(center, header, f"panels: {names[0]}", ha="center", fontsize=9)
    fig.text(
        center,
        0.1 / fig.get_figheight(),
        f"within each panel: {names[-2]} horizontal, {names[-1]} vertical",
        ha="center",
        fontsize=9,
    )
    return axes


def heatmap_figure(archive, state, names, title: str = ""):
    """A figure of the whole archive (layouts in the module docstring) with a colour bar."""
    values = cell_values(state)
    norm = _norm(values)
    m = archive.measure_dim
    if _is_grid(archive) and m in (3, 4):
        outer = archive.dims[0] if m == 3 else archive.dims[0] * archive.dims[1]
        side = math.ceil(math.sqrt(outer))
        size = min(max(6.0, 1.6 * side), 24.0)
        # Many axes: a fixed layout (constrained layout costs seconds at 100 subplots).
        width, height = size + 1.0, size
        fig = new_figure(width, height, layout=None)
        # Margins in inches: two title lines and the outer measure's name above (1.0 in), the
        # inner measures' line below, the colour bar with its ticks and label on the right.
        top = 1 - (1.0 if title else 0.55) / height
        right = 1 - 1.2 / width
        fig.subplots_adjust(
            left=0.9 / width, right=right, bottom=0.55 / height, top=top, wspace=0.12, hspace=0.22
        )
        _draw_slices(fig, archive, values, names, norm)
        cax = fig.add_axes((right + 0.2 / width, 0.15, 0.15 / width, 0.7))
        fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=cax, label="objective")
    else:
        fig = new_figure(7.0, 2.4 if (_is_grid(archive) and m == 1) else 5.6)
        ax = fig.subplots()
        draw_archive_panel(ax, archive, state, names, norm)
        fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label="objective")
    if title:
        # The slice grid's fixed layout: the title's top 0.08 in below the figure's edge, clear
        # of the outer measure's name whatever the figure's size.
        top = {} if fig.get_layout_engine() else dict(y=1 - 0.08 / fig.get_figheight(), va="top")
        fig.suptitle(title, fontsize="medium", **top)
    return fig


def histogram_figure(state, title: str = "", min_f: float | None = None):
    """Histogram of the elites' objectives (a dashed line at ``min_f`` if given)."""
    values = cell_values(state)
    values = values[np.isfinite(values)]
    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    if values.size:
        ax.hist(values, bins=min(50, max(5, int(np.sqrt(values.size)))), color="tab:blue")
        if min_f is not None and math.isfinite(min_f):
            ax.axvline(min_f, color="k", linestyle="--", linewidth=1, label="min_f")
            ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no elites", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("objective")
    ax.set_ylabel("elites")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def run_title(config: dict, seed: int, stats: dict) -> str:
    """``name: algo on task, seed s: elites, coverage, QD score, best``."""
    cov = 100 * stats["coverage"]
    return (
        f"{config.get('name', '')}: {config.get('algo', '?')} on {config.get('task', '?')}, "
        f"seed {seed}\n{stats['num_elites']} elites, coverage {cov:.2f}%, "
        f"QD score {stats['qd_score']:.4g}, best {stats['obj_max']:.4g}"
    )


def plot_archive(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, seed: int = 0
) -> dict[str, Path]:
    """Heatmap and objective histogram of seed ``seed``'s result archive.

    Writes ``archive_seed<seed>.png`` and ``objectives_seed<seed>.png`` into ``out_dir``
    (default: the run's ``plots/``). Returns ``{"heatmap": path, "histogram": path}``.

    Raises:
        rundir.NotARunError: not a run folder, or no archive for that seed.
    """
    seed = validate.integer("seed", seed, 0)
    config = rundir.read_config(run_dir)
    archive, state = rundir.load_archive(run_dir, seed)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / rundir.PLOT_DIR
    names = measure_names(config, archive.measure_dim)
    stats = summary(archive, state)
    title = run_title(config, seed, stats)
    heat = save(heatmap_figure(archive, state, names, title), out / f"archive_seed{seed}.png")
    min_f = (config.get("task_info") or {}).get("min_f")
    hist = save(
        histogram_figure(state, title, None if min_f is None else float(min_f)),
        out / f"objectives_seed{seed}.png",
    )
    return {"heatmap": heat, "histogram": hist}
