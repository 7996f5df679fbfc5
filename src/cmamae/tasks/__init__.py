"""Tasks: objective + measures as pure JAX functions, with the metadata a QD run needs.

``tasks.get(name, **overrides)`` builds a registered task, ``tasks.names()`` lists them:
the CMA-MAE paper's benchmarks ("sphere", "rastrigin", "plateau", "arm") and the pendulum
swing-up ("pendulum"). Policies (:class:`MLPPolicy`) map flat parameter vectors to actions.
Host-evaluated tasks (:class:`~cmamae.tasks.host.HostTask`, simulators that are not JAX):
QDGym on PyBullet ("qd-ant", ...) and the locomotion robots on native MuJoCo ("ant-native", ...).
"""

# Importing the task modules registers their tasks.
from cmamae.tasks import functions, locomotion, pendulum, qdgym  # noqa: F401
from cmamae.tasks.base import Bound, Task, Transitions, bind, get, names, register
from cmamae.tasks.functions import arm_task, plateau_task, rastrigin_task, sphere_task
from cmamae.tasks.locomotion import host_tasks  # noqa: F401  (the *-native host tasks)
from cmamae.tasks.pendulum import pendulum_task
from cmamae.tasks.policies import MLPPolicy

__all__ = [
    "Bound",
    "MLPPolicy",
    "Task",
    "Transitions",
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
