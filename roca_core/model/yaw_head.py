"""Yaw head: each object's orientation about its up axis, classified from the image crop of
its box (an addition to ROCA, issue #10).

Why: the NOC head regresses canonical coordinates with an L1 loss; while the backbone's
features carry no orientation, the loss is lowest for the class's mean NOCs, and the
Procrustes yaw is at chance. A classifier over yaw bins does not collapse to a mean, and this
head learns the yaw of held-out objects from 32x32 crops (48 % in a right 45-degree bin
against 16.5 % by chance; models/README.md, "The yaw head"). Its prediction replaces the yaw
of the Procrustes rotation (the tilt and the fine NOC fit stay), and the translation is
re-solved for the new rotation.

Angles: ``rot`` maps object to camera coordinates (OpenCV camera: x right, y down, z
forward). The camera yaw of an object is ``psi = -atan2(rot[2, 0], rot[0, 0])``, the angle of
its x axis in the camera's x-z plane. A crop shows the yaw relative to the viewing ray through
the box centre (``theta = atan2(x, z)``), so the head classifies ``psi - theta`` (allocentric)
and adds ``theta`` back. Symmetric CADs (2- or 4-fold about up) count any of their equivalent
bins as right; "infinite" symmetry has no yaw and is left out of the loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from roca_core.classes import Symmetry
from roca_core.model.roi_sampling import sample_rois

CROP_MARGIN = 1.15  # the crop is the box's longer side times this, square, around its centre


def crop_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convs with GroupNorm and ReLU, then a 2x max-pool: one block of the crop CNNs
    (this head's and the centre head's)."""
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


def crop_encoder(width: int) -> list[nn.Module]:
    """The crop heads' trunk (yaw, centre, class): three ``crop_block``s pooled to a (R, 4 *
    width) feature, as a list so each head's ``nn.Sequential`` keeps its own module indices."""
    return [crop_block(3, width), crop_block(width, 2 * width), crop_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def square_boxes(boxes: torch.Tensor, margin: float = CROP_MARGIN) -> torch.Tensor:
    """(R, 4) xyxy -> (R, 4) squares of side ``margin`` x the longer side, same centres."""
    c = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    half = 0.5 * margin * (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True)
    return torch.cat([c - half, c + half], dim=1)


def yaw_crops(images: torch.Tensor, boxes: torch.Tensor, bidx: torch.Tensor, size: int) -> torch.Tensor:
    """images (B, 3, H, W) RGB in [0, 1], boxes (R, 4) in their pixels, bidx (R,) ->
    crops (R, 3, size, size) of the enlarged square boxes (zeros outside the image)."""
    return sample_rois(images, square_boxes(boxes.float()).to(images.dtype), bidx, size, "bilinear")


def camera_yaw(rot: torch.Tensor) -> torch.Tensor:
    """(R, 3, 3) object-to-camera rotations -> (R,) camera yaw psi (radians)."""
    return -torch.atan2(rot[:, 2, 0], rot[:, 0, 0])


def ray_angle(boxes: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(R, 4) boxes and (R, 3, 3) intrinsics -> (R,) angle of the ray through each box centre
    in the camera's x-z plane (0 straight ahead, positive to the right)."""
    u = 0.5 * (boxes[:, 0] + boxes[:, 2])
    return torch.atan2((u - K[:, 0, 2]) / K[:, 0, 0], torch.ones_like(u))


def allocentric_yaw(rot: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(R,) yaw relative to the viewing ray through each box centre: what a crop shows."""
    return camera_yaw(rot) - ray_angle(boxes, K)


def symmetry_folds(symmetry: torch.Tensor) -> torch.Tensor:
    """(R,) Symmetry values -> (R,) rotations about up that look the same (0 for infinite)."""
    folds = torch.ones_like(symmetry)
    folds = torch.where(symmetry == int(Symmetry.ROTATE_UP_2), torch.full_like(folds, 2), folds)
    folds = torch.where(symmetry == int(Symmetry.ROTATE_UP_4), torch.full_like(folds, 4), folds)
    return torch.where(symmetry == int(Symmetry.ROTATE_UP_INF), torch.zeros_like(folds), folds)


def angle_to_bin(angle: torch.Tensor, bins: int) -> torch.Tensor:
    """(R,) radians -> (R,) bin index; bin k is centred on 2 pi k / bins."""
    return torch.round(torch.remainder(angle, 2 * math.pi) / (2 * math.pi) * bins).long() % bins


def mirror_bins(bins: int) -> torch.Tensor:
    """Index map of the yaw bins under a left-right mirror of the image: furniture is symmetric
    about its own y-z plane, so the mirror image of an object at allocentric yaw a is the same
    object at -a, and bin k becomes bin -k."""
    return (-torch.arange(bins)) % bins


def yaw_targets(rot: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor, symmetry: torch.Tensor,
                bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (allowed (R, bins) bool: the bins that count as right, valid (R,) bool).

    The allocentric yaw's bin, plus, for a k-fold symmetric CAD, the bins of its k - 1 turns."""
    folds = symmetry_folds(symmetry)
    allo = allocentric_yaw(rot, boxes, K)
    k = torch.arange(4, device=rot.device)  # at most 4 equivalent turns
    turns = allo[:, None] + 2 * math.pi * k[None] / folds.clamp_min(1)[:, None]  # (R, 4)
    used = k[None] < folds[:, None]
    idx = angle_to_bin(turns.flatten(), bins).view(-1, 4)
    allowed = torch.zeros(rot.shape[0], bins, dtype=torch.bool, device=rot.device)
    allowed.scatter_(1, torch.where(used, idx, idx[:, :1]), True)
    return allowed, folds > 0


def yaw_loss(logits: torch.Tensor, allowed: torch.Tensor, valid: torch.Tensor,
             weight: torch.Tensor) -> torch.Tensor:
    """-log of the probability on the right bins, (class-)weighted mean over valid ROIs.
    logits (R, bins), allowed (R, bins) bool, valid (R,) bool, weight (R,)."""
    logp = F.log_softmax(logits.float(), dim=1)
    nll = -torch.logsumexp(logp.masked_fill(~allowed, float("-inf")), dim=1)
    w = weight.float() * valid.float()
    nll = torch.where(valid, nll, torch.zeros_like(nll))
    return (nll * w).sum() / w.sum().clamp_min(1e-6)


def decode_allocentric(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, bins) logits -> (allocentric yaw (R,) radians, confidence (R,) = probability of the
    winning bin and its two neighbours). The angle is the probability-weighted circular mean
    over the winning bin and its neighbours, so it is finer than one bin."""
    p = logits.float().softmax(dim=1)  # (R, B)
    b = p.shape[1]
    top = p.argmax(dim=1)
    nb = (top[:, None] + torch.arange(-1, 2, device=p.device)[None]) % b  # (R, 3)
    pn = p.gather(1, nb)
    ang = nb.to(p.dtype) * (2 * math.pi / b)
    return torch.atan2((pn * ang.sin()).sum(1), (pn * ang.cos()).sum(1)), pn.sum(1)


def decode_yaw(logits: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (camera yaw psi (R,) radians, confidence (R,)): the allocentric yaw plus the ray's."""
    allo, conf = decode_allocentric(logits)
    return allo + ray_angle(boxes, K).to(allo.dtype), conf


def replace_yaw(rot: torch.Tensor, psi: torch.Tensor, steps: int = 360) -> torch.Tensor:
    """Turn each rotation about its own up axis (object y) until its camera yaw is ``psi``.

    rot (R, 3, 3), psi (R,) -> (R, 3, 3). Searched on a grid of ``steps`` turns (1 degree at
    360): the yaw of R @ Ry(d) is not linear in d when the camera is tilted."""
    d = torch.arange(steps, device=rot.device, dtype=rot.dtype) * (2 * math.pi / steps)  # (T,)
    c, s = d.cos(), d.sin()
    # first column of R @ Ry(d): cos(d) R[:, :, 0] - sin(d) R[:, :, 2]
    col = c[None, :, None] * rot[:, None, :, 0] - s[None, :, None] * rot[:, None, :, 2]  # (R, T, 3)
    yaw = -torch.atan2(col[..., 2], col[..., 0])  # (R, T)
    err = torch.remainder(yaw - psi[:, None].to(rot.dtype) + math.pi, 2 * math.pi) - math.pi
    best = d[err.abs().argmin(dim=1)]  # (R,)
    cb, sb = best.cos(), best.sin()
    one, zero = torch.ones_like(cb), torch.zeros_like(cb)
    ry = torch.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], dim=1).view(-1, 3, 3)
    return rot @ ry


class YawHead(nn.Module):
    """Crop (R, 3, S, S) -> per-class yaw-bin logits; ``forward`` picks each ROI's class."""

    def __init__(self, num_classes: int, bins: int, crop: int, width: int) -> None:
        super().__init__()
        self.num_classes, self.bins, self.crop = num_classes, bins, crop
        self.net = nn.Sequential(*crop_encoder(width), nn.Linear(4 * width, num_classes * bins))

    def forward(self, crops: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """crops (R, 3, S, S) RGB in [0, 1], classes (R,) 0-based -> logits (R, bins).

        Always float32, outside autocast: the head is tiny, and CPUs without bf16 units
        emulate bf16 convolutions about ten times slower than float32 ones."""
        with torch.autocast(crops.device.type, enabled=False):
            out = self.net(crops.float()).view(-1, self.num_classes, self.bins)
        return out[torch.arange(out.shape[0], device=out.device), classes]
