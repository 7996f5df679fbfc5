"""Videos of locomotion episodes with MuJoCo's offscreen renderer (``mujoco.Renderer``).

:func:`render_video` draws a sequence of ``qpos`` (one per frame) with a camera that tracks the
robot's root body and writes an MP4 (when an ffmpeg encoder is found: the ``imageio-ffmpeg``
package's or an ``ffmpeg`` on ``PATH``) or a GIF (Pillow).

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported, so the
drawing runs in a child process (this file run as a script) that imports ``mujoco`` with the
backend chosen here: ``egl`` first on a machine with an NVIDIA GPU, ``osmesa`` first
otherwise, then the other one; a ``MUJOCO_GL`` set by the user is the only one tried. The
child loads the exact compiled model from an MJB file, so it needs neither JAX nor cmamae.
When no backend works, :class:`RenderUnavailable` names the system packages to install.

This module imports nothing heavy at import time (it is also the child's script).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cmamae import validate

#: backend -> (shared library PyOpenGL loads, Debian/Ubuntu package that provides it)
GL_BACKENDS = {
    "egl": ("EGL", "libegl1 (with libegl-mesa0 for software rendering without a GPU driver)"),
    "osmesa": ("OSMesa", "libosmesa6"),
}
FORMATS = ("auto", "mp4", "gif")
#: largest playback rate; faster episodes (hopper, walker: 125 steps/s) skip steps instead
MAX_FPS = 50.0
_GL_UNAVAILABLE = 3  # the child's exit status when no OpenGL context can be made

#: the tracking camera where the task's replay hook sets nothing (each locomotion task carries
#: its own: :attr:`cmamae.tasks.base.ReplayHook.camera`): distance (m), elevation, azimuth (deg)
DEFAULT_CAMERA = dict(distance=4.0, elevation=-20.0, azimuth=90.0)


class RenderUnavailable(RuntimeError):
    """No OpenGL backend (or no encoder for the format asked for) works on this machine."""


def ffmpeg_exe() -> str | None:
    """An ffmpeg executable: ``imageio-ffmpeg``'s bundled one, else ``ffmpeg`` on ``PATH``."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def _has_nvidia_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def gl_candidates() -> list[str]:
    """``MUJOCO_GL`` backends to try, in order (the user's ``MUJOCO_GL`` alone if set)."""
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user:
        return [user]
    return ["egl", "osmesa"] if _has_nvidia_gpu() else ["osmesa", "egl"]


def check_options(frames=None, fps=None, width=None, height=None, fmt="auto") -> None:
    """ValueError naming the option (:mod:`cmamae.validate`'s message) for a bad ``frames``
    (int >= 1), ``fps`` (frames/s in (0, 10000)), ``width``/``height`` (pixels, int in
    [16, 4096]) or ``fmt`` (one of :data:`FORMATS`); None means the default."""
    if frames is not None:
        validate.integer("frames", frames)
    if fps is not None:
        validate.interval("fps", fps, 0, 1e4, open_low=True, open_high=True)
    for name, v in (("width", width), ("height", height)):
        if v is not None:
            validate.integer(name, v, 16, 4096)
    validate.one_of("format", fmt, FORMATS)


def frame_plan(num_states: int, dt: float, frames=None, fps=None) -> tuple[np.ndarray, float]:
    """Which of ``num_states`` states to draw and the playback rate.

    Real time by default: every ``stride``-th state at ``1 / (stride · dt)`` frames/s, with
    ``stride`` the smallest that keeps the rate at most :data:`MAX_FPS`. ``fps`` sets the
    playback rate instead (the same states; slow motion when lower than real time).
    ``frames`` caps the count (the first ones are kept). Returns ``(indices (F,), fps)``.
    """
    check_options(frames=frames, fps=fps)
    stride = max(1, int(np.ceil(1.0 / (dt * MAX_FPS) - 1e-9)))
    idx = np.arange(0, num_states, stride)
    if frames is not None:
        idx = idx[:frames]
    return idx, float(fps) if fps is not None else 1.0 / (stride * dt)


def _missing_library(backend: str) -> str | None:
    lib = GL_BACKENDS.get(backend, (None,))[0]
    if lib is not None and ctypes.util.find_library(lib) is None:
        return f"lib{lib} not found"
    return None


def _no_backend_message(errors: dict[str, str]) -> str:
    tried = "; ".join(f"MUJOCO_GL={b}: {e}" for b, e in errors.items())
    packages = " or ".join(f"{pkg} (MUJOCO_GL={b})" for b, (_, pkg) in GL_BACKENDS.items())
    return (
        f"no OpenGL backend for MuJoCo's offscreen renderer works here ({tried}). Install "
        f"the system package {packages}, e.g. `apt-get install libosmesa6` on a CPU machine; "
        "an NVIDIA GPU machine renders with EGL through its driver"
    )


def render_video(
    model,
    qpos: np.ndarray,
    path: str | os.PathLike,
    *,
    fps: float,
    width: int = 640,
    height: int = 480,
    fmt: str = "auto",
    camera: dict | None = None,
    track_body: int = 1,
) -> dict:
    """Draw ``qpos`` ``(frames, nq)`` of ``model`` (an ``MjModel``) into a video.

    Args:
        path: the output file without or with a suffix; the suffix is set to the format.
        fps: playback frames per second.
        width: frame width in pixels.
        height: frame height in pixels.
        fmt: ``"mp4"``, ``"gif"`` or ``"auto"`` (MP4 when an encoder is found, else GIF).
        camera: ``distance``, ``elevation``, ``azimuth`` of the tracking camera.
        track_body: the body the camera follows (1: the robot's root body).

    Returns:
        ``{"path", "format", "frames", "fps", "width", "height", "gl_backend"}``.

    Raises:
        ValueError: bad options.
        RenderUnavailable: no OpenGL backend works (the message names the system
            packages), or MP4 was asked for and no encoder exists.
        RuntimeError: the drawing failed for another reason (the child's error).
    """
    import mujoco

    check_options(fps=fps, width=width, height=height, fmt=fmt)
    qpos = np.asarray(qpos, np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != model.nq or qpos.shape[0] < 1:
        raise ValueError(f"qpos must have shape (frames >= 1, {model.nq}), got {qpos.shape}")
    encoder = ffmpeg_exe()
    if fmt == "auto":
        fmt = "mp4" if encoder else "gif"
    if fmt == "mp4" and encoder is None:
        raise RenderUnavailable(
            "MP4 needs ffmpeg: pip install imageio-ffmpeg (or the system package ffmpeg), "
            "or write a GIF (format 'gif')"
        )
    path = Path(path).with_suffix("." + fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cmamae-video-") as tmp:
        mujoco.mj_saveModel(model, os.path.join(tmp, "model.mjb"), None)
        np.save(os.path.join(tmp, "qpos.npy"), qpos)
        job = dict(
            model=os.path.join(tmp, "model.mjb"),
            qpos=os.path.join(tmp, "qpos.npy"),
            out=os.fspath(path),
            fmt=fmt,
            fps=float(fps),
            width=int(width),
            height=int(height),
            camera={**DEFAULT_CAMERA, **(camera or {})},
            track_body=int(track_body),
            ffmpeg=encoder,
        )
        job_path = os.path.join(tmp, "job.json")
        for backend in gl_candidates():
            missing = _missing_library(backend)
            if missing:
                errors[backend] = missing
                continue
            env = dict(os.environ, MUJOCO_GL=backend)
            if backend in GL_BACKENDS:
                env["PYOPENGL_PLATFORM"] = backend
            # Shadows cost 3.5x per frame in software rendering (Mesa): only on a GPU.
            job["shadows"] = backend == "egl" and _has_nvidia_gpu()
            Path(job_path).write_text(json.dumps(job))
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), job_path],
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                return dict(
                    path=path,
                    format=fmt,
                    frames=int(qpos.shape[0]),
                    fps=float(fps),
                    width=int(width),
                    height=int(height),
                    gl_backend=backend,
                )
            lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
            if proc.returncode != _GL_UNAVAILABLE:
                tail = "\n".join(lines[-15:])
                raise RuntimeError(f"drawing the video with MUJOCO_GL={backend} failed:\n{tail}")
            errors[backend] = lines[-1]
    raise RenderUnavailable(_no_backend_message(errors))


# --------------------------------------------------------------------------- the child process
def _encode_gif(images, path: str, fps: float) -> None:
    """``images``: Pillow images, already quantized (one byte per pixel in memory)."""
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000.0 / fps)),  # ms; viewers slow down delays under 20 ms
        loop=0,
    )


class _FFmpegWriter:
    """Raw RGB frames piped into ffmpeg (H.264 or the build's MP4 default, yuv420p)."""

    def __init__(self, exe: str, path: str, width: int, height: int, fps: float):
        cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        cmd += ["-s", f"{width}x{height}", "-r", f"{fps:.6g}", "-i", "-", "-an"]
        # yuv420p (what players expect) needs even sizes
        cmd += ["-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p", path]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def close(self) -> None:
        _, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {err.decode(errors='replace').strip()}")


def _child_main(job_path: str) -> int:
    """Draw the job's frames (this file run as a script, with ``MUJOCO_GL`` set)."""
    job = json.loads(Path(job_path).read_text())
    try:
        import mujoco

        model = mujoco.MjModel.from_binary_path(job["model"])
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, job["width"])
        model.vis.global_.offheight = max(model.vis.global_.offheight, job["height"])
        renderer = mujoco.Renderer(model, job["height"], job["width"])
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = job["shadows"]
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    except Exception as err:  # no usable OpenGL context: the parent tries the next backend
        print(f"{type(err).__name__}: {err}".replace("\n", " "), file=sys.stderr)
        return _GL_UNAVAILABLE
    try:
        from PIL import Image

        data = mujoco.MjData(model)
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        cam.trackbodyid = job["track_body"]
        cam.distance = job["camera"]["distance"]
        cam.elevation = job["camera"]["elevation"]
        cam.azimuth = job["camera"]["azimuth"]
        writer = None
        if job["fmt"] == "mp4":
            writer = _FFmpegWriter(
                job["ffmpeg"], job["out"], job["width"], job["height"], job["fps"]
            )
        frames = []
        for q in np.load(job["qpos"]):
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=cam)
            frame = renderer.render()
            if writer is not None:
                writer.write(frame)
            else:
                frames.append(Image.fromarray(frame).quantize(colors=256))
        if writer is not None:
            writer.close()
        else:
            _encode_gif(frames, job["out"], job["fps"])
    finally:
        renderer.close()  # explicitly: osmesa's free raises a ctypes error at interpreter exit
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
