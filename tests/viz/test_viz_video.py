"""Locomotion replay videos: MuJoCo's offscreen renderer in a child process, GIF/MP4 output.

Skipped only where no OpenGL backend works on the machine (``video.render_video`` says so
with :class:`RenderUnavailable`). The ant replayed here runs on native MuJoCo (the CPU
default: no MJX program to compile); an MJX episode replayed and drawn is checked in
tests/experiment/test_provenance.py.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

pytest.importorskip("mujoco")

from cmamae import cli, tasks  # noqa: E402
from cmamae.experiment import replay as replay_lib  # noqa: E402
from cmamae.tasks.locomotion.model import load_model  # noqa: E402
from cmamae.tasks.locomotion.robots import ROBOTS  # noqa: E402
from cmamae.viz import video  # noqa: E402

# The replay below draws a native MuJoCo episode (the locomotion replay hook).
SETTINGS = {"episode_length": 6, "hidden_sizes": [4], "backend": "native", "threads": 1}


@pytest.fixture(scope="module")
def gl_ok(tmp_path_factory):
    """Skip the module's drawing tests when no OpenGL backend works here."""
    model = load_model(ROBOTS["hopper"])
    path = tmp_path_factory.mktemp("probe") / "probe"
    try:
        video.render_video(model, model.qpos0[None], path, fps=10, width=32, height=32, fmt="gif")
    except video.RenderUnavailable as err:
        pytest.skip(f"no OpenGL backend: {err}")
    return True


def _gif_frames(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "GIF"
        sizes, frames = set(), 0
        while True:
            sizes.add(im.size)
            frames += 1
            try:
                im.seek(im.tell() + 1)
            except EOFError:
                return frames, sizes


def _ant_run(make_run, save_archive):
    """A run folder of a tiny ant task whose archive holds one elite."""
    from cmamae import algorithms

    run = make_run("ant-run", "sep-cma-mae", task="ant", task_settings=SETTINGS, seeds=1)
    task = tasks.get("ant", **SETTINGS)
    x = 0.5 * np.random.default_rng(0).normal(size=(1, task.solution_dim)).astype(np.float32)
    obj, meas = task.evaluate(jax.numpy.asarray(x), jax.random.PRNGKey(0))
    save_archive(run, 0, algorithms.get("sep-cma-mae", task).scheduler.best_archive, x, obj, meas)
    return run


def test_frame_plan_is_real_time_and_capped():
    idx, fps = video.frame_plan(1001, 0.05)  # ant: 20 steps/s
    assert fps == pytest.approx(20.0) and np.array_equal(idx, np.arange(1001))
    idx, fps = video.frame_plan(1001, 0.008)  # hopper: 125 steps/s -> every 3rd step
    assert np.array_equal(idx, np.arange(0, 1001, 3)) and fps == pytest.approx(125 / 3)
    idx, fps = video.frame_plan(1001, 0.05, frames=7, fps=5)
    assert np.array_equal(idx, np.arange(7)) and fps == 5.0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(frames=0), "frames"),
        (dict(frames=2.5), "frames"),
        (dict(fps=0), "fps"),
        (dict(width=8), "width"),
        (dict(height=True), "height"),
        (dict(fmt="avi"), "format"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        video.check_options(**kw)


def test_no_backend_names_the_system_packages(monkeypatch, tmp_path):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(video.ctypes.util, "find_library", lambda name: None)
    model = load_model(ROBOTS["hopper"])
    with pytest.raises(video.RenderUnavailable, match="libosmesa6.*libegl1|libegl1.*libosmesa6"):
        video.render_video(model, model.qpos0[None], tmp_path / "v", fps=10, fmt="gif")


def test_gif_of_planar_robot(gl_ok, tmp_path):
    model = load_model(ROBOTS["walker2d"])
    qpos = np.tile(model.qpos0, (3, 1))
    qpos[:, 0] = [0.0, 0.1, 0.2]  # walking forward: the tracking camera follows
    out = video.render_video(
        model, qpos, tmp_path / "w.mp4", fps=10, width=48, height=32, fmt="gif"
    )
    assert out["path"].suffix == ".gif" and out["frames"] == 3
    assert _gif_frames(out["path"]) == (3, {(48, 32)})


def test_mp4_when_an_encoder_exists(gl_ok, tmp_path):
    if video.ffmpeg_exe() is None:
        pytest.skip("no ffmpeg (pip install imageio-ffmpeg)")
    model = load_model(ROBOTS["hopper"])
    out = video.render_video(
        model, np.tile(model.qpos0, (4, 1)), tmp_path / "h", fps=10, width=64, height=48
    )
    data = out["path"].read_bytes()
    assert out["format"] == "mp4" and data[4:8] == b"ftyp" and len(data) > 500


def test_replay_ant_writes_video_of_the_reevaluated_episode(
    gl_ok, make_run, save_archive, tmp_path
):
    ant_run = _ant_run(make_run, save_archive)
    options = {"format": "gif", "width": 64, "height": 48, "fps": 4}
    out = replay_lib.replay(ant_run, tmp_path, elite="best", render_options=options)
    render = out["render"]
    # A hand-made run (no provenance): a fresh episode with key 0, the one the archive was
    # filled with; the video shows it, recorded with the same return.
    assert out["episode"]["kind"] == "fresh"
    assert out["replayed"]["objective"] == pytest.approx(out["stored"]["objective"], rel=1e-5)
    assert out["drawn_episode_objective"] == pytest.approx(out["replayed"]["objective"], rel=1e-5)
    steps = render["episode_steps"]
    assert 1 <= steps <= SETTINGS["episode_length"]
    assert render["video_frames"] == steps + 1 and render["video_fps"] == 4.0
    assert _gif_frames(out["files"]["video"]) == (steps + 1, {(64, 48)})
    record = json.loads(out["files"]["json"].read_text())
    assert record["render"]["gl_backend"] in ("egl", "osmesa", "glfw", "glx")
    # The command line: options as flags, then bad ones as one-line errors (status 2).
    args = [str(ant_run), "--out", str(tmp_path / "cli"), "--format", "gif", "--size", "32x32"]
    assert cli.main(["replay", *args, "--frames", "2"]) == 0
    assert _gif_frames(next((tmp_path / "cli").glob("*.gif")))[0] == 2
    assert cli.main(["replay", *args, "--frames", "0"]) == cli.EXIT_USAGE
    assert cli.main(["replay", str(ant_run), "--size", "big"]) == cli.EXIT_USAGE


def test_options_of_other_renderers_are_refused(make_run, tmp_path):
    run = make_run("sphere", "sep-cma-mae", seeds=1, iterations=1, archive=True)
    with pytest.raises(ValueError, match=r"render options \['fps'\] are not used"):
        replay_lib.replay(run, tmp_path, render_options={"fps": 10})
