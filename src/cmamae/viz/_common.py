"""Helpers shared by the viz modules: figures without pyplot, run-folder labels, formatting.

Figures are :class:`matplotlib.figure.Figure` objects saved through the Agg canvas, never
``pyplot``: no global state, no display, safe in threads and in a headless CLI.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.4, height: float = 4.8, layout: str | None = "constrained"):
    """A pyplot-free :class:`~matplotlib.figure.Figure` drawn by the Agg canvas."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def task_label(config: dict) -> str:
    """The task's name, with its overrides when there are any: ``sphere(solution_dim=10)``."""
    name = str(config.get("task", "?"))
    settings = config.get("task_settings") or {}
    if not settings:
        return name
    args = ", ".join(f"{k}={_compact(v)}" for k, v in sorted(settings.items()))
    return f"{name}({args})"


def _compact(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_compact(v) for v in value) + ")"
    return str(value)


def measure_names(config: dict, measure_dim: int) -> list[str]:
    """Measure names from ``config["task_info"]``, or ``m0, m1, ...`` when missing or stale."""
    names = list((config.get("task_info") or {}).get("measure_names") or [])
    if len(names) != measure_dim:
        names = [f"m{i}" for i in range(measure_dim)]
    return names


def fmt_mean_se(mean: float, se: float) -> str:
    """``"12.3 ± 0.4"``: decimals set by the standard error (2 significant digits of it);
    ``"12.35 ± –"`` when there is no standard error and ``"–"`` when there is no mean."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if se is None or not math.isfinite(se):
        return f"{_fmt_sig(mean)} ± –"
    if se == 0:
        return f"{_fmt_sig(mean)} ± 0"
    decimals = min(max(1 - math.floor(math.log10(abs(se))), 0), 8)
    return f"{mean:,.{decimals}f} ± {se:,.{decimals}f}"


def _fmt_sig(x: float, digits: int = 4) -> str:
    """``x`` with about ``digits`` significant digits, thousands separated, no exponent for
    ordinary magnitudes."""
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude >= 15 or magnitude < -6:
        return f"{x:.{digits - 1}e}"
    decimals = max(digits - 1 - magnitude, 0)
    return f"{x:,.{decimals}f}"


def as_float(x) -> float:
    """A Python float from a 0-d array or number."""
    return float(np.asarray(x))
