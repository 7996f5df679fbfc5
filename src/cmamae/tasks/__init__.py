"""Tasks: objective + measures as pure JAX functions, with the metadata a QD run needs.

``tasks.get(name, **overrides)`` builds a registered task, ``tasks.names()`` lists them:
the CMA-MAE paper's benchmarks ("sphere", "rastrigin", "plateau", "arm") and the pendulum
swing-up ("pendulum"). Policies (:class:`MLPPolicy`) map flat parameter vectors to actions.
"""

from cmamae.tasks import benchmarks, locomotion, pendulum  # noqa: F401  (registers the tasks)
from cmamae.tasks.base import Bound, Task, bind, get, names, register
from cmamae.tasks.benchmarks import arm_task, plateau_task, rastrigin_task, sphere_task
from cmamae.tasks.pendulum import pendulum_task
from cmamae.tasks.policies import MLPPolicy

__all__ = [
    "Bound",
    "MLPPolicy",
    "Task",
    "arm_task",
    "bind",
    "get",
    "names",
    "pendulum_task",
    "plateau_task",
    "rastrigin_task",
    "register",
    "sphere_task",
]
