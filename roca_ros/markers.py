"""RViz markers of the aligned CAD models.

Each array starts with a DELETEALL for the node's marker namespace so objects of the
previous frame disappear even when fewer are detected now; then, per object, the
retrieved CAD mesh (pose and anisotropic scale exactly as ``p_cam = R (s * p_cad) + t``) and
a text label "class score" above it. Without a retrieved mesh the object is drawn as its
scaled canonical box (the CAD frame's [-0.5, 0.5]^3 cube).

The mesh goes as a MESH_RESOURCE (a URI RViz loads itself: ``roca_ros.mesh_uris``) or, with
``mesh_mode="triangles"``, as a TRIANGLE_LIST carrying the triangles in the message, which
RViz shows on any machine without access to the file; meshes of more than
:data:`MAX_MARKER_TRIANGLES` triangles stay MESH_RESOURCE (a message per frame must stay small).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Optional

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from roca_core.visualize import class_color
from roca_ros.conversions import path_to_uri, pose_from_rt

MARKER_NAMESPACE = "roca"
MARKER_ALPHA = 0.85
TEXT_HEIGHT_M = 0.08
MESH_MODES: tuple[str, ...] = ("resource", "triangles")
MAX_MARKER_TRIANGLES = 5000  # ~360 kB of points per object and frame


@lru_cache(maxsize=512)
def mesh_triangles(path: str) -> Optional[tuple[Point, ...]]:
    """The mesh's triangles as TRIANGLE_LIST points (CAD frame), or None if too large or unreadable."""
    try:
        import trimesh
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception:  # noqa: BLE001 - any unreadable mesh falls back to MESH_RESOURCE
        return None
    faces = np.asarray(mesh.faces)
    if len(faces) == 0 or len(faces) > MAX_MARKER_TRIANGLES:
        return None
    corners = np.asarray(mesh.vertices, dtype=np.float64)[faces.reshape(-1)]
    return tuple(Point(x=float(x), y=float(y), z=float(z)) for x, y, z in corners)


def class_colour(class_index: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of a class: the palette of roca_core.visualize (same in overlays and GLBs)."""
    r, g, b = class_color(class_index)
    return r / 255.0, g / 255.0, b / 255.0


def duration_from_seconds(seconds: float) -> Duration:
    total_ns = int(round(max(float(seconds), 0.0) * 1e9))
    sec, nanosec = divmod(total_ns, 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


def _colour(class_index: int, alpha: float) -> ColorRGBA:
    r, g, b = class_colour(class_index)
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(alpha))


def label_position(rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Camera-frame point just above the object's top face (canonical +y is up)."""
    top = np.array([0.0, 0.5 + TEXT_HEIGHT_M / max(float(scale[1]), 1e-3), 0.0]) * scale
    return np.asarray(rotation, dtype=np.float64) @ top + np.asarray(translation, dtype=np.float64)


def build_marker_array(detections: Iterable[Any], header: Any, namespace: str = MARKER_NAMESPACE,
                       lifetime_s: float = 0.0, alpha: float = MARKER_ALPHA, uri_of=path_to_uri,
                       mesh_mode: str = "resource") -> MarkerArray:
    """Detections -> MarkerArray (DELETEALL first; ids 2i mesh, 2i+1 label).

    ``uri_of`` maps a mesh path to its URI; ``mesh_mode`` is "resource" or "triangles".
    """
    lifetime = duration_from_seconds(lifetime_s)
    clear = Marker()
    clear.header = header
    clear.ns = namespace
    clear.action = Marker.DELETEALL
    markers = [clear]
    for i, det in enumerate(detections):
        rotation = np.asarray(det.rotation, dtype=np.float64).reshape(3, 3)
        translation = np.asarray(det.translation, dtype=np.float64).reshape(3)
        scale = np.abs(np.asarray(det.scale, dtype=np.float64).reshape(3))
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))
                and np.all(np.isfinite(scale))):
            continue  # nothing sensible to draw
        pose = pose_from_rt(rotation, translation, getattr(det, "quaternion", None))

        body = Marker()
        body.header = header
        body.ns = namespace
        body.id = 2 * i
        body.action = Marker.ADD
        body.pose = pose
        body.scale.x, body.scale.y, body.scale.z = (float(max(v, 1e-4)) for v in scale)
        body.color = _colour(det.class_index, alpha)
        body.lifetime = lifetime
        mesh_path = getattr(det, "mesh_path", None)
        mesh_uri = uri_of(mesh_path)
        triangles = mesh_triangles(str(mesh_path)) if mesh_path and mesh_mode == "triangles" else None
        if triangles is not None:
            body.type = Marker.TRIANGLE_LIST
            body.points = list(triangles)
        elif mesh_uri:
            body.type = Marker.MESH_RESOURCE
            body.mesh_resource = mesh_uri
            body.mesh_use_embedded_materials = False
        else:
            body.type = Marker.CUBE
        markers.append(body)

        label = Marker()
        label.header = header
        label.ns = namespace
        label.id = 2 * i + 1
        label.action = Marker.ADD
        label.type = Marker.TEXT_VIEW_FACING
        position = label_position(rotation, translation, scale)
        label.pose.position.x, label.pose.position.y, label.pose.position.z = (float(v) for v in position)
        label.pose.orientation.w = 1.0
        label.scale.z = TEXT_HEIGHT_M
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label.text = f"{det.class_name} {float(det.score):.2f}"
        label.lifetime = lifetime
        markers.append(label)
    return MarkerArray(markers=markers)


def delete_all_markers(header: Any, namespace: str = MARKER_NAMESPACE) -> MarkerArray:
    """A MarkerArray that only clears the namespace (e.g. on shutdown)."""
    return build_marker_array([], header, namespace)


def marker_mesh_paths(array: MarkerArray) -> list[str]:
    """Local paths of the meshes referenced by MESH_RESOURCE markers (for checks and tests)."""
    from urllib.parse import unquote, urlparse

    paths = []
    for marker in array.markers:
        if marker.type == Marker.MESH_RESOURCE and marker.action == Marker.ADD:
            parsed = urlparse(marker.mesh_resource)
            if parsed.scheme == "file":
                paths.append(unquote(parsed.path))
    return paths


__all__ = [
    "MARKER_NAMESPACE", "build_marker_array", "class_colour",
    "delete_all_markers", "duration_from_seconds", "label_position", "marker_mesh_paths",
]

