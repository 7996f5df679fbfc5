"""MJX's "Failed to import warp" notices are filtered at our import site; other output is not."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mujoco.mjx")

from cmamae.tasks.locomotion import physics  # noqa: E402


def test_importing_the_physics_prints_nothing():
    code = "import cmamae.tasks.locomotion.physics as p; print('mjx', p.mjx.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["mjx mujoco.mjx"]
    assert "Failed to import" not in out.stderr


def test_only_the_warp_absent_notices_are_dropped(capsys):
    with physics._without_warp_notices():
        print("Failed to import warp: No module named 'warp'")
        print("Failed to import mujoco_warp: No module named 'warp'")
        print("Failed to import warp: CUDA driver version is insufficient")
        print("something else")
    assert capsys.readouterr().out.splitlines() == [
        "Failed to import warp: CUDA driver version is insufficient",
        "something else",
    ]
