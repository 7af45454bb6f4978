"""Up head: the camera-frame direction against gravity, regressed from a thumbnail of the whole
image (an addition to ROCA, issue #10): a predicted upright prior.

Why: furniture stands upright, so once the up direction is known each object's rotation has
one unknown left, its yaw (``weighted_procrustes_upright``), which the yaw head gives. Given the
true up (what an IMU or the robot's TF gives), held-out alignment rises by about a fifth; the
tilt of the Procrustes rotations of single objects is 15 degrees off (median) and averaging
them over a frame removes little of it. The whole image shows the tilt plainly (floor, walls
and the lines where they meet), so a small CNN on a 48x64 thumbnail estimates it for cameras
without an IMU: 2.6 degrees off (median) on held-out scenes, and the alignment it gives equals
the one with the true up (models/README.md, "The up head"). A measured up, when given, wins.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roca_core.model.yaw_head import crop_block

THUMB_SIZE = (48, 64)  # (h, w) of the thumbnail the head reads


def thumbnails(images: torch.Tensor, size: tuple[int, int] = THUMB_SIZE) -> torch.Tensor:
    """images (B, 3, H, W) RGB in [0, 1] -> (B, 3, h, w), area-averaged (antialiased)."""
    return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)


def up_targets(rotations: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) object-to-camera rotations of one image's upright objects -> (3,) unit up
    direction: the mean of their y axes (each one is the up direction up to label noise)."""
    u = rotations[:, :, 1].mean(dim=0)
    return u / u.norm().clamp_min(1e-8)


def up_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean distance between unit vectors (B, 3): about the angle in radians when small."""
    return (pred.float() - target.float()).norm(dim=1).mean()


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 3), (B, 3) unit vectors -> (B,) angle between them in degrees."""
    return torch.rad2deg(torch.acos((a * b).sum(dim=1).clamp(-1.0, 1.0)))


class UpHead(nn.Module):
    """Thumbnail (B, 3, 48, 64) -> (B, 3) unit up direction in the camera frame (OpenCV: x
    right, y down, z forward, so a level camera sees up as (0, -1, 0))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(crop_block(3, width), crop_block(width, 2 * width), crop_block(2 * width, 4 * width),
                                 crop_block(4 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4 * width, 3))
        with torch.no_grad():  # start level
            self.net[-1].bias.copy_(torch.tensor([0.0, -1.0, 0.0]))

    def forward(self, thumbs: torch.Tensor) -> torch.Tensor:
        """thumbs (B, 3, h, w) RGB in [0, 1] -> (B, 3) unit vectors. Float32 outside autocast,
        like the crop heads."""
        with torch.autocast(thumbs.device.type, enabled=False):
            u = self.net(thumbs.float())
        return u / u.norm(dim=1, keepdim=True).clamp_min(1e-6)
