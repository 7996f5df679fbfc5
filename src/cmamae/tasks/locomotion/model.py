"""Loading Gymnasium's MuJoCo models and adapting them for MJX with ``mujoco.MjSpec``.

The XML files are read from the installed ``gymnasium`` package (never copied into this tree)
and changed in memory at load time. docs/tasks.md lists each change and what it bought.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import warnings

import mujoco

from cmamae.tasks.locomotion.robots import Robot


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """How a Gymnasium model is changed for MJX. ``Adaptation.none()`` keeps it as shipped.

    Attributes:
        euler: use the semi-implicit Euler integrator instead of the model's (RK4 for ant,
            hopper and walker; the half-cheetah is already Euler).
        feet_only: only the feet (and the robot's ``extra_colliders``) collide with the floor;
            every other geom gets ``contype = conaffinity = 0``.
        solver_iterations: constraint-solver iterations (MuJoCo's default is 100);
            ``None`` keeps the model's. 1 for every robot: 3 would make the half-cheetah's
            native twin follow MJX about as closely as the ant's does, at 2.2× the cost
            (docs/tasks.md, "The half-cheetah's solver iterations").
        ls_iterations: line-search iterations (MuJoCo's default is 50); ``None`` keeps them.
            With 4 (Brax's setting) the line search of MJX and of native MuJoCo stop at
            different points and the two drift apart at the first foot impact; with 8 both
            reach the line minimum (the results equal those with 50) at the speed of 4.
        newton: use the Newton solver (MuJoCo's default; stated so the setting is explicit).
        eulerdamp: keep the implicit joint damping of the Euler integrator; ``False`` sets
            ``mjDSBL_EULERDAMP``.
        elliptic: elliptic friction cones instead of MuJoCo's default pyramidal ones. MJX
            3.17 and native MuJoCo 4.0 disagree on pyramidal contact forces (about 10 % in
            ``qacc`` at an ant's first foot contact, every native solver agreeing with each
            other) and agree on elliptic ones (docs/tasks.md).
    """

    euler: bool = True
    feet_only: bool = True
    solver_iterations: int | None = 1
    ls_iterations: int | None = 8
    newton: bool = True
    eulerdamp: bool = False
    elliptic: bool = True

    @classmethod
    def none(cls) -> Adaptation:
        """Gymnasium's model unchanged."""
        return cls(
            euler=False,
            feet_only=False,
            solver_iterations=None,
            ls_iterations=None,
            newton=False,
            eulerdamp=True,
            elliptic=False,
        )


DEFAULT_ADAPTATION = Adaptation()


def gymnasium_assets_dir() -> str:
    """The folder of Gymnasium's MuJoCo XML files, found without importing gymnasium."""
    spec = importlib.util.find_spec("gymnasium")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the locomotion tasks load their models from gymnasium (pip install gymnasium)"
        )
    root = list(spec.submodule_search_locations)[0]
    return os.path.join(root, "envs", "mujoco", "assets")


def build_spec(robot: Robot, adaptation: Adaptation) -> mujoco.MjSpec:
    """Gymnasium's model of ``robot`` as an ``MjSpec`` with ``adaptation`` applied."""
    path = os.path.join(gymnasium_assets_dir(), robot.xml)
    spec = mujoco.MjSpec.from_file(path)
    names = {g.name for g in spec.geoms}
    missing = [f for f in (*robot.feet, *robot.extra_colliders) if f not in names]
    if missing:
        raise ValueError(f"{robot.xml} has no geom(s) {missing}; geoms are {sorted(names)}")
    opt = spec.option
    if adaptation.euler:
        opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    if adaptation.newton:
        opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
    if adaptation.solver_iterations is not None:
        opt.iterations = adaptation.solver_iterations
    if adaptation.ls_iterations is not None:
        opt.ls_iterations = adaptation.ls_iterations
    if not adaptation.eulerdamp:
        opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    if adaptation.elliptic:
        opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    if adaptation.feet_only:
        keep = set(robot.feet) | set(robot.extra_colliders)
        for geom in spec.geoms:
            # The floor is the only world geom; it keeps its flags (contype = conaffinity = 1).
            if geom.name == "floor" or geom.name in keep:
                continue
            geom.contype = 0
            geom.conaffinity = 0
    return spec


@functools.lru_cache(maxsize=32)
def load_model(robot: Robot, adaptation: Adaptation = DEFAULT_ADAPTATION) -> mujoco.MjModel:
    """The compiled ``MjModel`` of ``robot`` with ``adaptation`` (cached; do not modify it)."""
    with warnings.catch_warnings():
        # half_cheetah.xml uses <compiler settotalmass>, deprecated (still applied) in 4.0.
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        return build_spec(robot, adaptation).compile()


def geom_ids(model: mujoco.MjModel, names: tuple[str, ...]) -> tuple[int, ...]:
    """Geom ids of ``names``, in order."""
    return tuple(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in names)
