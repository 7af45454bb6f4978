"""Detections -> MarkerArray and roca_msgs: pose, scale, URIs, colours, labels."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("visualization_msgs.msg")
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from roca_core.classes import CLASS_NAMES, Symmetry  # noqa: E402
from roca_core.geometry.rotations import quat_to_matrix_np  # noqa: E402
from roca_ros.conversions import (  # noqa: E402
    cad_database_to_msg, detection_to_msg, detections_to_msg, path_to_uri,
)
from roca_ros.markers import (  # noqa: E402
    build_marker_array, class_colour, duration_from_seconds, marker_mesh_paths,
)


@dataclass
class FakeDetection:
    """The fields of roca_core.predictor.Detection the ROS side reads."""
    class_name: str = "chair"
    class_index: int = 5
    score: float = 0.9
    box: np.ndarray = field(default_factory=lambda: np.array([10.0, 20.0, 110.0, 220.0]))
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    quaternion: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    translation: np.ndarray = field(default_factory=lambda: np.array([0.1, 0.2, 2.0]))
    scale: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.9, 0.6]))
    cad_id: str | None = None
    mesh_path: str | None = None
    retrieval_distance: float = float("nan")
    valid: bool = True


def rotated_detection(quat, **kwargs):
    q = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return FakeDetection(rotation=quat_to_matrix_np(q), quaternion=q, **kwargs)


def header(frame="camera", sec=12, nanosec=345):
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def test_marker_array_starts_with_deleteall_then_mesh_and_label_per_object(tmp_path):
    mesh = tmp_path / "chair 1.obj"
    mesh.write_text("v 0 0 0\n")
    dets = [rotated_detection([0.9, 0.1, -0.3, 0.2], mesh_path=str(mesh), cad_id="chair_1"),
            FakeDetection(class_name="table", class_index=8, score=0.61)]
    array = build_marker_array(dets, header(), namespace="roca", lifetime_s=1.5)
    first, *rest = array.markers
    assert first.action == Marker.DELETEALL and first.ns == "roca"
    assert len(rest) == 4
    mesh_marker, label, box_marker, label2 = rest
    assert mesh_marker.type == Marker.MESH_RESOURCE
    assert mesh_marker.mesh_resource.startswith("file:///")
    assert marker_mesh_paths(array) == [str(mesh.resolve())]
    # Pose: quaternion in ROS (x, y, z, w) order of the detection's (w, x, y, z).
    q = dets[0].quaternion
    o = mesh_marker.pose.orientation
    np.testing.assert_allclose([o.w, o.x, o.y, o.z], q, atol=1e-9)
    np.testing.assert_allclose([mesh_marker.pose.position.x, mesh_marker.pose.position.y,
                                mesh_marker.pose.position.z], dets[0].translation)
    np.testing.assert_allclose([mesh_marker.scale.x, mesh_marker.scale.y, mesh_marker.scale.z], dets[0].scale)
    assert (mesh_marker.color.r, mesh_marker.color.g, mesh_marker.color.b) == pytest.approx(class_colour(5))
    assert mesh_marker.lifetime.sec == 1 and mesh_marker.lifetime.nanosec == 500_000_000
    assert label.type == Marker.TEXT_VIEW_FACING and label.text == "chair 0.90"
    # No mesh retrieved: the canonical box, coloured by class.
    assert box_marker.type == Marker.CUBE
    assert (box_marker.color.r, box_marker.color.g) == pytest.approx(class_colour(8)[:2])
    assert label2.text == "table 0.61"
    ids = [m.id for m in rest]
    assert len(set(ids)) == len(ids)
    for m in array.markers:
        assert m.header.frame_id == "camera" and m.header.stamp.sec == 12 and m.ns == "roca"


def test_label_sits_above_the_top_face_along_canonical_up():
    for quat in ([1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.7, 0.2, -0.5, 0.3]):
        det = rotated_detection(quat)
        label = build_marker_array([det], header()).markers[2]
        offset = np.array([label.pose.position.x, label.pose.position.y, label.pose.position.z]) - det.translation
        up = det.rotation @ np.array([0.0, 1.0, 0.0])  # canonical up in the camera frame
        along = offset @ up
        assert along > det.scale[1] / 2  # beyond the top face
        np.testing.assert_allclose(offset, along * up, atol=1e-9)  # straight above the centre


def test_empty_detections_only_clear():
    array = build_marker_array([], header())
    assert [m.action for m in array.markers] == [Marker.DELETEALL]


def test_non_finite_pose_is_skipped():
    bad = FakeDetection(translation=np.array([np.nan, 0.0, 1.0]))
    array = build_marker_array([bad, FakeDetection()], header())
    assert len(array.markers) == 3


def test_class_colours_are_distinct_in_unit_range_and_match_the_overlay_palette():
    from roca_core.visualize import class_color

    colours = [class_colour(i) for i in range(len(CLASS_NAMES))]
    assert len(set(colours)) == len(CLASS_NAMES)
    assert all(0.0 <= c <= 1.0 for colour in colours for c in colour)
    assert [tuple(round(c * 255) for c in colour) for colour in colours] == [
        class_color(i) for i in range(len(CLASS_NAMES))]


def test_duration_from_seconds():
    d = duration_from_seconds(2.25)
    assert (d.sec, d.nanosec) == (2, 250_000_000)
    assert (duration_from_seconds(0).sec, duration_from_seconds(-1).nanosec) == (0, 0)
    d = duration_from_seconds(2.9999999999)
    assert (d.sec, d.nanosec) == (3, 0)


def test_detection_to_msg_fields(tmp_path):
    mesh = tmp_path / "m.obj"
    det = rotated_detection([0.5, 0.5, 0.5, 0.5], mesh_path=str(mesh), cad_id="abc",
                            retrieval_distance=0.25, valid=False)
    msg = detection_to_msg(det)
    assert (msg.class_name, msg.class_index, msg.cad_id, msg.valid) == ("chair", 5, "abc", False)
    assert msg.score == pytest.approx(0.9)
    assert (msg.x_min, msg.y_min, msg.x_max, msg.y_max) == (10.0, 20.0, 110.0, 220.0)
    assert (msg.pose.orientation.w, msg.pose.orientation.x) == pytest.approx((0.5, 0.5))
    assert (msg.scale.x, msg.scale.y, msg.scale.z) == pytest.approx((0.5, 0.9, 0.6))
    assert msg.mesh_uri == mesh.resolve().as_uri()
    assert msg.retrieval_distance == pytest.approx(0.25)


def test_detection_without_retrieval_and_quaternion_from_rotation():
    det = rotated_detection([0.8, 0.0, 0.6, 0.0])
    det.quaternion = None
    msg = detection_to_msg(det)
    assert msg.cad_id == "" and msg.mesh_uri == "" and math.isnan(msg.retrieval_distance)
    q = [msg.pose.orientation.w, msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z]
    np.testing.assert_allclose(quat_to_matrix_np(np.array(q)), det.rotation, atol=1e-6)


def test_array_msg_copies_header_and_sorts_by_score():
    dets = [FakeDetection(score=0.55), FakeDetection(score=0.95), FakeDetection(score=0.7)]
    msg = detections_to_msg(dets, header("cam_optical", 7, 9), 0.123)
    assert msg.header.frame_id == "cam_optical" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (7, 9)
    assert [round(o.score, 2) for o in msg.objects] == [0.95, 0.7, 0.55]
    assert msg.inference_time == pytest.approx(0.123)


@dataclass
class FakeDatabase:
    ids: list
    model_classes: list
    symmetries: list
    mesh_paths: list
    class_names: tuple = CLASS_NAMES
    embeddings: object = None
    FORMAT_VERSION: str = "1"


def test_cad_database_to_msg(tmp_path):
    db = FakeDatabase(["a", "b"], ["chair", "table"], [Symmetry.NONE, Symmetry.ROTATE_UP_4],
                      [str(tmp_path / "a.obj"), str(tmp_path / "b.obj")], embeddings=np.zeros((2, 4)))
    msg = cad_database_to_msg(db, "/data/db.npz", header())
    assert msg.database_path == "/data/db.npz" and msg.format_version == "1" and msg.has_embeddings
    assert list(msg.class_names) == list(CLASS_NAMES)
    assert [(m.cad_id, m.class_name, m.class_index, m.symmetry) for m in msg.models] == [
        ("a", "chair", 5, 0), ("b", "table", 8, 4)]
    assert msg.models[1].mesh_uri == (tmp_path / "b.obj").resolve().as_uri()
    assert not cad_database_to_msg(FakeDatabase([], [], [], []), "").has_embeddings


def test_path_to_uri_quotes_and_empty():
    assert path_to_uri(None) == "" and path_to_uri("") == ""
    assert path_to_uri("/tmp/a b.obj") == "file:///tmp/a%20b.obj"

