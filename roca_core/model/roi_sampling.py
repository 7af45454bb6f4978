"""Crop dense maps (depth, NOC, masks) to fixed ROI grids that line up with ROIAlign.

Sample j of S along a box [x1, x2) sits at pixel-index coordinate
``x1 + (j + 0.5) * (x2 - x1) / S - 0.5`` (the ``aligned=True`` convention of ROIAlign), so a
cropped depth value and its pixel coordinate back-project consistently with K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def roi_pixel_grid(boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes (R, 4) xyxy -> u, v (R, S, S): pixel-index coordinates of the ROI samples."""
    steps = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1]) - 0.5  # (R, S)
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2]) - 0.5
    u = xs[:, None, :].expand(-1, size, -1)
    v = ys[:, :, None].expand(-1, -1, size)
    return u, v


def sample_rois(maps: torch.Tensor, boxes: torch.Tensor, batch_idx: torch.Tensor, size: int,
                mode: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """maps (B, C, H, W), boxes (R, 4), batch_idx (R,) -> (R, C, S, S).

    ``mode="nearest"`` for targets (no blending across object borders or unknown depth);
    ``padding="border"`` repeats edge values within half a pixel of the border, as ROIAlign does."""
    r = boxes.shape[0]
    c, h, w = maps.shape[1:]
    out = maps.new_zeros(r, c, size, size)
    if r == 0:
        return out
    u, v = roi_pixel_grid(boxes.to(maps.dtype), size)
    grid = torch.stack([(u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1], dim=-1)  # (R, S, S, 2)
    for b in torch.unique(batch_idx).tolist():
        sel = torch.where(batch_idx == b)[0]
        g = grid[sel].reshape(1, -1, size, 2)  # ROIs stacked along the grid's rows
        crop = F.grid_sample(maps[b:b + 1], g, mode=mode, padding_mode=padding, align_corners=False)
        out = out.index_copy(0, sel, crop[0].view(c, sel.numel(), size, size).transpose(0, 1))
    return out


def backproject_rois(u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """u, v, depth (R, S, S), K (R, 3, 3) -> points (R, S, S, 3) in the camera frame."""
    fx, fy = K[:, 0, 0].view(-1, 1, 1), K[:, 1, 1].view(-1, 1, 1)
    cx, cy = K[:, 0, 2].view(-1, 1, 1), K[:, 1, 2].view(-1, 1, 1)
    return torch.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], dim=-1)


def gt_noc_rois(noc: torch.Tensor, masks: torch.Tensor, depth: torch.Tensor, boxes: torch.Tensor,
                size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground-truth NOCs inside ``boxes`` as the network's ROI grid samples them, for the
    retrieval's NOC encoder: noc (3, H, W), masks (R, H, W) each box's own object, depth
    (H, W) -> points (R, S*S, 3) and weights (R, S*S) (1 on the object's pixels with depth,
    else 0). Nearest sampling, so no NOC blends across the object's border."""
    r = boxes.shape[0]
    maps = torch.cat([noc[None].expand(r, -1, -1, -1), masks[:, None].to(noc.dtype),
                      depth[None, None].to(noc.dtype).expand(r, -1, -1, -1)], dim=1)  # (R, 5, H, W)
    crops = sample_rois(maps, boxes.to(noc.dtype), torch.arange(r, device=noc.device), size, "nearest")
    weights = ((crops[:, 3] > 0.5) & (crops[:, 4] > 0)).to(noc.dtype).reshape(r, size * size)
    return crops[:, :3].permute(0, 2, 3, 1).reshape(r, size * size, 3), weights
