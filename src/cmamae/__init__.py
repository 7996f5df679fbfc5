"""cmamae: scalable CMA-MAE and quality-diversity optimization in JAX."""

from cmamae import algorithms, archives, emitters, es, tasks
from cmamae.loop import RunResult, run
from cmamae.scheduler import AskTell, Scheduler, SchedulerState, compiled_run

__all__ = [
    "AskTell",
    "RunResult",
    "Scheduler",
    "SchedulerState",
    "algorithms",
    "archives",
    "compiled_run",
    "emitters",
    "es",
    "run",
    "tasks",
]

__version__ = "0.1.0"
