"""roca_node with a depth camera and an IMU, fed like a RealSense D435i (issue #13).

Messages are shaped like realsense2_camera's with ``align_depth.enable:=true``: colour on
``color/image_raw``, depth registered to it on ``aligned_depth_to_color/image_raw`` (16UC1
millimetres, the colour image's size and frame_id, the same stamp), the IMU on ``imu`` in
``camera_imu_optical_frame``, all with sensor-data QoS. The model is a recording stand-in
(:mod:`inprocess_node`), except in the upright test, which runs the demo model.

Network safety: localhost discovery only, and a ROS domain of this module's own.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("roca_msgs.msg")
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image, Imu  # noqa: E402

from inprocess_node import InProcessNode  # noqa: E402
from ros_helpers import make_frame, private_domain_id  # noqa: E402

pytestmark = [pytest.mark.ros]

DOMAIN_ID = private_domain_id()
W, H = 320, 240
FRAME = "camera_color_optical_frame"
COLOR, INFO = "/camera/color/image_raw", "/camera/color/camera_info"
DEPTH, IMU = "/camera/aligned_depth_to_color/image_raw", "/camera/imu"
RGB = (np.random.default_rng(1).random((H, W, 3)) * 255).astype(np.uint8)
MM = np.random.default_rng(2).integers(400, 6000, (H, W)).astype(np.uint16)
MM[:10] = 0  # holes, as at depth edges


def depth_image(stamp, values: np.ndarray = MM, encoding: str = "16UC1", frame_id: str = FRAME,
                step: int | None = None) -> Image:
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = values.shape
    msg.encoding = encoding
    msg.step = values.shape[1] * values.itemsize if step is None else step
    msg.data = values.tobytes()
    return msg


@pytest.fixture(scope="module")
def running():
    node = InProcessNode(DOMAIN_ID, remaps=[f"image:={COLOR}", f"camera_info:={INFO}"],
                         parameters={"depth_topic": DEPTH, "imu_topic": IMU, "depth_timeout": 1.0},
                         client_image_topic=COLOR, client_info_topic=INFO)
    node.depth_pub = node.client.node.create_publisher(Image, DEPTH, qos_profile_sensor_data)
    node.imu_pub = node.client.node.create_publisher(Imu, IMU, qos_profile_sensor_data)
    node.diagnostics = []
    node.client.node.create_subscription(DiagnosticArray, "/diagnostics", node.diagnostics.append, 10)
    yield node
    node.close()


def with_depth(running, **depth_kwargs):
    """() -> (image, info) after publishing their depth image (same stamp), as the driver does."""
    def make():
        stamp = running.client.new_stamp()
        running.depth_pub.publish(depth_image(stamp, **depth_kwargs))
        return make_frame(RGB, stamp, FRAME)
    return make


def rgb_only(running):
    return lambda: make_frame(RGB, running.client.new_stamp(), FRAME)


def last_inputs(running) -> dict:
    return running.predictor.inputs[-1]


def test_registered_16uc1_depth_reaches_the_model_in_metres(running):
    before = running.node.stats.snapshot(False)["with_depth"]
    running.send_until_processed(with_depth(running))
    depth = last_inputs(running)["depth"]
    assert depth is not None and depth.dtype == np.float32 and depth.shape == (H, W)
    np.testing.assert_allclose(depth, MM / 1000.0, rtol=1e-6)
    assert running.node.stats.snapshot(False)["with_depth"] > before
    published = running.client.stats
    seen = len(published)
    running.predictor.last_refine_seconds = 0.004  # the refinement time the predictor reports goes to ~/stats
    try:
        running.send_until_processed(with_depth(running))
        assert running.client.spin_until(
            lambda: any(s["stages"]["refine"]["count"] for s in published[seen:]), 3.0), published[seen:]
    finally:
        running.predictor.last_refine_seconds = 0.0
    refined = next(s for s in published[seen:] if s["stages"]["refine"]["count"])
    assert refined["stages"]["refine"]["max_ms"] == 4.0 and refined["with_depth"] > before


def test_32fc1_metres_with_nan_holes(running):
    metres = (MM / 1000.0).astype(np.float32)
    metres[:10] = np.nan
    running.send_until_processed(with_depth(running, values=metres, encoding="32FC1"))
    np.testing.assert_allclose(last_inputs(running)["depth"], MM / 1000.0, rtol=1e-6)


REGISTERED = "only depth registered to the colour image is supported (RealSense: align_depth.enable:=true"


@pytest.mark.parametrize("depth_kwargs, kind, said", [
    ({"values": MM[:120, :160]}, "depth image is #x# but the colour image is #x#",
     "depth image is 160x120 but the colour image is 320x240: " + REGISTERED),
    ({"frame_id": "camera_depth_optical_frame"}, "is not the colour image frame_id",
     f"depth frame_id 'camera_depth_optical_frame' is not the colour image frame_id '{FRAME}': " + REGISTERED),
    ({"values": np.zeros((H, W), np.uint16)}, "entirely invalid", "depth (16UC1) is entirely invalid"),
    ({"values": MM.astype(np.float32), "encoding": "32FC1"}, "looks like millimetres",
     "it looks like millimetres (32FC1 must be metres; millimetres come as 16UC1)"),
])
def test_unusable_depth_is_rejected_and_the_frame_goes_on_rgb_only(running, depth_kwargs, kind, said):
    make = with_depth(running, **depth_kwargs)
    snapshot = running.send_until_rejected(make, kind)
    assert any(k.startswith("depth: ") and kind in k for k in snapshot["rejections_by_kind"])
    running.send_until_processed(make)
    assert last_inputs(running)["depth"] is None
    assert running.wait_for_log(said)


@pytest.mark.parametrize("depth_kwargs, reason", [
    ({"encoding": "mono16"}, "depth encoding '...' is not supported"),
    ({"step": W}, "step # is less than width"),
])
def test_depth_with_a_bad_header_is_rejected(running, depth_kwargs, reason):
    running.send_until_rejected(with_depth(running, **depth_kwargs), reason)


def test_rgb_only_after_depth_timeout_and_depth_again_when_it_returns(running):
    running.send_until_processed(with_depth(running))  # depth is arriving
    without = running.node.stats.snapshot(False)["without_depth"]
    started = time.monotonic()
    running.send_until_processed(rgb_only(running))
    assert time.monotonic() - started > 0.8  # frames waited for their depth until depth_timeout
    assert last_inputs(running)["depth"] is None
    assert running.wait_for_log(f"depth on {DEPTH} stopped arriving for 1 s")
    assert running.node.stats.snapshot(False)["without_depth"] > without

    def depth_state(array: DiagnosticArray) -> tuple[str, str]:
        (status,) = array.status
        return status.message, {kv.key: kv.value for kv in status.values}.get("depth", "")

    seen = len(running.diagnostics)
    assert running.client.spin_until(lambda: any(depth_state(a) == (f"no depth on {DEPTH}: RGB only", "lost: RGB only")
                                                 for a in running.diagnostics[seen:]), 3.0)
    running.send_until_processed(with_depth(running))  # may still go RGB-only: it can pair before its depth
    assert running.wait_for_log(f"depth is back on {DEPTH}")
    running.send_until_processed(with_depth(running))
    assert last_inputs(running)["depth"] is not None
    assert running.log_text().count("stopped arriving") == 1  # said once


def test_refine_parameter_sets_the_predictor_mode(running):
    for value, expected in (("on", True), ("off", False), ("auto", None)):
        assert running.client.set_params(refine=value)[0].successful
        running.send_until_processed(with_depth(running))
        assert last_inputs(running)["refine"] is expected, value
    (result,) = running.client.set_params(refine="always")
    assert not result.successful and "refine must be one of ['auto', 'on', 'off']" in result.reason


def imu_message(acceleration, frame_id: str) -> Imu:
    msg = Imu()
    msg.header.frame_id = frame_id
    msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = acceleration
    return msg


def test_up_vector_then_imu_give_the_upright_prior(running):
    assert running.client.set_params(up_vector=[0, -2, 0])[0].successful  # integers and any length work
    try:
        running.send_until_processed(with_depth(running))
        np.testing.assert_allclose(last_inputs(running)["up"], [0.0, -1.0, 0.0])
        (bad,) = running.client.set_params(up_vector=[0.0, 0.0, 0.0])
        assert not bad.successful and "not all zero" in bad.reason
        tilted = 9.81 * np.array([0.0, -np.cos(0.3), np.sin(0.3)])

        def with_imu(frame_id):
            make = with_depth(running)

            def publish():
                running.imu_pub.publish(imu_message(tilted, frame_id))
                return make()
            return publish

        # another frame and no tf2: the IMU is not used and the node says why
        running.send_until_processed(with_imu("camera_imu_optical_frame"))
        np.testing.assert_allclose(last_inputs(running)["up"], [0.0, -1.0, 0.0])
        assert running.wait_for_log("imu_frame_is_camera_optical:=true")
        assert running.client.set_params(imu_frame_is_camera_optical=True)[0].successful
        running.send_until_processed(with_imu("camera_imu_optical_frame"))
        np.testing.assert_allclose(last_inputs(running)["up"], tilted / 9.81, atol=1e-6)
        # an accelerating camera (|a| far from g) does not move the estimate
        running.imu_pub.publish(imu_message((0.0, -9.81, 6.0), "camera_imu_optical_frame"))
        running.send_until_processed(with_depth(running))
        np.testing.assert_allclose(last_inputs(running)["up"], tilted / 9.81, atol=1e-6)
    finally:
        running.client.set_params(up_vector=[], imu_frame_is_camera_optical=False)
    time.sleep(1.1)  # the IMU reading goes stale
    running.send_until_processed(with_depth(running))
    assert last_inputs(running)["up"] is None


def test_camera_height_gives_the_ground_plane_prior_only_with_an_up_direction(running):
    assert running.client.set_params(camera_height=1.25)[0].successful
    try:
        running.send_until_processed(rgb_only(running))
        assert last_inputs(running)["up"] is None and last_inputs(running)["camera_height"] is None
        assert running.wait_for_log("the ground-plane prior is off")  # said, not silently ignored
        assert running.client.set_params(up_vector=[0.0, -1.0, 0.0])[0].successful
        running.send_until_processed(rgb_only(running))
        assert last_inputs(running)["camera_height"] == pytest.approx(1.25)
        (bad,) = running.client.set_params(camera_height=-0.5)
        assert not bad.successful and "camera_height" in bad.reason
    finally:
        running.client.set_params(up_vector=[], camera_height=0.0)
    running.send_until_processed(rgb_only(running))
    assert last_inputs(running)["camera_height"] is None


def test_upright_prior_makes_the_demo_model_publish_upright_objects():
    """The real model: every published object's y axis (CAD up) is the given up direction."""
    from roca_core.predictor import Predictor

    up = np.array([0.25, -1.0, 0.3]) / np.linalg.norm([0.25, -1.0, 0.3])  # a pitched and rolled camera
    predictor = Predictor(device="cpu", score_threshold=0.0)
    node = InProcessNode(DOMAIN_ID, namespace="upright", predictor=predictor,
                         parameters={"up_vector": up.tolist(), "score_threshold": 0.0, "max_objects": 5})
    try:
        stamp, msg, _ = node.client.request_objects(timeout=60.0, frame_id=FRAME)
        valid = [o for o in msg.objects if o.valid]
        assert valid, "the model found no object"
        for o in valid:
            q = o.pose.orientation
            x, y, z, w = q.x, q.y, q.z, q.w
            column_y = np.array([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)])
            np.testing.assert_allclose(column_y, up, atol=1e-3)
    finally:
        node.close()
