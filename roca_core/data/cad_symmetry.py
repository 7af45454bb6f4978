"""Rotational symmetry of a CAD model about its up (y) axis, measured on its surface (metres).

Why: Scan2CAD's rotation error is taken up to the CAD model's symmetry, so a model that looks
the same after a half turn must carry ``ROTATE_UP_2``: otherwise a pose that is exactly right
for the eye counts as 180 degrees wrong, and a yaw head is trained to guess which of two
identical views it sees. The renderer colours an object uniformly (a noise texture at most),
so the geometry alone decides what an image can tell. The procedural builders declare their
tags by hand; ``test_cad_symmetry`` checks each declaration against this measurement.

A turn by ``angle`` about the vertical line through the bounding box's centre maps a model
onto itself when every point of its turned surface lies on its surface: the largest distance
(a one-sided Hausdorff distance, exact point-to-triangle) from the turned vertices and surface
samples to the mesh stays within ``tol_m``. The tolerance is metric because what a camera
resolves is: the default 1.5 cm is about 2 pixels at 3 m for the demo camera (f = 435 px). A
tap, a handle or a door 2-3 cm proud of one side breaks the symmetry, as it does in the image;
faces hidden inside overlapping parts (the corners of a bin's walls, 6 mm) do not.
"""
from __future__ import annotations

import math

import numpy as np
import trimesh

from roca_core.classes import Symmetry

# Turns tested for "infinite" symmetry (a body of revolution): none of them is a multiple of
# 90 degrees, so a square or a box cannot pass.
_REVOLUTION_TURNS_DEG = (30.0, 50.0, 135.0)


def _turn_y(points: np.ndarray, angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return points @ rot.T


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """p (P, 1, 3), a/b (1, T, 3) -> (P, T) distances from the points to the segments ab."""
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-20), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def point_mesh_distance(points: np.ndarray, mesh: trimesh.Trimesh, chunk: int = 512) -> np.ndarray:
    """points (P, 3) -> (P,) exact distances to the mesh's surface (its triangles)."""
    tri = np.asarray(mesh.triangles, dtype=np.float64)  # (T, 3, 3)
    a, b, c = tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]  # (1, T, 3)
    n = np.cross(b - a, c - a)
    n_len = np.linalg.norm(n, axis=-1)
    n_unit = n / np.maximum(n_len, 1e-20)[..., None]
    out = np.empty(len(points))
    for k in range(0, len(points), chunk):
        p = np.asarray(points[k:k + chunk], dtype=np.float64)[:, None, :]  # (P, 1, 3)
        d_plane = ((p - a) * n_unit).sum(-1)  # (P, T) signed
        q = p - d_plane[..., None] * n_unit  # projection onto each triangle's plane
        # inside when q lies on the inner side of all three edges
        inside = ((np.cross(b - a, q - a) * n).sum(-1) >= 0) & \
                 ((np.cross(c - b, q - b) * n).sum(-1) >= 0) & \
                 ((np.cross(a - c, q - c) * n).sum(-1) >= 0) & (n_len > 1e-20)
        edge = np.minimum(np.minimum(_segment_distance(p, a, b), _segment_distance(p, b, c)),
                          _segment_distance(p, c, a))
        out[k:k + chunk] = np.where(inside, np.abs(d_plane), edge).min(axis=1)
    return out


def _centred_surface(mesh: trimesh.Trimesh, samples: int, seed: int) -> tuple[trimesh.Trimesh, np.ndarray]:
    """The mesh moved so that the vertical axis through its bounding box's centre is y, and
    its vertices plus ``samples`` surface samples (P, 3)."""
    lo, hi = np.asarray(mesh.bounds, dtype=np.float64)
    centred = mesh.copy()
    centred.apply_translation((-(lo[0] + hi[0]) / 2.0, 0.0, -(lo[2] + hi[2]) / 2.0))
    pts, _ = trimesh.sample.sample_surface(centred, samples, seed=seed)
    return centred, np.concatenate([np.asarray(centred.vertices, dtype=np.float64), np.asarray(pts, dtype=np.float64)])


def _deviation(centred: trimesh.Trimesh, pts: np.ndarray, angle_deg: float) -> float:
    return float(point_mesh_distance(_turn_y(pts, math.radians(angle_deg)), centred).max())


def turn_deviation(mesh: trimesh.Trimesh, angle_deg: float, samples: int = 3000, seed: int = 0) -> float:
    """The largest distance from the mesh's surface turned by ``angle_deg`` about the vertical
    axis through its bounding box's centre to the mesh (the mesh's units): 0 when the turn maps
    the model onto itself."""
    return _deviation(*_centred_surface(mesh, samples, seed), angle_deg)


def measure_up_symmetry(mesh: trimesh.Trimesh, tol_m: float = 0.015, samples: int = 3000) -> Symmetry:
    """The strongest symmetry about y whose turns map the metric mesh (y up, metres) onto
    itself within ``tol_m``: INF (a body of revolution), 4 (quarter turns), 2 (half turns) or
    NONE."""
    if not tol_m > 0:
        raise ValueError(f"tol_m must be > 0, got {tol_m}")
    centred, pts = _centred_surface(mesh, samples, seed=0)  # once for all the turns tested
    dev = lambda deg: _deviation(centred, pts, deg)  # noqa: E731
    if dev(180.0) > tol_m:
        return Symmetry.NONE
    if dev(90.0) > tol_m:
        return Symmetry.ROTATE_UP_2
    if all(dev(a) <= tol_m for a in _REVOLUTION_TURNS_DEG):
        return Symmetry.ROTATE_UP_INF
    return Symmetry.ROTATE_UP_4
