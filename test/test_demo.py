"""The demo's camera sweep and the demo itself, end to end (node, player and recorder processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roca_core.data.sequence import load_sequence, render_sequence
from roca_core.geometry.camera import project_points_np
from roca_core.geometry.rotations import quat_to_matrix_np
# torchvision must load before this module renders with EGL (the other order segfaults); the
# model fixtures import it lazily
import roca_core.model.roca  # noqa: E402,F401

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    return render_sequence(tmp_path_factory.mktemp("seq"), num_frames=3, seed=3)


def test_sweep_sees_a_static_scene_from_moving_cameras(sequence):
    """Camera-frame poses moved to the world with each frame's camera pose agree across frames:
    the camera poses and the object poses use one convention."""
    seq = load_sequence(sequence)
    world: dict[int, list[np.ndarray]] = {}
    cam_positions = []
    for frame in seq["frames"]:
        c2w = np.asarray(frame["cam_to_world"])
        cam_positions.append(c2w[:3, 3])
        for o in frame["objects"]:
            m = np.eye(4)
            m[:3, :3] = quat_to_matrix_np(np.array(o["q"])) @ np.diag(o["s"])
            m[:3, 3] = o["t"]
            world.setdefault(o["alignment_id"], []).append(c2w @ m)
    assert world, "the sweep sees no object"
    assert np.linalg.norm(cam_positions[0] - cam_positions[-1]) > 0.5, "the camera does not move"
    for poses in world.values():
        for m in poses[1:]:
            np.testing.assert_allclose(m, poses[0], atol=1e-6)


def test_sweep_boxes_contain_the_projected_object_centres(sequence):
    seq = load_sequence(sequence)
    inside = total = 0
    for frame in seq["frames"]:
        for o in frame["objects"]:
            uv = project_points_np(np.array([o["t"]]), seq["K"])[0]
            x0, y0, x1, y1 = o["bbox_xyxy"]
            assert 0 <= x0 < x1 <= seq["width"] and 0 <= y0 < y1 <= seq["height"]
            inside += (x0 - 40 <= uv[0] <= x1 + 40) and (y0 - 40 <= uv[1] <= y1 + 40)
            total += 1
    assert inside >= 0.8 * total


def test_sweep_is_deterministic(sequence, tmp_path):
    again = render_sequence(tmp_path / "again", num_frames=3, seed=3)
    for name in ("frames/000000.png", "frames/000002.png", "sequence.json"):
        assert (again / name).read_bytes() == (sequence / name).read_bytes(), name


@pytest.mark.ros
@pytest.mark.slow
def _run_demo(checkpoint: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """roca-demo on ``checkpoint`` into ``out`` with ``args``; (the process, its summary.json)."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.run([str(VENV_BIN / "roca-demo"), "--out", str(out), "--rate", "2",
                           "--checkpoint", str(checkpoint), "--score-threshold", "0.0", *args],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "summary.json").read_text())


def test_demo_runs_end_to_end_with_a_given_checkpoint(random_small_checkpoint, tmp_path):
    """The README's main job on a small random-init model: every output is written."""
    out = tmp_path / "demo"
    proc, summary = _run_demo(random_small_checkpoint, out, "--frames", "3")
    assert summary["frames_published"] == 3
    assert summary["frames_processed"] >= 1
    frames = json.loads((out / "objects.json").read_text())
    for f in frames:
        if f["processed"]:
            assert (out / "overlays" / f"{f['frame']:06d}.png").is_file()
            assert (out / "scenes" / f"{f['frame']:06d}.glb").stat().st_size > 0
            assert f["latency_ms"] > 0
    assert "| frame | GT objects |" in proc.stdout
    assert "class mean" in (out / "summary.md").read_text()


@pytest.fixture(scope="module")
def depth_sequence(tmp_path_factory) -> Path:
    return render_sequence(tmp_path_factory.mktemp("seq_depth"), num_frames=2, seed=3, sensor_depth=True)


def test_sweep_with_sensor_depth_writes_registered_millimetres_and_the_up_direction(depth_sequence, sequence):
    import cv2
    from std_msgs.msg import Header

    from roca_ros.demo_player import depth_msg, imu_msg
    from roca_ros.depth_input import depth_metres
    from roca_ros.gravity import GravityFilter

    seq = load_sequence(depth_sequence)
    first_rgb = (depth_sequence / "frames/000000.png").read_bytes()
    assert first_rgb == (sequence / "frames/000000.png").read_bytes()  # depth leaves the colour frames alone
    for frame in seq["frames"]:
        mm = cv2.imread(str(depth_sequence / frame["depth_file"]), cv2.IMREAD_UNCHANGED)
        assert mm.dtype == np.uint16 and mm.shape == (seq["height"], seq["width"])
        valid = mm > 0
        assert 0.5 < valid.mean() < 1.0  # a sensor: mostly measured, with holes
        assert 300 < np.median(mm[valid]) < 10000
        up = np.asarray(frame["up"])
        np.testing.assert_allclose(up, np.asarray(frame["cam_to_world"])[:3, :3].T @ [0.0, 1.0, 0.0], atol=1e-9)
        assert up[1] < -0.5  # the camera looks roughly level: up is mostly -y in the optical frame
        # what the player publishes is what the node reads
        np.testing.assert_allclose(depth_metres(depth_msg(mm, Header(frame_id="camera"))), mm / 1000.0, rtol=1e-6)
        gravity = GravityFilter()
        a = imu_msg(up, Header(frame_id="camera")).linear_acceleration
        assert gravity.add((a.x, a.y, a.z), 0.0)
        np.testing.assert_allclose(gravity.up(0.0), up, atol=1e-9)


@pytest.mark.ros
@pytest.mark.slow
def test_demo_with_depth_imu_and_floor_runs_end_to_end(random_small_checkpoint, tmp_path):
    """roca-demo --depth --floor: the node gets depth, gravity and the camera's height above the
    floor (the sweep's, within the renderer's 1.0-1.8 m) and the summary says so."""
    out = tmp_path / "demo"
    _proc, summary = _run_demo(random_small_checkpoint, out, "--frames", "2", "--depth", "--floor")
    assert summary["frames_processed"] >= 1
    inputs = summary["inputs"].split(" + ")
    assert inputs[:3] == ["RGB", "sensor depth (16UC1, refine auto)", "IMU gravity (upright prior)"]
    assert len(inputs) == 4 and inputs[3].startswith("camera height ") and "ground-plane prior" in inputs[3]
    assert 1.0 <= float(inputs[3].split()[2]) <= 1.8
    log = (out / "node.log").read_text()
    assert "/roca/aligned_depth_to_color/image_raw + /roca/imu" in log and "rejected" not in log.split("stopped")[0]
