"""roca_ros.depth_input (depth messages -> metres, liveness, pairing) and roca_ros.gravity, without ROS."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from roca_ros.depth_input import (DepthInputError, DepthLiveness, DepthPairing, check_depth_header,
                                  check_registered, depth_metres)
from roca_ros.gravity import GravityFilter, unit_up


def depth_msg(array: np.ndarray, encoding: str, frame_id: str = "cam", step: int | None = None,
              bigendian: bool = False) -> SimpleNamespace:
    """A sensor_msgs/Image look-alike (only the fields the module reads)."""
    dtype = {"16UC1": ">u2" if bigendian else "<u2", "32FC1": ">f4" if bigendian else "<f4"}.get(encoding, "<u2")
    rows = np.ascontiguousarray(array.astype(dtype))
    data = rows.tobytes()
    row_bytes = rows.shape[1] * rows.itemsize
    if step is not None and step > row_bytes:  # padded rows
        data = b"".join(rows[i].tobytes() + b"\xee" * (step - row_bytes) for i in range(rows.shape[0]))
    return SimpleNamespace(encoding=encoding, width=array.shape[1], height=array.shape[0],
                           step=row_bytes if step is None else step, data=data, is_bigendian=int(bigendian),
                           header=SimpleNamespace(frame_id=frame_id))


def test_16uc1_millimetres_become_metres_with_zero_unknown():
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(depth_metres(depth_msg(mm, "16UC1")), [[0.0, 1.0], [2.5, 65.535]], rtol=1e-6)
    np.testing.assert_allclose(depth_metres(depth_msg(mm, "16UC1", bigendian=True)), [[0.0, 1.0], [2.5, 65.535]],
                               rtol=1e-6)
    padded = depth_metres(depth_msg(mm, "16UC1", step=8))  # rows padded to 8 bytes
    assert padded.dtype == np.float32 and padded.shape == (2, 2)
    np.testing.assert_allclose(padded, [[0.0, 1.0], [2.5, 65.535]], rtol=1e-6)


def test_32fc1_nan_inf_negative_are_unknown():
    m = np.array([[np.nan, 1.5], [-2.0, np.inf]], dtype=np.float32)
    np.testing.assert_array_equal(depth_metres(depth_msg(m, "32FC1")), [[0.0, 1.5], [0.0, 0.0]])


@pytest.mark.parametrize("msg, reason", [
    (depth_msg(np.ones((2, 3)), "mono8"), "encoding 'mono8' is not supported"),
    (depth_msg(np.ones((2, 3)), "16UC1", step=4), "step 4 is less than width 3"),
    (depth_msg(np.zeros((2, 3)), "16UC1"), "entirely invalid"),
    (depth_msg(np.full((2, 3), np.nan), "32FC1"), "entirely invalid"),
    (depth_msg(np.full((2, 3), 1500.0), "32FC1"), "looks like millimetres"),
])
def test_unusable_depth_is_refused_with_the_reason(msg, reason):
    with pytest.raises(DepthInputError, match=reason):
        depth_metres(msg)


def test_truncated_data_and_header_checks():
    msg = depth_msg(np.ones((4, 4)), "16UC1")
    msg.data = msg.data[:-2]
    with pytest.raises(DepthInputError, match="needs 32"):
        check_depth_header(msg)


def test_only_registered_depth_is_accepted():
    msg = depth_msg(np.ones((4, 6)), "16UC1", frame_id="camera_color_optical_frame")
    check_registered(msg, "camera_color_optical_frame", 6, 4)
    with pytest.raises(DepthInputError, match="6x4 but the colour image is 8x4: only depth registered"):
        check_registered(msg, "camera_color_optical_frame", 8, 4)
    with pytest.raises(DepthInputError, match="frame_id 'camera_color_optical_frame' is not.*only depth registered"):
        check_registered(msg, "camera_depth_optical_frame", 6, 4)


def test_liveness_says_once_when_depth_stops_and_once_when_it_returns():
    live = DepthLiveness("/cam/depth", timeout_s=1.0)
    assert live.check(100.0) is None  # no colour frame yet: no camera at all, nothing to say
    live.frame(0.0)
    live.frame(0.5)  # the clock runs from the first frame
    assert live.active and live.state().startswith("waiting")
    assert live.check(0.9) is None
    assert "has not arrived for 1 s" in live.check(1.1) and not live.active
    assert live.check(5.0) is None  # said once
    assert "back on /cam/depth" in live.arrived(5.1) and live.state() == "paired"
    assert live.arrived(5.2) is None and live.check(7.0) is None  # no colour frame waits for depth
    for t in (8.0, 10.0, 12.0):  # a 0.5 Hz camera with its depth, either first: never lost
        live.frame(t)
        assert live.arrived(t + 0.01) is None
        assert live.check(t + 1.0) is None
        assert live.arrived(t + 1.1) is None
        live.frame(t + 1.11, waiting=False)  # paired with the depth that came first
        assert live.check(t + 1.9) is None
    live.frame(14.0)
    assert live.check(14.9) is None
    assert "stopped arriving" in live.check(15.1) and live.state().startswith("lost")


def test_pairing_waits_for_depth_then_goes_rgb_only_when_it_is_lost():
    pairing: DepthPairing[str] = DepthPairing("/d", slop_s=0.01, timeout_s=1.0)
    assert pairing.add_frame(100_000_000, "f1", 0.1) == ([], None)  # waits for its depth
    assert pairing.add_depth(105_000_000, "d1", 0.12) == ([("f1", "d1")], None)
    assert pairing.add_depth(200_000_000, "d2", 0.2)[0] == []
    assert pairing.add_frame(203_000_000, "f2", 0.21)[0] == [("f2", "d2")]
    assert pairing.tick(1.5) == ([], None)  # f2 found its depth at once: nothing waits, however slow the camera
    assert pairing.add_frame(2_000_000_000, "f3", 2.0)[0] == []  # depth may still come
    assert pairing.add_frame(2_500_000_000, "f4", 2.5) == ([], None)
    assert pairing.tick(2.9) == ([], None)
    frames, note = pairing.tick(3.1)  # 1.1 s after f3 began to wait: the newest waiting frame goes on
    assert frames == [("f4", None)] and "RGB only" in note and pairing.sync.pending_images == 0
    assert pairing.sync.unpaired_images == 1  # f3
    assert pairing.add_frame(3_300_000_000, "f5", 3.3) == ([("f5", None)], None)
    assert pairing.add_depth(3_400_000_000, "d3", 3.4)[1].startswith("depth is back")
    assert pairing.add_frame(3_500_000_000, "f6", 3.5) == ([], None)  # waits again
    frames, note = pairing.add_frame(4_600_000_000, "f7", 4.6)  # lost again on the next frame, before any tick
    assert frames == [("f7", None)] and "stopped arriving" in note


def test_gravity_filter_low_passes_and_ignores_acceleration():
    g = GravityFilter(time_constant_s=0.5, tolerance=1.0, max_age_s=1.0)
    assert g.up(0.0) is None
    assert g.add((0.0, -9.81, 0.0), 0.0, "imu")
    np.testing.assert_allclose(g.up(0.0), [0, -1, 0])
    assert not g.add((0.0, -9.81, 5.0), 0.01)  # |a| = 11.0: accelerating, ignored
    assert not g.add((math.nan, 0.0, 0.0), 0.02)
    np.testing.assert_allclose(g.up(0.02), [0, -1, 0])
    # a tilt to 30 degrees: after one time constant the filter is 63 % of the way there
    tilted = 9.81 * np.array([0.0, -math.cos(math.radians(30)), math.sin(math.radians(30))])
    for k in range(1, 51):
        g.add(tilted, k * 0.01)
    angle = math.degrees(math.atan2(-g.up(0.5)[2], g.up(0.5)[1]) + math.pi)
    assert 15 < abs(angle) < 22, angle
    for k in range(51, 400):
        g.add(tilted, k * 0.01)
    np.testing.assert_allclose(g.up(4.0), tilted / 9.81, atol=1e-3)
    assert g.up(5.5) is None  # nothing accepted for > max_age_s
    assert (g.accepted, g.ignored) == (400, 2)


def test_unit_up_refuses_degenerate_vectors():
    np.testing.assert_allclose(unit_up([0, -2, 0]), [0, -1, 0])
    for bad in ([0, 0, 0], [1, 2], [math.inf, 0, 0]):
        with pytest.raises(ValueError, match="3 finite numbers"):
            unit_up(bad)


def test_choose_up_prefers_a_current_imu_in_the_camera_axes_then_up_vector():
    from roca_ros.gravity import choose_up

    g = GravityFilter()
    assert choose_up(None, 0.0, "cam", (), False).up is None
    assert choose_up(g, 0.0, "cam", (), False).source == "off"  # no reading yet
    g.add((0.0, 0.0, 9.81), 0.0, "imu_link")
    other = choose_up(g, 0.1, "cam", (0.0, -2.0, 0.0), False)
    np.testing.assert_allclose(other.up, [0, -1, 0])
    assert other.source == "up_vector" and "no tf2" in other.problem
    trusted = choose_up(g, 0.1, "cam", (0.0, -2.0, 0.0), True)
    np.testing.assert_allclose(trusted.up, [0, 0, 1])
    assert trusted.source == "imu (imu_link)" and trusted.problem is None
    g.add((0.0, 0.0, 9.81), 0.2, "cam")
    np.testing.assert_allclose(choose_up(g, 0.2, "cam", (), False).up, [0, 0, 1])
    assert choose_up(g, 5.0, "cam", (), False).up is None  # stale
