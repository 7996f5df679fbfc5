"""cmamae: scalable CMA-MAE and quality-diversity optimization in JAX."""

from cmamae import algorithms, archives, emitters, es, tasks
from cmamae.compiled_loop import RunResult, run
from cmamae.scheduler import AskTell, Scheduler, SchedulerState, compiled_scan

__all__ = [
    "AskTell",
    "RunResult",
    "Scheduler",
    "SchedulerState",
    "algorithms",
    "archives",
    "compiled_scan",
    "emitters",
    "es",
    "run",
    "tasks",
]

__version__ = "0.1.0"


def __getattr__(name: str):
    # Deprecated names kept importable: ``cmamae.compiled_run`` is ``cmamae.compiled_scan``.
    if name == "compiled_run":
        from cmamae.scheduler import compiled_run

        return compiled_run
    raise AttributeError(f"module 'cmamae' has no attribute {name!r}")
