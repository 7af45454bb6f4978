"""Pinhole camera helpers (OpenCV convention: x right, y down, z forward, metres)."""
from __future__ import annotations

import numpy as np
import torch


def scale_intrinsics(K: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from ``src_hw`` to ``dst_hw`` (pixel-corner convention)."""
    sy = dst_hw[0] / src_hw[0]
    sx = dst_hw[1] / src_hw[1]
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 1] *= sy
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """K for a horizontal field of view, principal point at the image centre."""
    f = (width / 2.0) / np.tan(np.radians(fov_x_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def backproject_depth_np(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """depth: (H, W) metres -> points (H, W, 3) in the camera frame (zeros where depth is 0)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = depth.astype(np.float64)
    x = (u - K[0, 2]) * z / K[0, 0]
    y = (v - K[1, 2]) * z / K[1, 1]
    return np.stack([x, y, z], axis=-1)


def backproject_pixels(u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project pixel coordinates with depth; u, v, depth: (...), K: (3, 3) -> (..., 3)."""
    x = (u - K[0, 2]) * depth / K[0, 0]
    y = (v - K[1, 2]) * depth / K[1, 1]
    return torch.stack([x, y, depth], dim=-1)


def project_points_np(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """points: (N, 3) camera frame -> (N, 2) pixel coordinates (z clamped away from 0)."""
    p = np.asarray(points, dtype=np.float64)
    z = np.clip(p[:, 2:3], 1e-6, None)
    return (p[:, :2] / z) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
