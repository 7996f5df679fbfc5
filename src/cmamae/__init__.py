"""cmamae: scalable CMA-MAE and quality-diversity optimization in JAX."""

# _mujoco_gl first: it imports mujoco so that an unusable MUJOCO_GL cannot break the import
from cmamae import _mujoco_gl, algorithms, archives, emitters, es, tasks  # noqa: F401
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
