"""Rotation conversions. Quaternions are (w, x, y, z) everywhere in roca.

numpy versions serve data and evaluation code; the torch versions are batched and
differentiable for the model.
"""
from __future__ import annotations

import numpy as np
import torch


def quat_to_matrix_np(q_wxyz: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (normalised here) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat_np(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z), w >= 0."""
    r = np.asarray(rot, dtype=np.float64)
    q = matrix_to_quat(torch.from_numpy(r)).numpy()
    return q


def matrix_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) (w, x, y, z) with w >= 0; numerically stable branch choice."""
    m = rot
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate magnitudes (Shepperd's method); pick the largest per element.
    cand = torch.stack([
        1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22,
    ], dim=-1)
    best = cand.argmax(dim=-1)
    s = torch.sqrt(torch.clamp(cand.gather(-1, best[..., None]).squeeze(-1), min=1e-12)) * 2
    qw = torch.stack([s / 4, (m[..., 2, 1] - m[..., 1, 2]) / s, (m[..., 0, 2] - m[..., 2, 0]) / s,
                      (m[..., 1, 0] - m[..., 0, 1]) / s], -1)
    qx = torch.stack([(m[..., 2, 1] - m[..., 1, 2]) / s, s / 4, (m[..., 0, 1] + m[..., 1, 0]) / s,
                      (m[..., 0, 2] + m[..., 2, 0]) / s], -1)
    qy = torch.stack([(m[..., 0, 2] - m[..., 2, 0]) / s, (m[..., 0, 1] + m[..., 1, 0]) / s, s / 4,
                      (m[..., 1, 2] + m[..., 2, 1]) / s], -1)
    qz = torch.stack([(m[..., 1, 0] - m[..., 0, 1]) / s, (m[..., 0, 2] + m[..., 2, 0]) / s,
                      (m[..., 1, 2] + m[..., 2, 1]) / s, s / 4], -1)
    q = torch.stack([qw, qx, qy, qz], dim=-2)  # (..., 4 branches, 4)
    q = q.gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)
    return q / q.norm(dim=-1, keepdim=True)


def quat_to_matrix(q_wxyz: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 3, 3), differentiable."""
    q = q_wxyz / q_wxyz.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    m = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def rotation_about_y_np(angle_rad: float) -> np.ndarray:
    """Rotation about the canonical up axis (y), the axis of CAD symmetries."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_angle_deg_np(r1: np.ndarray, r2: np.ndarray) -> float:
    """Geodesic angle between two rotation matrices in degrees."""
    cos = (np.trace(np.asarray(r1).T @ np.asarray(r2)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
