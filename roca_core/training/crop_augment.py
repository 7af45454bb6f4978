"""Augmentations of cached crops for the head stages (roca-train-yaw, -centre, -class): the
heads overfit the 15k training objects after 10-20 epochs without them. Each stage mirrors its
own targets with the crops (yaw bins, the centre's offset in the box, the box geometry)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flips(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) bool: which samples to mirror left-right (half of them, at random)."""
    return torch.rand(n, generator=gen) < 0.5


def mirror(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) with the rows of ``flip`` (B,) mirrored left-right."""
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def relight(x: torch.Tensor, gen: torch.Generator, light: float = 0.2) -> torch.Tensor:
    """Scale each crop's brightness and contrast by up to ``light`` (x in [0, 1])."""
    b = x.shape[0]
    gain = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * light
    contrast = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * light
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean * gain).clamp(0.0, 1.0)


def shift_zoom(x: torch.Tensor, gen: torch.Generator, shift: float = 0.08, zoom: float = 0.1) -> torch.Tensor:
    """Move each crop by up to ``shift`` of its side and zoom it by up to ``zoom`` (zeros
    outside), as a detected box differs from the true one. Only for targets that do not
    depend on the box (the yaw)."""
    b = x.shape[0]
    scale = 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * zoom
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift * 2  # grid units: 2 per side
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
