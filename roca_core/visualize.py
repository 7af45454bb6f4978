"""Drawing and export of predictions: 2D overlays and GLB scenes (shared by CLI, node, demo).

``draw_overlay`` paints masks, boxes with labels, and each aligned CAD projected into the
image (its silhouette outline when the mesh is known, else the 3D box of the aligned unit
cube). ``export_scene_glb`` writes the aligned CAD meshes (or boxes) in a glTF scene.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

# glTF is y-up with the camera looking down -z; OpenCV's camera frame is y-down, z-forward.
CV_TO_GLTF = np.diag([1.0, -1.0, -1.0, 1.0])

_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (170, 110, 40)], dtype=np.uint8)
_CUBE = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_CUBE_EDGES = [(0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def class_color(class_index: int) -> tuple[int, int, int]:
    """RGB colour of a class (stable across images, nodes and exports)."""
    c = _PALETTE[int(class_index) % len(_PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


@lru_cache(maxsize=256)
def _load_mesh(path: str):
    import trimesh
    mesh = trimesh.load(path, force="mesh", process=False)
    return mesh


def _mesh_path(det: Any, db: Any) -> "str | None":
    path = getattr(det, "mesh_path", None)
    if path is None and db is not None and getattr(det, "cad_id", None) is not None:
        try:
            path = db.mesh_paths[db.index_of(det.cad_id)]
        except (KeyError, ValueError, IndexError):
            path = None
    return path if path and Path(path).is_file() else None


def _to_camera(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]


def _project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = points_cam[:, 2]
    front = z > 1e-3
    uv = points_cam[:, :2] / np.where(front, z, 1.0)[:, None] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, front


def draw_overlay(image_rgb: np.ndarray, detections: Sequence[Any], K: np.ndarray, db: Any = None,
                 mask_alpha: float = 0.45) -> np.ndarray:
    """image_rgb uint8 (H, W, 3) + Detections -> new uint8 (H, W, 3) RGB overlay."""
    img = np.ascontiguousarray(np.asarray(image_rgb, dtype=np.uint8)).copy()
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got {img.shape}")
    h, w = img.shape[:2]
    K = np.asarray(K, dtype=np.float64)
    thick = max(1, round(min(h, w) / 240))
    for det in detections:
        color = class_color(det.class_index)
        mask = np.asarray(det.mask, dtype=bool)
        if mask.shape == (h, w) and mask.any():
            img[mask] = (img[mask] * (1 - mask_alpha) + np.array(color) * mask_alpha).astype(np.uint8)
    for det in detections:
        color = class_color(det.class_index)
        transform = np.asarray(det.transform, dtype=np.float64)
        mesh_path = _mesh_path(det, db)
        drawn = False
        if mesh_path is not None:
            mesh = _load_mesh(mesh_path)
            uv, front = _project(_to_camera(np.asarray(mesh.vertices, np.float64), transform), K)
            faces = np.asarray(mesh.faces)
            faces = faces[front[faces].all(axis=1)]
            if len(faces):
                sil = np.zeros((h, w), np.uint8)
                tris = np.round(uv[faces] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
                cv2.fillPoly(sil, list(tris), 255, lineType=cv2.LINE_8, shift=2)
                contours, _ = cv2.findContours(sil, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(img, contours, -1, color, thick + 1, cv2.LINE_AA)
                drawn = bool(contours)
        uv, front = _project(_to_camera(_CUBE, transform), K)
        for a, b in _CUBE_EDGES:
            if front[a] and front[b]:
                pa, pb = uv[a], uv[b]
                if np.all(np.abs(np.concatenate([pa, pb])) < 1e5):
                    cv2.line(img, tuple(int(round(x)) for x in pa), tuple(int(round(x)) for x in pb),
                             color, 1 if drawn else thick, cv2.LINE_AA)
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        label = f"{det.class_name} {det.score:.2f}" + (f" {det.cad_id}" if getattr(det, "cad_id", None) else "")
        scale = max(0.35, min(h, w) / 900)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(th + base, y1)
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw, ty), color, -1)
        cv2.putText(img, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def build_scene(detections: Sequence[Any], db: Any = None, camera_marker: bool = True):
    """trimesh.Scene of the aligned CADs (boxes where no mesh), in glTF axes (y up)."""
    import trimesh

    scene = trimesh.Scene()
    for i, det in enumerate(detections):
        color = np.array(class_color(det.class_index) + (255,), dtype=np.uint8)
        mesh_path = _mesh_path(det, db)
        if mesh_path is not None:
            mesh = _load_mesh(mesh_path).copy()
        else:
            mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
        mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=np.tile(color, (len(mesh.faces), 1)))
        name = f"{i:02d}_{det.class_name}" + (f"_{det.cad_id}" if getattr(det, "cad_id", None) else "")
        scene.add_geometry(mesh, node_name=name, geom_name=name,
                           transform=CV_TO_GLTF @ np.asarray(det.transform, dtype=np.float64))
    if camera_marker:
        cam = trimesh.creation.cone(radius=0.05, height=0.1)  # apex along +z (glTF: towards the viewer)
        flip = np.eye(4)
        flip[2, 2] = flip[0, 0] = -1.0  # point the cone along -z: the camera's viewing direction
        flip[2, 3] = 0.1
        cam.visual = trimesh.visual.ColorVisuals(cam, face_colors=np.tile([128, 128, 128, 255], (len(cam.faces), 1)))
        scene.add_geometry(cam, node_name="camera", geom_name="camera", transform=flip)
    return scene


def export_scene_glb(path: "str | Path", detections: Sequence[Any], db: Any = None) -> Path:
    """Write the aligned CAD models as a binary glTF (axes: glTF, i.e. OpenCV camera frame
    with y and z flipped; a grey cone marks the camera at the origin)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build_scene(detections, db).export(file_type="glb")
    path.write_bytes(data)
    return path
