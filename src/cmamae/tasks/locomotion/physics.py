"""The physics: every call into MJX lives in this module.

One place to swap the backend: MJX's JAX implementation is used on CPU and GPU (``IMPL``);
MuJoCo Warp (``impl="warp"``) would be added here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from cmamae.tasks.locomotion.model import Adaptation, geom_ids, load_model
from cmamae.tasks.locomotion.robots import Robot

IMPL = "jax"

# MJX prints these two lines on import when the optional MuJoCo Warp backend is not installed;
# we do not use it (IMPL = "jax"). Any other line it prints (e.g. warp installed but failing to
# load) still reaches stdout.
_WARP_ABSENT = re.compile(
    r"Failed to import (warp|mujoco_warp): No module named '(mujoco_)?warp\S*'"
)


@contextlib.contextmanager
def _without_warp_notices():
    """Capture stdout; on exit print every captured line but MJX's "warp is absent" ones."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if not _WARP_ABSENT.fullmatch(line.strip()):
                print(line)


def _import_mjx():
    """``mujoco.mjx``, imported without its "Failed to import warp" notices (see above)."""
    with _without_warp_notices():
        from mujoco import mjx
    return mjx


mjx = _import_mjx()


@functools.lru_cache(maxsize=32)
def mjx_model(robot: Robot, adaptation: Adaptation) -> mjx.Model:
    """The MJX model of ``robot`` (cached; built eagerly even when first asked for inside a
    trace, so that no tracer is cached)."""
    with jax.ensure_compile_time_eval():
        return mjx.put_model(load_model(robot, adaptation), impl=IMPL)


@functools.lru_cache(maxsize=32)
def _blank_data(robot: Robot, adaptation: Adaptation) -> mjx.Data:
    with jax.ensure_compile_time_eval():
        return mjx.make_data(mjx_model(robot, adaptation), impl=IMPL)


def reset_data(robot: Robot, adaptation: Adaptation, qpos: jax.Array, qvel: jax.Array):
    """Fresh MJX data (``mj_resetData``) at ``(qpos, qvel)``.

    Derived quantities are not computed here: ``mjx.step`` starts with the forward pass, so
    a separate ``mjx.forward`` would only add compile time. Callers must not read positions
    (``xpos``) or contacts of this data before the first step.
    """
    return _blank_data(robot, adaptation).replace(qpos=qpos, qvel=qvel)


def step(robot: Robot, adaptation: Adaptation, data, action: jax.Array):
    """One policy step: ``robot.frame_skip`` physics steps with ``ctrl = action`` (clamped by
    MuJoCo to the actuators' ``ctrlrange``, as ``mj_step`` does).

    Returns ``(data, feet)``: ``feet`` ``(n_feet,)`` bool says whether each foot touched the
    floor at any of the physics steps (:func:`foot_contacts` of each substep's contacts).
    """
    mx = mjx_model(robot, adaptation)
    data = data.replace(ctrl=action)

    def substep(_, carry):
        d, feet = carry
        d = mjx.step(mx, d)
        return d, feet | foot_contacts(robot, adaptation, d)

    # No foot yet; written as a function of ``data`` so that under ``vmap`` it is batched like
    # the data: the loop's carry is then batched from the start, and vmap batches the physics
    # step once instead of a second time after finding ``feet`` batched (a third fewer
    # batched operations in tracing an ant episode). XLA folds it to zeros.
    feet = foot_contacts(robot, adaptation, data) & False
    return jax.lax.fori_loop(0, robot.frame_skip, substep, (data, feet))


def _contact(data):
    impl = getattr(data, "_impl", None)
    if impl is not None and hasattr(impl, "contact"):
        return impl.contact
    with warnings.catch_warnings():  # older MJX: the public field
        warnings.simplefilter("ignore")
        return data.contact


@functools.lru_cache(maxsize=32)
def contact_table(robot: Robot, adaptation: Adaptation) -> tuple[tuple[int, ...], int]:
    """``(foot geom ids, floor geom id)`` of the adapted model."""
    model = load_model(robot, adaptation)
    (floor,) = geom_ids(model, ("floor",))
    return geom_ids(model, robot.feet), floor


def foot_contacts(robot: Robot, adaptation: Adaptation, data) -> jax.Array:
    """Per foot, whether it touches the floor in ``data``'s contacts (those of the last
    physics step's collision pass): a contact row pairing the foot with the floor is active,
    ``dist < includemargin`` (MuJoCo's own rule: the margin counts). ``(n_feet,)`` bool.

    MJX keeps one row per possible contact of each colliding geom pair; rows of pairs that
    are too far apart have a large ``dist`` and so are inactive.
    """
    feet, floor = contact_table(robot, adaptation)
    c = _contact(data)
    active = c.dist < c.includemargin
    g1, g2 = c.geom1, c.geom2
    feet_arr = jnp.asarray(np.array(feet, dtype=np.int32))
    on_floor = ((g1 == floor)[None, :] & (g2[None, :] == feet_arr[:, None])) | (
        (g2 == floor)[None, :] & (g1[None, :] == feet_arr[:, None])
    )
    return jnp.any(on_floor & active[None, :], axis=1)
