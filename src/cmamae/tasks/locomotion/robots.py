"""The four robots as plain data: model file, feet, and Gymnasium v5's step definitions.

Nothing here imports MuJoCo, so registering the tasks costs nothing at ``import cmamae``.
Every number below is Gymnasium 1.x's default for the ``-v5`` environment of the same robot
(``gymnasium/envs/mujoco/<robot>_v5.py``), except where a comment says otherwise.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Robot:
    """Static description of one locomotion task (hashable: it is part of a task's identity).

    Attributes:
        name: the task name ("ant", ...).
        gym_id: the Gymnasium environment this task follows ("Ant-v5", ...).
        xml: the model file in Gymnasium's ``envs/mujoco/assets`` folder.
        feet: foot geom names, in measure order.
        measure_names: one name per foot.
        frame_skip: physics steps per policy step (Gymnasium's ``frame_skip``).
        obs_skip_qpos: leading ``qpos`` entries left out of the observation (the x, y position
            of the ant; the x position of the planar robots).
        clip_qvel: the observed ``qvel`` is clipped to ``±clip_qvel`` (hopper and walker);
            ``None`` for no clipping.
        x_from_body: the forward position is ``xpos`` of body 1 (Ant-v5's ``main_body``);
            otherwise ``qpos[0]`` (the planar robots' root slider).
        ctrl_cost_weight: control cost ``ctrl_cost_weight · Σ a²``.
        healthy_reward: reward per step while healthy (0 for the half-cheetah).
        terminate: the episode ends on the first unhealthy step (not the half-cheetah).
        z_index: index in ``qpos`` of the torso height checked against ``healthy_z``.
        healthy_z: ``(lo, hi)`` torso height range; ``None``: no height rule.
        healthy_angle: ``(lo, hi)`` range of the torso pitch ``qpos[2]`` (planar robots).
        healthy_state: ``(lo, hi)`` range (strict) of ``concat(qpos, qvel)[2:]`` (hopper).
        z_inclusive: the height range includes its ends (Ant-v5 uses ``<=``, the planar robots
            ``<``).
        reset_noise_scale: initial ``qpos`` is ``qpos0 + U(-s, s)``.
        gaussian_qvel: initial ``qvel`` is ``s · N(0, 1)`` (ant, half-cheetah) rather than
            ``U(-s, s)`` (hopper, walker).
        archive_dims: the paper's archive shape.
        min_f: threshold_min and QD-score offset for 1000-step episodes: 1.5 × the lowest
            objective seen, over runs of all eight locomotion algorithms and Xavier-initialized
            policies, per-step scaled to 1000 steps (docs/tasks.md, "How `min_f` was chosen");
            a task with shorter episodes scales it by ``episode_length / 1000``.
        extra_colliders: geoms that keep colliding with the floor besides the feet in the
            adapted model.
    """

    name: str
    gym_id: str
    xml: str
    feet: tuple[str, ...]
    measure_names: tuple[str, ...]
    frame_skip: int
    obs_skip_qpos: int
    clip_qvel: float | None
    x_from_body: bool
    ctrl_cost_weight: float
    healthy_reward: float
    terminate: bool
    z_index: int
    healthy_z: tuple[float, float] | None
    healthy_angle: tuple[float, float] | None
    healthy_state: tuple[float, float] | None
    z_inclusive: bool
    reset_noise_scale: float
    gaussian_qvel: bool
    archive_dims: tuple[int, ...]
    min_f: float
    extra_colliders: tuple[str, ...] = ()


ANT = Robot(
    name="ant",
    gym_id="Ant-v5",
    xml="ant.xml",
    # The lower-leg capsules: Ant-v5 stands and walks on them (the model has no foot geoms).
    feet=("left_ankle_geom", "right_ankle_geom", "third_ankle_geom", "fourth_ankle_geom"),
    measure_names=("front_left_foot", "front_right_foot", "back_left_foot", "back_right_foot"),
    frame_skip=5,
    obs_skip_qpos=2,
    clip_qvel=None,
    x_from_body=True,
    ctrl_cost_weight=0.5,
    healthy_reward=1.0,
    terminate=True,
    z_index=2,
    healthy_z=(0.2, 1.0),
    healthy_angle=None,
    healthy_state=None,
    z_inclusive=True,
    reset_noise_scale=0.1,
    gaussian_qvel=True,
    archive_dims=(6, 6, 6, 6),
    min_f=-4600.0,
)

HALFCHEETAH = Robot(
    name="halfcheetah",
    gym_id="HalfCheetah-v5",
    xml="half_cheetah.xml",
    feet=("ffoot", "bfoot"),
    measure_names=("front_foot", "back_foot"),
    frame_skip=5,
    obs_skip_qpos=1,
    clip_qvel=None,
    x_from_body=False,
    ctrl_cost_weight=0.1,
    healthy_reward=0.0,
    terminate=False,
    z_index=1,
    healthy_z=None,
    healthy_angle=None,
    healthy_state=None,
    z_inclusive=False,
    reset_noise_scale=0.1,
    gaussian_qvel=True,
    archive_dims=(32, 32),
    min_f=-3500.0,
    # No termination: a cheetah that flips lands on its back and head, as in HalfCheetah-v5.
    extra_colliders=("torso", "head"),
)

HOPPER = Robot(
    name="hopper",
    gym_id="Hopper-v5",
    xml="hopper.xml",
    feet=("foot_geom",),
    measure_names=("foot",),
    frame_skip=4,
    obs_skip_qpos=1,
    clip_qvel=10.0,
    x_from_body=False,
    ctrl_cost_weight=1e-3,
    healthy_reward=1.0,
    terminate=True,
    z_index=1,
    healthy_z=(0.7, float("inf")),
    healthy_angle=(-0.2, 0.2),
    healthy_state=(-100.0, 100.0),
    z_inclusive=False,
    reset_noise_scale=5e-3,
    gaussian_qvel=False,
    archive_dims=(1000,),
    min_f=-60.0,
)

WALKER2D = Robot(
    name="walker2d",
    gym_id="Walker2d-v5",
    xml="walker2d_v5.xml",
    feet=("foot_geom", "foot_left_geom"),
    measure_names=("right_foot", "left_foot"),
    frame_skip=4,
    obs_skip_qpos=1,
    clip_qvel=10.0,
    x_from_body=False,
    ctrl_cost_weight=1e-3,
    healthy_reward=1.0,
    terminate=True,
    z_index=1,
    healthy_z=(0.8, 2.0),
    healthy_angle=(-1.0, 1.0),
    healthy_state=None,
    z_inclusive=False,
    reset_noise_scale=5e-3,
    gaussian_qvel=False,
    archive_dims=(32, 32),
    min_f=-830.0,
)

ROBOTS: dict[str, Robot] = {r.name: r for r in (ANT, HALFCHEETAH, HOPPER, WALKER2D)}
