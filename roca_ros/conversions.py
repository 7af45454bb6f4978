"""roca_core results -> roca_msgs messages.

Kept apart from the node so the mapping (quaternion order, class indices, URIs) is tested
on its own. Detections and databases are read by attribute only (duck typing), following
the ``roca_core.predictor.Detection`` and ``roca_core.data.cad_database.CadDatabase``
contracts.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
from geometry_msgs.msg import Pose, Vector3
from roca_msgs.msg import CadDatabaseInfo, CadModelInfo, ObjectAlignment, ObjectAlignmentArray

from roca_core.classes import CLASS_NAMES, Symmetry


def path_to_uri(path: Optional[str]) -> str:
    """Absolute ``file://`` URI of a local path; "" for no path."""
    if not path:
        return ""
    return _resolved_uri(str(path))


@functools.lru_cache(maxsize=4096)
def _resolved_uri(path: str) -> str:
    # Mesh paths come from the CAD database, a fixed set: resolving costs file-system calls
    # per object and frame (twice: objects and markers), so it is done once per path.
    return Path(path).expanduser().resolve().as_uri()


def pose_from_rt(rotation: np.ndarray, translation: np.ndarray,
                 quaternion_wxyz: Optional[np.ndarray] = None) -> Pose:
    """Rotation matrix (or given w, x, y, z quaternion) and translation -> geometry_msgs/Pose."""
    if quaternion_wxyz is None:
        from roca_core.geometry.rotations import matrix_to_quat_np
        quaternion_wxyz = matrix_to_quat_np(np.asarray(rotation, dtype=np.float64))
    q = np.asarray(quaternion_wxyz, dtype=np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    q = q / norm if norm > 0 and math.isfinite(norm) else np.array([1.0, 0.0, 0.0, 0.0])
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(v) for v in q)
    return pose


UriOf = Callable[[Optional[str]], str]  # mesh path -> published URI (roca_ros.mesh_uris.MeshUris)


def detection_to_msg(det: Any, uri_of: UriOf = path_to_uri) -> ObjectAlignment:
    """One ``roca_core.Detection`` -> roca_msgs/ObjectAlignment."""
    msg = ObjectAlignment()
    msg.class_name = str(det.class_name)
    msg.class_index = int(det.class_index)
    msg.score = float(det.score)
    box = np.asarray(det.box, dtype=np.float64).reshape(4)
    msg.x_min, msg.y_min, msg.x_max, msg.y_max = (float(v) for v in box)
    msg.pose = pose_from_rt(det.rotation, det.translation, getattr(det, "quaternion", None))
    scale = np.asarray(det.scale, dtype=np.float64).reshape(3)
    msg.scale = Vector3(x=float(scale[0]), y=float(scale[1]), z=float(scale[2]))
    msg.cad_id = det.cad_id or ""
    msg.mesh_uri = uri_of(det.mesh_path)
    distance = det.retrieval_distance
    msg.retrieval_distance = float("nan") if distance is None else float(distance)
    msg.valid = bool(det.valid)
    return msg


def detections_to_msg(detections: Iterable[Any], header: Any, inference_time_s: float,
                      uri_of: UriOf = path_to_uri) -> ObjectAlignmentArray:
    """Detections of one image -> ObjectAlignmentArray (sorted by decreasing score)."""
    msg = ObjectAlignmentArray()
    msg.header = header
    ordered = sorted(detections, key=lambda d: -float(d.score))
    msg.objects = [detection_to_msg(d, uri_of) for d in ordered]
    msg.inference_time = float(inference_time_s)
    return msg


def cad_database_to_msg(db: Any, database_path: str, header: Any = None,
                        uri_of: UriOf = path_to_uri) -> CadDatabaseInfo:
    """CadDatabase -> roca_msgs/CadDatabaseInfo (the latched description of what is searched)."""
    msg = CadDatabaseInfo()
    if header is not None:
        msg.header = header
    class_names = list(getattr(db, "class_names", None) or CLASS_NAMES)
    msg.database_path = str(database_path)
    msg.format_version = str(getattr(db, "FORMAT_VERSION", ""))
    msg.class_names = class_names
    msg.has_embeddings = getattr(db, "embeddings", None) is not None
    models = []
    for cad_id, class_name, symmetry, mesh_path in zip(
            db.ids, db.model_classes, db.symmetries, db.mesh_paths):
        model = CadModelInfo()
        model.cad_id = str(cad_id)
        model.class_name = str(class_name)
        model.class_index = class_names.index(class_name) if class_name in class_names else -1
        model.symmetry = int(Symmetry.from_tag(symmetry))
        model.mesh_uri = uri_of(mesh_path)
        models.append(model)
    msg.models = models
    return msg
