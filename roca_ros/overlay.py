"""The debug image: masks, boxes, labels and projected CAD wireframes over the input.

Small and OpenCV-only so the node can draw it in a few milliseconds; the retrieved mesh's
edges are loaded once per mesh file (cached) and projected with the predicted 9-DoF pose,
which shows at a glance whether pose, scale and retrieval agree with the image.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import cv2
import numpy as np

from roca_ros.markers import class_colour

MAX_WIREFRAME_EDGES = 1500
MASK_ALPHA = 0.45

# The 12 edges of the canonical [-0.5, 0.5]^3 box, drawn when no mesh was retrieved.
_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                       if np.sum(_CORNERS[a] != _CORNERS[b]) == 1])
BOX_SEGMENTS = _CORNERS[_BOX_EDGES]  # (12, 2, 3)


@lru_cache(maxsize=64)
def mesh_segments(mesh_path: str) -> np.ndarray:
    """Canonical-frame edges of a mesh file, (E, 2, 3), at most MAX_WIREFRAME_EDGES (cached)."""
    import trimesh

    try:
        mesh = trimesh.load(mesh_path, force="mesh", process=False)
        edges = np.asarray(mesh.edges_unique)
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
    except Exception:  # noqa: BLE001 - a broken mesh file only loses its wireframe
        return BOX_SEGMENTS
    if len(edges) == 0:
        return BOX_SEGMENTS
    if len(edges) > MAX_WIREFRAME_EDGES:
        keep = np.linspace(0, len(edges) - 1, MAX_WIREFRAME_EDGES).astype(int)
        edges = edges[keep]
    return vertices[edges]


def _colour_bgr255(class_index: int) -> tuple[int, int, int]:
    r, g, b = class_colour(class_index)
    return int(b * 255), int(g * 255), int(r * 255)


def project_segments(segments: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                     scale: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Canonical segments (E, 2, 3) -> pixel segments (E', 2, 2) of those in front of the camera."""
    pts = segments.reshape(-1, 3) * np.asarray(scale, dtype=np.float64)
    cam = pts @ np.asarray(rotation, dtype=np.float64).T + np.asarray(translation, dtype=np.float64)
    cam = cam.reshape(-1, 2, 3)
    in_front = np.all(cam[:, :, 2] > 1e-3, axis=1)
    cam = cam[in_front]
    xy = cam[:, :, :2] / cam[:, :, 2:3]
    u = K[0, 0] * xy[..., 0] + K[0, 1] * xy[..., 1] + K[0, 2]
    v = K[1, 1] * xy[..., 1] + K[1, 2]
    uv = np.stack([u, v], axis=-1)
    finite = np.all(np.isfinite(uv), axis=(1, 2)) & np.all(np.abs(uv) < 1e5, axis=(1, 2))
    return uv[finite]


def draw_overlay(rgb: np.ndarray, detections: Iterable[Any], K: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB + detections -> new RGB image with everything drawn."""
    canvas = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    h, w = canvas.shape[:2]
    dets = list(detections)
    # Masks first so outlines and text stay readable on top.
    for det in dets:
        mask = getattr(det, "mask", None)
        if mask is None:
            continue
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (h, w) or not mask.any():
            continue
        colour = np.array(_colour_bgr255(det.class_index), dtype=np.float32)
        canvas[mask] = (canvas[mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA).astype(np.uint8)
    for det in dets:
        colour = _colour_bgr255(det.class_index)
        rotation = np.asarray(det.rotation, dtype=np.float64)
        translation = np.asarray(det.translation, dtype=np.float64)
        scale = np.asarray(det.scale, dtype=np.float64)
        if np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation)) and np.all(np.isfinite(scale)):
            mesh_path = getattr(det, "mesh_path", None)
            segments = mesh_segments(str(mesh_path)) if mesh_path else BOX_SEGMENTS
            uv = project_segments(segments, rotation, translation, scale, np.asarray(K, dtype=np.float64))
            if len(uv):
                lines = np.round(uv * 16).astype(np.int32)  # 4 fractional bits for sub-pixel lines
                cv2.polylines(canvas, list(lines), False, colour, 1, cv2.LINE_AA, shift=4)
        box = np.asarray(det.box, dtype=np.float64)
        if np.all(np.isfinite(box)):
            x0, y0, x1, y1 = (int(round(v)) for v in np.clip(box, -10 * max(h, w), 10 * max(h, w)))
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, 2)
            text = f"{det.class_name} {float(det.score):.2f}" + ("" if det.valid else " (no pose)")
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            ty = max(y0, th + base)
            cv2.rectangle(canvas, (x0, ty - th - base), (x0 + tw, ty), colour, -1)
            cv2.putText(canvas, text, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
