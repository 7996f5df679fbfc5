"""What the user sees while a run goes: a live rich progress bar, or plain log lines.

Both take :meth:`update` calls with the seed-averaged latest stats after each compiled chunk.
:func:`make` picks one: the bar on a terminal; one whole line per chunk when the stream is not a
terminal (a log file, a pipe, CI: a bar there is cut at 80 columns and redrawn in pieces); one
line per 10 s with ``quiet``.
"""

from __future__ import annotations

import sys
import time


def _fmt(x: float) -> str:
    return f"{x:,.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


class LogProgress:
    """One line per update (``--quiet``), at most one per ``every_s`` seconds, plus the last."""

    def __init__(self, total_evals: int, stream=None, every_s: float = 10.0):
        self.total = total_evals
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._last = -float("inf")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, evals: int, stats: dict[str, float], evals_per_s: float) -> None:
        now = time.monotonic()
        if evals < self.total and now - self._last < self.every_s:
            return
        self._last = now
        self.message(
            f"evals {evals:,}/{self.total:,}  qd_score {_fmt(stats['qd_score'])}  "
            f"coverage {stats['coverage']:.2%}  best {_fmt(stats['obj_max'])}  "
            f"evals/s {evals_per_s:,.0f}"
        )


def make(total_evals: int, quiet: bool = False, stream=None) -> LogProgress:
    """The progress display for a run of ``total_evals`` evaluations per seed on ``stream``
    (default: stderr): a :class:`LogProgress` line at most every 10 s with ``quiet``, one per
    update (chunk) when ``stream`` is not a terminal, else a :class:`BarProgress`."""
    stream = stream or sys.stderr
    if quiet:
        return LogProgress(total_evals, stream)
    isatty = getattr(stream, "isatty", None)
    if not (isatty is not None and isatty()):
        return LogProgress(total_evals, stream, every_s=0.0)
    return BarProgress(total_evals, stream)


class BarProgress(LogProgress):
    """A rich progress bar: evaluations, QD score, coverage, best, evaluations/s, ETA."""

    def __init__(self, total_evals: int, stream=None):
        super().__init__(total_evals, stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._console = Console(file=self.stream)
        self._progress = Progress(
            TextColumn("[bold]evals"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task = self._progress.add_task("run", total=total_evals, stats="compiling…")

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()
        return False

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def update(self, evals: int, stats: dict[str, float], evals_per_s: float) -> None:
        text = (
            f"qd {_fmt(stats['qd_score'])}  cov {stats['coverage']:.1%}  "
            f"best {_fmt(stats['obj_max'])}  {evals_per_s:,.0f} evals/s"
        )
        self._progress.update(self._task, completed=evals, stats=text)
