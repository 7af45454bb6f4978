"""What a robot may know besides the image: measured depth and the direction of gravity.

Both enter the model only at inference (``RocaModel(..., depths=..., up=...)``): measured
depth replaces the predicted one wherever the sensor has a value, and the up direction
turns the Procrustes solve into a yaw-only one (``weighted_procrustes_upright``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def valid_depth(depth: torch.Tensor) -> torch.Tensor:
    """Bool mask of usable measured depth: finite and > 0 (0 and NaN mean unknown)."""
    return torch.isfinite(depth) & (depth > 0)


def fuse_measured_depth(predicted: torch.Tensor, measured: "list[torch.Tensor | None]") -> torch.Tensor:
    """predicted (B, h, w) metres at the network input; measured: per image (H_i, W_i) metres
    or None -> (B, h, w): the measurement where valid, the prediction in its holes.

    Measured maps are resized with nearest neighbours: averaging would blend valid depth with
    the zeros of holes and the depths of both sides of an object edge.
    """
    if len(measured) != predicted.shape[0]:
        raise ValueError(f"{predicted.shape[0]} images but {len(measured)} measured depth maps")
    h, w = predicted.shape[-2:]
    fused = []
    for pred, meas in zip(predicted, measured):
        if meas is None:
            fused.append(pred)
            continue
        m = torch.as_tensor(meas, device=pred.device, dtype=pred.dtype)
        if m.dim() != 2:
            raise ValueError(f"a measured depth map must be (H, W), got {tuple(m.shape)}")
        if tuple(m.shape) != (h, w):
            m = F.interpolate(m[None, None], size=(h, w), mode="nearest")[0, 0]
        fused.append(torch.where(valid_depth(m), m, pred))
    return torch.stack(fused)


def per_roi_up(up: "list[torch.Tensor | None]", roi_image: torch.Tensor, num_rois: int,
               like: torch.Tensor) -> torch.Tensor:
    """Per-image up vectors (3,) or None -> (R, 3) per ROI (``roi_image`` (R,) image index);
    zero rows where the image's up is unknown (the alignment head then solves in full)."""
    table = torch.zeros(len(up), 3, dtype=like.dtype, device=like.device)
    for i, u in enumerate(up):
        if u is None:
            continue
        u = torch.as_tensor(u, dtype=like.dtype, device=like.device).reshape(-1)
        if u.shape[0] != 3 or not bool(torch.isfinite(u).all()) or float(u.norm()) < 1e-6:
            raise ValueError(f"up vector of image {i} must be a finite non-zero 3-vector, got {u.tolist()}")
        table[i] = u / u.norm()
    return table[roi_image] if num_rois else table.new_zeros(0, 3)
