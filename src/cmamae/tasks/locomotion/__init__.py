"""QD locomotion on MuJoCo: ``ant``, ``halfcheetah``, ``hopper``, ``walker2d``.

Gymnasium's standard MuJoCo models, loaded from the installed ``gymnasium`` package and adapted
for MJX in code (model.py); Gymnasium v5's observation, reward and termination (env.py);
measures are the fraction of executed steps in which each foot touches the floor.

Two backends compute the same task (``backend=``, :data:`BACKENDS`):

* ``"mjx"``: MuJoCo MJX, one ``lax.scan`` per episode, ``vmap``-ed over the batch
  (rollout.py; contacts from MJX's contact data, physics.py); the backend for GPUs;
* ``"native"``: MuJoCo's C engine, one simulation per solution stepped on a C thread pool
  (``mujoco.batch``, native_batch.py) behind a ``jax.pure_callback``, float64; about 5× the
  MJX floor on a CPU (docs/tasks.md, "Choosing a backend");
* ``"auto"`` (default): native when JAX runs on the CPU only, MJX when it has a GPU or TPU.

Both can return the episodes' transitions (``Task.evaluate_transitions``) for the TD3-based
algorithms. native.py is the per-episode native twin (one ``MjData``, MuJoCo's own contact
list) that the tests hold both backends to.

Importing this package registers the four tasks and imports nothing heavy: MuJoCo and MJX are
imported when a task is built (``tasks.get("ant")``).
"""

from __future__ import annotations

from cmamae import _mujoco_gl, validate
from cmamae.tasks.base import Task, bind, register
from cmamae.tasks.locomotion.robots import ROBOTS, Robot
from cmamae.tasks.policies import MLPPolicy

DEFAULT_EPISODE_LENGTH = 1000
DEFAULT_HIDDEN = (128, 128)
BACKENDS = ("auto", "mjx", "native")


def dims(robot: Robot, adaptation=None) -> tuple[int, int]:
    """``(obs_dim, act_dim)`` of ``robot``'s model (loads it)."""
    _mujoco_gl.import_mujoco()  # before anything imports mujoco: an unusable MUJOCO_GL
    from cmamae.tasks.locomotion.model import DEFAULT_ADAPTATION, load_model

    model = load_model(robot, adaptation or DEFAULT_ADAPTATION)
    return model.nq - robot.obs_skip_qpos + model.nv, model.nu


def resolve_backend(backend: str) -> str:
    """``"mjx"`` or ``"native"`` for a ``backend`` setting (see the module docstring).

    Raises:
        ValueError: an unknown backend (the valid ones are listed), or ``"native"`` with a
            mujoco older than 4.0 (the message names the version needed).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        import jax

        from cmamae.tasks.locomotion.native_batch import MIN_MUJOCO, mujoco_version

        native = jax.default_backend() == "cpu" and mujoco_version() >= MIN_MUJOCO
        return "native" if native else "mjx"
    if backend == "native":
        from cmamae.tasks.locomotion.native_batch import require_batch

        require_batch()
    return backend


def backend_of(task: Task) -> str:
    """The backend a locomotion task was built with: ``"mjx"`` or ``"native"``."""
    from cmamae.tasks.locomotion import native_batch

    return "native" if task.evaluate.fn is native_batch.evaluate else "mjx"


def resolved_settings(task: Task) -> dict:
    """Task settings that a run folder should record as resolved: ``{"backend": "mjx" |
    "native"}`` for a locomotion task (``"auto"`` depends on the machine, so a resumed run must
    not resolve it again), ``{}`` for any other task."""
    from cmamae.tasks.locomotion import native_batch

    fn = getattr(task.evaluate, "fn", None)
    if fn is native_batch.evaluate:
        return {"backend": "native"}
    if getattr(fn, "__module__", None) == "cmamae.tasks.locomotion.rollout":
        return {"backend": "mjx"}
    return {}


def policy_for(robot: Robot, hidden_sizes=DEFAULT_HIDDEN) -> MLPPolicy:
    """The paper's policy for ``robot``: an MLP with tanh on every layer but the input, Xavier
    (Glorot uniform) initialization, zero biases."""
    obs_dim, act_dim = dims(robot)
    return MLPPolicy((obs_dim, *hidden_sizes, act_dim), activation="tanh", output_activation="tanh")


def check_solutions(solutions, policy: MLPPolicy) -> None:
    """A ValueError unless ``solutions`` is ``(batch, policy.num_params)``."""
    if solutions.ndim != 2 or solutions.shape[1] != policy.num_params:
        raise ValueError(
            f"solutions must have shape (batch, {policy.num_params}) for the policy "
            f"{policy.layer_sizes}, got {solutions.shape}"
        )


def initial_solution(key, *, policy: MLPPolicy):
    """A Xavier-initialized policy vector (the ES's starting point x0)."""
    return policy.init_flat(key)


def locomotion_task(
    robot_name: str,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
    hidden_sizes: tuple[int, ...] = DEFAULT_HIDDEN,
    reset_noise_scale: float | None = None,
    adapted: bool = True,
    policy: MLPPolicy | None = None,
    backend: str = "auto",
    threads: int | None = None,
) -> Task:
    """The QD locomotion task of ``robot_name`` (see the module docstring).

    Args:
        robot_name: one of ``ROBOTS``.
        episode_length: policy steps per episode (1000, the paper's and Gymnasium's limit).
        hidden_sizes: hidden layer widths of the MLP policy (the paper's ``(128, 128)``).
        reset_noise_scale: Gymnasium's reset noise ``s``; ``None``: the robot's v5 default;
            ``0``: every episode starts from ``qpos0`` at rest.
        adapted: use the MJX-adapted model (default); ``False`` runs Gymnasium's model as
            shipped (RK4, every geom colliding, MuJoCo's default solver), much slower.
        policy: a custom :class:`MLPPolicy` instead of the default; its input and output
            sizes must equal the robot's observation and action sizes.
        backend: ``"auto"`` (default), ``"mjx"`` or ``"native"`` (:func:`resolve_backend`).
        threads: simulation threads of the native backend (None: the cores this process may
            use, ``os.sched_getaffinity``); results do not depend on it.

    ``min_f`` is the robot's value for 1000-step episodes (docs/tasks.md) times
    ``episode_length / 1000``.
    """
    _mujoco_gl.import_mujoco()
    from cmamae.tasks.locomotion.model import DEFAULT_ADAPTATION, Adaptation
    from cmamae.tasks.locomotion.native_batch import check_threads
    from cmamae.tasks.locomotion.playback import replay_hook

    if robot_name not in ROBOTS:
        raise ValueError(f"unknown robot {robot_name!r}; expected one of {sorted(ROBOTS)}")
    robot = ROBOTS[robot_name]
    episode_length = validate.integer("episode_length", episode_length)
    hidden_sizes = tuple(hidden_sizes)
    for i, h in enumerate(hidden_sizes):
        validate.integer(f"hidden_sizes[{i}]", h)
    noise = robot.reset_noise_scale if reset_noise_scale is None else reset_noise_scale
    noise = validate.non_negative("reset_noise_scale", noise)
    adaptation = DEFAULT_ADAPTATION if adapted else Adaptation.none()
    check_threads(threads)
    backend = resolve_backend(backend)
    obs_dim, act_dim = dims(robot)
    if policy is None:
        policy = policy_for(robot, hidden_sizes)
    elif not isinstance(policy, MLPPolicy):
        raise ValueError(f"policy must be an MLPPolicy, got {type(policy).__name__}")
    elif policy.obs_dim != obs_dim or policy.act_dim != act_dim:
        raise ValueError(
            f"policy layer_sizes {policy.layer_sizes} do not fit {robot_name}: the input must "
            f"be the observation size {obs_dim} and the output the action size {act_dim}"
        )
    common = dict(
        robot=robot,
        adaptation=adaptation,
        policy=policy,
        episode_length=episode_length,
        noise_scale=float(noise),
    )
    if backend == "native":
        from cmamae.tasks.locomotion import native_batch as engine

        common["threads"] = threads
    else:
        from cmamae.tasks.locomotion import rollout as engine
    return Task(
        name=robot_name,
        solution_dim=policy.num_params,
        measure_names=robot.measure_names,
        measure_ranges=((0.0, 1.0),) * len(robot.feet),
        archive_dims=robot.archive_dims,
        min_f=robot.min_f * episode_length / DEFAULT_EPISODE_LENGTH,
        max_f=None,
        evaluate=bind(engine.evaluate, **common),
        initial_solution=bind(initial_solution, policy=policy),
        evaluate_transitions=bind(engine.evaluate_transitions, **common),
        policy=policy,
        replay=replay_hook(**common),
    )


def _factory(robot_name: str):
    def factory(
        episode_length: int = DEFAULT_EPISODE_LENGTH,
        hidden_sizes: tuple[int, ...] = DEFAULT_HIDDEN,
        reset_noise_scale: float | None = None,
        adapted: bool = True,
        policy: MLPPolicy | None = None,
        backend: str = "auto",
        threads: int | None = None,
    ) -> Task:
        return locomotion_task(
            robot_name,
            episode_length,
            hidden_sizes,
            reset_noise_scale,
            adapted,
            policy,
            backend,
            threads,
        )

    robot = ROBOTS[robot_name]
    factory.__name__ = f"{robot_name}_task"
    factory.__qualname__ = factory.__name__
    factory.__doc__ = (
        f"QD {robot_name} ({robot.gym_id} on MuJoCo, MJX or native): {len(robot.feet)} "
        "foot-contact measures, "
        f"archive {robot.archive_dims}. See :func:`locomotion_task` for the arguments."
    )
    return register(robot_name)(factory)


ant_task = _factory("ant")
halfcheetah_task = _factory("halfcheetah")
hopper_task = _factory("hopper")
walker2d_task = _factory("walker2d")

__all__ = [
    "BACKENDS",
    "ROBOTS",
    "Robot",
    "ant_task",
    "backend_of",
    "halfcheetah_task",
    "hopper_task",
    "locomotion_task",
    "policy_for",
    "resolve_backend",
    "resolved_settings",
    "walker2d_task",
]
