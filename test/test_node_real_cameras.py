"""roca_node fed the way real camera drivers and bags feed it (issue #12).

Each test publishes messages shaped like a driver's (encoding, CameraInfo, stamps, QoS) over
DDS to a running RocaNode whose model is a recording stand-in (:mod:`inprocess_node`), and
checks what reaches the model (image, intrinsics) or what the node says and publishes.

Network safety: localhost discovery only, and a ROS domain of this module's own.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("roca_msgs.msg")
cv2 = pytest.importorskip("cv2")
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from driver_images import DRIVER_ENCODINGS, driver_image, patch_image, patch_interior  # noqa: E402
from inprocess_node import InProcessNode  # noqa: E402
from ros_helpers import private_domain_id  # noqa: E402
from roca_ros.image_conversion import array_to_image_msg, rgb_to_image_msg  # noqa: E402

pytestmark = [pytest.mark.ros]

DOMAIN_ID = private_domain_id()
W, H = 320, 240
FRAME = "camera_color_optical_frame"
# A 320x240 camera calibrated by camera_calibration: K and D of the raw image, P of the rectified one.
K = np.array([[262.0, 0.0, 161.2], [0.0, 259.5, 118.9], [0.0, 0.0, 1.0]])
D = [-0.29, 0.085, 0.0011, -0.0006, 0.0]
P3 = np.array([[238.0, 0.0, 163.0], [0.0, 236.0, 117.0], [0.0, 0.0, 1.0]])
DRIVER_ENCODINGS_SORTED = sorted(DRIVER_ENCODINGS)
RAW_TOPIC = "/camera/color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"


def driver_camera_info(stamp, distortion_model: str = "plumb_bob", d=D, k=K, p3=P3,
                       frame_id: str = FRAME) -> CameraInfo:
    info = CameraInfo()
    info.header.stamp, info.header.frame_id = stamp, frame_id
    info.width, info.height = W, H
    info.distortion_model = distortion_model
    info.d = [float(v) for v in d]
    info.k = np.asarray(k, dtype=float).reshape(-1).tolist()
    info.r = np.eye(3).reshape(-1).tolist()
    p = np.zeros((3, 4))
    p[:, :3] = p3
    info.p = p.reshape(-1).tolist()
    return info


@pytest.fixture(scope="module")
def running():
    """The node listening on a driver's raw colour topic (remapped), rectified:=auto."""
    node = InProcessNode(DOMAIN_ID, remaps=[f"image:={RAW_TOPIC}", f"camera_info:={INFO_TOPIC}"],
                         client_image_topic=RAW_TOPIC, client_info_topic=INFO_TOPIC)
    yield node
    node.close()


def frame_maker(running, rgb: np.ndarray, encoding_msg=None, **info_kwargs):
    """() -> (Image, CameraInfo) with a fresh shared stamp, as a driver publishes them."""
    def make():
        stamp = running.client.new_stamp()
        image = rgb_to_image_msg(rgb) if encoding_msg is None else encoding_msg()
        image.header.stamp, image.header.frame_id = stamp, FRAME
        return image, driver_camera_info(stamp, **info_kwargs)
    return make


def blob_image(u: float, v: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    blob = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5 ** 2))
    return np.repeat((blob * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def centroid(gray: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
    g = np.where(gray > 0.3 * gray.max(), gray.astype(float), 0.0)
    return np.array([(xx * g).sum(), (yy * g).sum()]) / g.sum()


# ---------------------------------------------------------------------------- camera model


def test_raw_distorted_image_is_undistorted_and_the_model_gets_p(running):
    point = np.array([[-0.5, 0.0, 1.6]])  # off centre: undistortion and P move it 7 px
    raw_uv, _ = cv2.projectPoints(point, np.zeros(3), np.zeros(3), K, np.array(D))
    raw_uv = raw_uv.reshape(2)
    expected = (P3 @ point[0])[:2] / point[0, 2]
    assert np.hypot(*(expected - raw_uv)) > 4
    rgb, K_model = running.send_until_processed(frame_maker(running, blob_image(*raw_uv)))
    np.testing.assert_allclose(K_model, P3)
    assert rgb.shape == (H, W, 3)
    found = centroid(rgb[:, :, 0])
    assert np.hypot(*(found - expected)) < 0.5, (found, expected)
    assert running.wait_for_log("camera model: intrinsics from P, undistorted from plumb_bob")


def test_rectified_true_uses_p_and_leaves_the_image_alone(running):
    assert running.client.set_params(rectified="true")[0].successful
    try:
        rgb_in = blob_image(100.0, 80.0)
        rgb, K_model = running.send_until_processed(frame_maker(running, rgb_in))
        np.testing.assert_allclose(K_model, P3)
        np.testing.assert_array_equal(rgb, rgb_in)
        (result,) = running.client.set_params(rectified="maybe")
        assert not result.successful and "rectified must be one of ['auto', 'true', 'false']" in result.reason
    finally:
        running.client.set_params(rectified="auto")


def test_raw_image_without_distortion_uses_k(running):
    rgb_in = blob_image(60.0, 50.0)
    rgb, K_model = running.send_until_processed(frame_maker(running, rgb_in, d=[0.0] * 5))
    np.testing.assert_allclose(K_model, K)
    np.testing.assert_array_equal(rgb, rgb_in)


def test_unknown_distortion_model_is_rejected_with_a_reason(running):
    counters = running.send_until_rejected(
        frame_maker(running, blob_image(10, 10), distortion_model="inverse_brown_conrady"),
        "distortion model")
    assert counters["rejected"] >= 1
    assert running.wait_for_log("distortion model 'inverse_brown_conrady' of a raw image is not supported")


def test_binned_camera_info_keeps_working(running):
    """A driver binning 2x2 on a 640x480 sensor: full-resolution K, D, P with binning_x = binning_y = 2."""
    def make():
        stamp = running.client.new_stamp()
        image = rgb_to_image_msg(blob_image(50.0, 40.0))
        image.header.stamp, image.header.frame_id = stamp, FRAME
        info = driver_camera_info(stamp, k=K * [[2], [2], [1]], p3=P3 * [[2], [2], [1]])
        info.width, info.height, info.binning_x, info.binning_y = 2 * W, 2 * H, 2, 2
        return image, info
    _, K_model = running.send_until_processed(make)
    np.testing.assert_allclose(K_model, P3, atol=1e-9)


# ---------------------------------------------------------------------------- driver encodings


@pytest.mark.parametrize("encoding", ["yuv422_yuy2", "yuv422", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8",
                                      "bayer_grbg8", "mono16", "rgb16", "bgr16", "8UC1", "8UC3", "8UC4"])
def test_driver_encodings_reach_the_model_as_the_known_rgb_image(running, encoding):
    raw, expected, tolerance = driver_image(encoding, scale=20)
    assert raw.shape[:2] == (H, W)
    rgb, _ = running.send_until_processed(
        frame_maker(running, None, encoding_msg=lambda: array_to_image_msg(raw, encoding), d=[0.0] * 5))
    interior = patch_interior(scale=20)
    assert np.abs(rgb[interior].astype(int) - expected[interior]).max() <= tolerance


def test_unsupported_encoding_warning_lists_the_supported_ones(running):
    def nv21():
        msg = array_to_image_msg(np.zeros((H, W, 3), np.uint8), "rgb8")
        msg.encoding = "nv21"
        return msg
    running.send_until_rejected(frame_maker(running, None, encoding_msg=nv21, d=[0.0] * 5), "unsupported")
    assert running.wait_for_log("unsupported image encoding 'nv21'; supported: " + ", ".join(DRIVER_ENCODINGS_SORTED))


# ---------------------------------------------------------------------------- compressed transport


@pytest.fixture(scope="module")
def compressed():
    """A second node, image_transport:=compressed, on the same driver topics (a bag's image_raw/compressed)."""
    node = InProcessNode(DOMAIN_ID, namespace="roca_compressed", parameters={"image_transport": "compressed"},
                         remaps=[f"image:={RAW_TOPIC}", f"camera_info:={INFO_TOPIC}"],
                         client_image_topic=RAW_TOPIC, client_info_topic=INFO_TOPIC)
    node.compressed_pub = node.client.node.create_publisher(CompressedImage, RAW_TOPIC + "/compressed",
                                                            qos_profile_sensor_data)
    yield node
    node.close()


def compressed_frame_maker(node, payload: bytes, fmt: str):
    def make():
        stamp = node.client.new_stamp()
        msg = CompressedImage(format=fmt, data=payload)
        msg.header.stamp, msg.header.frame_id = stamp, FRAME
        node.compressed_pub.publish(msg)
        return None, driver_camera_info(stamp, d=[0.0] * 5)
    return make


def pil_encoded(rgb: np.ndarray, fmt: str) -> bytes:
    import io

    from PIL import Image as PilImage
    buffer = io.BytesIO()
    PilImage.fromarray(rgb).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_compressed_stream_is_decoded(compressed, fmt):
    rgb_in = patch_image(scale=20)
    assert compressed.wait_for_log(f"listening on {RAW_TOPIC}/compressed")
    rgb, K_model = compressed.send_until_processed(
        compressed_frame_maker(compressed, pil_encoded(rgb_in, fmt), f"rgb8; {fmt.lower()} compressed bgr8"))
    interior = patch_interior(scale=20)
    assert np.abs(rgb[interior].astype(int) - rgb_in[interior]).max() <= (0 if fmt == "PNG" else 6)
    np.testing.assert_allclose(K_model, K)


def test_corrupt_compressed_payload_is_rejected_with_a_reason(compressed):
    truncated = pil_encoded(patch_image(scale=20), "JPEG")[:-500]
    compressed.send_until_rejected(compressed_frame_maker(compressed, truncated, "jpeg"), "truncated")
    assert compressed.wait_for_log("compressed JPEG is truncated (no end-of-image marker)")


# ---------------------------------------------------------------------------- pairing


def test_camera_info_with_unrelated_stamps_warns_in_synced_mode_and_pairs_in_latest_mode(running):
    """A static camera_info publisher (one message, its own stamp) against a 20 Hz camera."""
    from rclpy.logging import LoggingSeverity
    running.node.get_logger().set_level(LoggingSeverity.DEBUG)  # the periodic counters line is DEBUG
    client, calls_before = running.client, len(running.predictor.calls)
    static = driver_camera_info(running.client.new_stamp(), d=[0.0] * 5)
    static.header.stamp.sec -= 100  # published long ago
    for _ in range(3):
        client.info_pub.publish(static)
        client.spin_until(lambda: False, 0.1)
    image = rgb_to_image_msg(blob_image(30, 30))
    image.header.frame_id = FRAME
    for _ in range(20):
        image.header.stamp = client.new_stamp()
        client.image_pub.publish(image)
        client.spin_until(lambda: False, 0.05)
    assert running.wait_for_log("go unpaired"), running.log_text()
    warning = next(m.msg for m in running.logs if "go unpaired" in m.msg)
    assert f"images on {RAW_TOPIC} go unpaired" in warning
    assert f"the newest camera_info on {INFO_TOPIC} is stamped -10" in warning and "camera_info_mode:=latest" in warning
    assert len(running.predictor.calls) == calls_before
    assert running.client.spin_until(
        lambda: any("unpaired=" in m.msg and "unpaired=0 " not in m.msg for m in running.logs), 3.0), \
        "the periodic log line does not show the unpaired images"
    running.node.get_logger().set_level(LoggingSeverity.INFO)

    assert running.client.set_params(camera_info_mode="latest")[0].successful
    try:
        def image_only():
            image.header.stamp = client.new_stamp()
            return image, None
        _, K_model = running.send_until_processed(image_only)
        np.testing.assert_allclose(K_model, K)
        # The newest camera_info of another frame is not used: rejected with the reason.
        other = driver_camera_info(client.new_stamp(), frame_id="camera_depth_optical_frame", d=[0.0] * 5)
        other.header.stamp.sec -= 100
        client.info_pub.publish(other)

        def other_frame_image():
            image.header.stamp, image.header.frame_id = client.new_stamp(), "zed_left_camera_frame_optical"
            return image, None
        running.send_until_rejected(other_frame_image, "frame ids differ")
    finally:
        image.header.frame_id = FRAME
        running.client.set_params(camera_info_mode="synced")


# ---------------------------------------------------------------------------- uncalibrated cameras


def test_all_zero_k_is_rejected_by_default_and_uses_the_fallback_fov_when_set(running):
    """usb_cam / v4l2_camera without a calibration file: camera_info_manager's all-zero K, D, P."""
    def uncalibrated():
        stamp = running.client.new_stamp()
        image = rgb_to_image_msg(blob_image(40, 40))
        image.header.stamp, image.header.frame_id = stamp, FRAME
        return image, driver_camera_info(stamp, d=[], k=np.zeros((3, 3)), p3=np.zeros((3, 3)), distortion_model="")
    running.send_until_rejected(uncalibrated, "all zeros")
    assert running.wait_for_log("fallback_hfov_deg:=DEGREES assumes a field of view instead")
    assert running.client.set_params(fallback_hfov_deg=70.0)[0].successful
    try:
        _, K_model = running.send_until_processed(uncalibrated)
        f = (W / 2) / np.tan(np.radians(35.0))
        np.testing.assert_allclose(K_model, [[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
        assert running.wait_for_log("UNCALIBRATED CAMERA")
        warning = next(m for m in running.logs if "UNCALIBRATED CAMERA" in m.msg)
        assert warning.level == 30 and "70 degree horizontal field of view" in warning.msg  # WARN
        (result,) = running.client.set_params(fallback_hfov_deg=180.0)
        assert not result.successful
    finally:
        running.client.set_params(fallback_hfov_deg=0.0)


# ---------------------------------------------------------------------------- frames and markers


def fake_detection(class_name: str = "chair", class_index: int = 1, score: float = 0.9):
    """What roca_core.Predictor returns, for one object 2 m in front of the camera."""
    from types import SimpleNamespace
    return SimpleNamespace(class_name=class_name, class_index=class_index, score=score,
                           box=np.array([100.0, 80.0, 200.0, 180.0]), mask=np.zeros((H, W), bool),
                           rotation=np.eye(3), quaternion=np.array([1.0, 0.0, 0.0, 0.0]),
                           translation=np.array([0.1, 0.2, 2.0]), scale=np.array([0.5, 0.8, 0.5]),
                           cad_id=None, mesh_path=None, retrieval_distance=float("nan"), valid=True)


def test_empty_frame_id_is_rejected_and_camera_frame_id_names_the_results(running):
    def frameless():
        image, info = frame_maker(running, blob_image(20, 20), d=[0.0] * 5)()
        image.header.frame_id = info.header.frame_id = ""
        return image, info
    running.send_until_rejected(frameless, "frame_id is empty")
    assert running.wait_for_log("image header.frame_id is empty")
    client = running.client
    assert client.set_params(camera_frame_id="camera_color_optical_frame_override")[0].successful
    running.predictor.detections = [fake_detection()]
    try:
        running.send_until_processed(frameless)
        assert client.spin_until(lambda: any(m.header.frame_id == "camera_color_optical_frame_override"
                                             for m in client.objects.values()), 5.0)
        stamp = next(s for s, m in client.objects.items() if m.header.frame_id.endswith("override"))
        assert client.spin_until(lambda: stamp in client.markers, 5.0)
        assert {m.header.frame_id for m in client.markers[stamp].markers} == {"camera_color_optical_frame_override"}
    finally:
        running.predictor.detections = []
        client.set_params(camera_frame_id="")


def test_markers_are_cleared_when_switched_off_and_on_shutdown(tmp_path):
    from visualization_msgs.msg import Marker, MarkerArray

    node = InProcessNode(DOMAIN_ID, namespace="roca_markers")
    arrays: list[MarkerArray] = []
    node.client.node.create_subscription(MarkerArray, "/roca_markers/markers", arrays.append, 50)
    node.predictor.detections = [fake_detection()]
    try:
        node.send_until_processed(lambda: node.client.frame(frame_id=FRAME))
        assert node.client.spin_until(lambda: any(len(a.markers) > 1 for a in arrays), 5.0)
        assert node.client.set_params(publish_markers=False)[0].successful
        assert node.client.spin_until(lambda: len(arrays[-1].markers) == 1, 5.0)
        (clear,) = arrays[-1].markers
        assert clear.action == Marker.DELETEALL and clear.header.frame_id == FRAME
        count = len(arrays)
        node.send_until_processed(lambda: node.client.frame(frame_id=FRAME))
        node.client.spin_until(lambda: False, 0.5)
        assert len(arrays) == count, "markers published while switched off"

        assert node.client.set_params(publish_markers=True)[0].successful
        node.send_until_processed(lambda: node.client.frame(frame_id=FRAME))
        assert node.client.spin_until(lambda: len(arrays) > count and len(arrays[-1].markers) > 1, 5.0)
        count = len(arrays)
        node.node.close_io()  # what shutdown does first
        assert node.client.spin_until(lambda: len(arrays) > count, 5.0), "no DELETEALL on shutdown"
        assert [m.action for m in arrays[-1].markers] == [Marker.DELETEALL]
    finally:
        node.close()


# ---------------------------------------------------------------------------- parameters


def test_ranges_are_described_and_classes_filter_the_results(running):
    client = running.client
    names = ["score_threshold", "max_objects", "sync_slop", "classes"]
    described = {d.name: d for d in client.wait_future(client.params.describe_parameters(names)).descriptors}
    (score_range,) = described["score_threshold"].floating_point_range
    assert (score_range.from_value, score_range.to_value) == (0.0, 1.0)
    (objects_range,) = described["max_objects"].integer_range
    assert (objects_range.from_value, objects_range.to_value, objects_range.step) == (1, 1000, 1)
    assert described["sync_slop"].floating_point_range[0].to_value == 10.0
    assert client.get_param("classes") == []  # every class

    running.predictor.detections = [fake_detection("chair", 1, 0.9), fake_detection("table", 3, 0.8),
                                    fake_detection("cabinet", 2, 0.7)]
    try:
        (result,) = client.set_params(classes=["table", "sofa_bed"])
        assert not result.successful and "unknown classes ['sofa_bed']" in result.reason
        assert client.set_params(classes=["table", "cabinet"])[0].successful
        before = max(client.objects, default=0)
        running.send_until_processed(frame_maker(running, blob_image(5, 5), d=[0.0] * 5))
        assert client.spin_until(lambda: any(s > before and m.objects for s, m in client.objects.items()), 5.0)
        newest = next(m for s, m in sorted(client.objects.items()) if s > before and m.objects)
        assert [o.class_name for o in newest.objects] == ["table", "cabinet"]
    finally:
        running.predictor.detections = []
        from rclpy.parameter import Parameter
        client.wait_future(client.params.set_parameters([Parameter("classes", Parameter.Type.STRING_ARRAY, [])]))


def test_cad_database_parameter_follows_a_reload(running):
    from roca_msgs.srv import ReloadCadDatabase

    client = running.client
    assert client.get_param("cad_database") == ""
    (result,) = client.set_params(cad_database="/elsewhere")
    assert not result.successful and "reload_cad_database service" in result.reason
    path = running.node._cad_db_path  # the embedded library's folder, named explicitly
    assert client.reload.wait_for_service(timeout_sec=10.0)
    response = client.wait_future(client.reload.call_async(ReloadCadDatabase.Request(database_path=path)), 60.0)
    assert response.success, response.message
    assert client.get_param("cad_database") == path


# ---------------------------------------------------------------------------- meshes for RViz elsewhere


def test_mesh_uri_prefix_and_triangle_markers_through_the_node(running):
    from visualization_msgs.msg import Marker

    client, db = running.client, running.node._cad_db
    chair = db.mesh_paths[db.model_classes.index("chair")]
    relative = Path(chair).resolve().relative_to(Path(os.path.commonpath([os.path.dirname(
        str(Path(p).resolve())) for p in db.mesh_paths])))
    (result,) = client.set_params(mesh_uri_prefix="roca_cad/meshes")
    assert not result.successful and "needs a URI prefix with a scheme" in result.reason
    databases = len(client.databases)
    results = client.set_params(mesh_uri_prefix="package://roca_cad/meshes", marker_mesh_mode="triangles")
    assert all(r.successful for r in results), [r.reason for r in results]
    running.predictor.detections = [fake_detection()]
    running.predictor.detections[0].mesh_path = chair
    try:
        running.send_until_processed(frame_maker(running, blob_image(5, 5), d=[0.0] * 5))
        expected = f"package://roca_cad/meshes/{relative.as_posix()}"
        assert client.spin_until(lambda: any(
            m.objects and m.objects[0].mesh_uri == expected for m in client.objects.values()), 5.0)
        stamp = next(s for s, m in client.objects.items() if m.objects and m.objects[0].mesh_uri == expected)
        assert client.spin_until(lambda: stamp in client.markers, 5.0)
        body = client.markers[stamp].markers[1]
        assert body.type == Marker.TRIANGLE_LIST and len(body.points) % 3 == 0 and body.points
        # The latched database description is republished with the new URIs.
        assert client.spin_until(lambda: len(client.databases) > databases, 5.0)
        assert all(m.mesh_uri.startswith("package://roca_cad/meshes/") for m in client.databases[-1].models)
    finally:
        running.predictor.detections = []
        client.set_params(mesh_uri_prefix="", marker_mesh_mode="resource")


# ---------------------------------------------------------------------------- diagnostics


def test_diagnostics_report_rates_then_stale_input_and_the_discovery_range_is_logged(running):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    assert running.wait_for_log("DDS discovery range: LOCALHOST")
    name = "/roca/roca_node: input and inference"
    statuses: list = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        statuses.extend(s for s in msg.status if s.name == name)
    running.client.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    make = frame_maker(running, blob_image(5, 5), d=[0.0] * 5)

    def values(status) -> dict:
        return {kv.key: kv.value for kv in status.values}

    def receiving(status) -> bool:
        return status.level == DiagnosticStatus.OK and float(values(status)["input rate (Hz)"]) > 0
    for _ in range(8):  # a 1 s window with frames in and out, none rejected
        running.send_until_processed(make)
        if any(receiving(s) for s in statuses):
            break
    assert running.client.spin_until(lambda: any(receiving(s) for s in statuses), 2.0), \
        [(s.level, s.message) for s in statuses]
    ok = values(next(s for s in statuses if receiving(s)))
    assert ok["image topic"] == RAW_TOPIC
    assert ok["camera_info topic"] == INFO_TOPIC and ok["intrinsics from"]
    # No more frames: stale after 2 s.
    assert running.client.spin_until(lambda: statuses[-1].level == DiagnosticStatus.WARN, 5.0)
    assert "input stale" in statuses[-1].message
