"""Figures and tables from run folders: the results table and curves (:mod:`.report`), archive
heatmaps (:mod:`.archive_plot`), and elite replays (:mod:`.replay`). Matplotlib through the Agg
canvas only (no display); run folders are read as JSON, CSV and ``.npz`` arrays, never code.

The entry points of ``cmamae report`` / ``plot``: ``viz.report.report`` and
``viz.plot_archive`` (the submodule ``report`` keeps its name here). ``cmamae replay`` decides
which episode to replay in :mod:`cmamae.experiment.replay` and draws it with :mod:`.replay`.
"""

from cmamae.viz import archive_plot, replay, report
from cmamae.viz.archive_plot import plot_archive
from cmamae.viz.replay import RENDERERS, ReplayContext, register_renderer, select_elite
from cmamae.viz.report import (
    final_rows,
    find_runs,
    plot_curves,
    summary_table,
    to_csv,
    to_markdown,
)

__all__ = [
    "RENDERERS",
    "ReplayContext",
    "archive_plot",
    "final_rows",
    "find_runs",
    "plot_archive",
    "plot_curves",
    "register_renderer",
    "replay",
    "report",
    "select_elite",
    "summary_table",
    "to_csv",
    "to_markdown",
]
