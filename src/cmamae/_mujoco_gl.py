"""Importing ``mujoco`` under a ``MUJOCO_GL`` it cannot use, without a 46-line traceback.

``import mujoco`` sets up OpenGL from ``MUJOCO_GL``: an unknown value raises, and
``MUJOCO_GL=osmesa`` (or ``egl``) without the system library fails deep inside PyOpenGL.
cmamae imports ``mujoco`` when a locomotion task is first built, yet none of its physics
needs OpenGL (videos are drawn in a child process that picks its own backend,
:mod:`cmamae.viz.video`). So :func:`import_mujoco`, which the locomotion tasks call before
anything imports ``mujoco``, checks the setting; when it is unusable it imports ``mujoco``
with OpenGL off (the user's ``MUJOCO_GL`` is restored right after). The command line calls
:func:`check` first: an unusable setting is one line and exit status 2. ``import cmamae``
itself imports no MuJoCo.
"""

from __future__ import annotations

import ctypes.util
import os
import platform

#: backend -> (shared library it loads, Debian/Ubuntu package that provides it); the same
#: packages :data:`cmamae.viz.video.GL_BACKENDS` names for the video renderer
_LIBRARIES = {"osmesa": ("OSMesa", "libosmesa6"), "egl": ("EGL", "libegl1")}
_OFF = ("disable", "disabled", "off", "false", "0")
_VALID = {
    "Linux": ("glx", "egl", "osmesa"),
    "Windows": ("wgl",),
    "Darwin": ("cgl",),
}


class GLBackendError(RuntimeError):
    """``MUJOCO_GL`` names an OpenGL backend MuJoCo cannot use on this machine."""


def problem(value: str | None = None, system: str | None = None) -> str | None:
    """Why ``MUJOCO_GL`` (default: the environment's) is unusable here, as one line, or None."""
    raw = os.environ.get("MUJOCO_GL", "") if value is None else value
    backend = raw.strip().lower()
    system = system or platform.system()
    valid = ("enable", "enabled", "on", "true", "1", "glfw", "", *_OFF, *_VALID.get(system, ()))
    if backend not in valid:
        names = ", ".join(("glfw", *_VALID.get(system, ())))
        return (
            f"MUJOCO_GL={raw} is not an OpenGL backend MuJoCo knows; set it to one of {names} "
            "or unset it"
        )
    if backend in _LIBRARIES and system == "Linux":
        lib, package = _LIBRARIES[backend]
        if ctypes.util.find_library(lib) is None:
            return (
                f"MUJOCO_GL={raw}: MuJoCo's {backend} backend needs lib{lib}, which is not "
                f"installed; install the system package {package} (apt-get install {package}) "
                "or unset MUJOCO_GL"
            )
    return None


def import_mujoco() -> None:
    """Import ``mujoco``; under an unusable ``MUJOCO_GL``, with OpenGL off (the physics does
    not need it)."""
    reason = problem()
    if reason is None:
        import mujoco  # noqa: F401

        return
    saved = os.environ.get("MUJOCO_GL")
    os.environ["MUJOCO_GL"] = "disable"
    try:
        import mujoco  # noqa: F401
    finally:
        if saved is None:
            os.environ.pop("MUJOCO_GL", None)
        else:
            os.environ["MUJOCO_GL"] = saved


def check() -> None:
    """Raise a one-line :class:`GLBackendError` when ``MUJOCO_GL`` is unusable here."""
    reason = problem()
    if reason is not None:
        raise GLBackendError(reason)
