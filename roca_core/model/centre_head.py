"""Centre head: each object's 3D centre and size, regressed from the image crop of its box and
the box's place and size in the camera (an addition to ROCA, issue #10).

Why: ROCA's translation comes from the predicted depth of the object's visible pixels plus a
learned offset, then the Procrustes fit. With depth from a small network trained from scratch
(abs rel 0.20) that translation is 0.44 m off (median) on held-out scenes, the largest of the
three errors. Where a box sits and how large it is already says much about the distance of
an object of a known class (the camera looks down at a floor; a chair of 0.8 m that spans 60
pixels is about 6 m away), and the crop shows which way the object faces and how much of it the
box holds. From these alone a small network estimates the centre's depth to about 10 % on
held-out scenes (models/README.md, "The centre head"). The same features also regress the
object's size (anisotropic scale): which of its class's shapes the object is would fix it to
about 4 %; the committed head gets 9.3 % (median), about the class mean's 8.2 % and the scale
head's 9.4 %, so this output is a place to improve rather than a gain yet.

Parameterisation (camera-independent, so one head serves any intrinsics and input size): the
head predicts, per class, ``log z`` of the centre, where the centre projects inside the box,
``((u - box_cx) / box_w, (v - box_cy) / box_h)``, and the log of the scale;
``decode_centre`` turns the first three back into a camera-frame point. The box is described
in normalised camera coordinates (``(x - cx) / fx``), with flags for sides cut by the image
border.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roca_core.model.yaw_head import crop_encoder

GEOMETRY_FEATURES = 10
OUTPUTS = 6  # log z, offset u, offset v, log scale (x, y, z)


def box_geometry(boxes: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """boxes (R, 4) xyxy and K (R, 3, 3) in the pixels of an image of ``image_hw`` ->
    (R, 10): the box's sides in normalised camera coordinates, log of its normalised width
    and height, and four flags (left, top, right, bottom side on the image border)."""
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    h, w = image_hw
    sides = torch.stack([(x1 - cx) / fx, (y1 - cy) / fy, (x2 - cx) / fx, (y2 - cy) / fy], dim=1)
    size = torch.stack([((x2 - x1) / fx).clamp_min(1e-4).log(), ((y2 - y1) / fy).clamp_min(1e-4).log()], dim=1)
    cut = torch.stack([x1 <= 1.0, y1 <= 1.0, x2 >= w - 1.0, y2 >= h - 1.0], dim=1).to(boxes.dtype)
    return torch.cat([sides, size, cut], dim=1)


def mirror_geometry(geo: torch.Tensor) -> torch.Tensor:
    """(R, 10) ``box_geometry`` of boxes -> that of the boxes mirrored about the principal
    point's column (left and right sides swap and change sign, so do their border flags):
    what the crop heads see of a left-right mirrored image."""
    out = geo.clone()
    out[:, 0], out[:, 2] = -geo[:, 2], -geo[:, 0]
    out[:, 6], out[:, 8] = geo[:, 8], geo[:, 6]
    return out


def centre_targets(translation: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor,
                   scale: torch.Tensor) -> torch.Tensor:
    """translation (R, 3) camera-frame centres, scale (R, 3) -> (R, 6) targets (log z,
    offset u, offset v, log scale)."""
    z = translation[:, 2].clamp_min(1e-3)
    u = K[:, 0, 0] * translation[:, 0] / z + K[:, 0, 2]
    v = K[:, 1, 1] * translation[:, 1] / z + K[:, 1, 2]
    bw = (boxes[:, 2] - boxes[:, 0]).clamp_min(1.0)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp_min(1.0)
    du = (u - 0.5 * (boxes[:, 0] + boxes[:, 2])) / bw
    dv = (v - 0.5 * (boxes[:, 1] + boxes[:, 3])) / bh
    return torch.cat([torch.stack([z.log(), du, dv], dim=1), scale.clamp_min(1e-3).log()], dim=1)


def decode_centre(pred: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(R, >= 3) predictions (log z, offset u, offset v, ...) -> (R, 3) camera-frame centres."""
    z = pred[:, 0].clamp(-5.0, 5.0).exp()
    u = 0.5 * (boxes[:, 0] + boxes[:, 2]) + pred[:, 1] * (boxes[:, 2] - boxes[:, 0])
    v = 0.5 * (boxes[:, 1] + boxes[:, 3]) + pred[:, 2] * (boxes[:, 3] - boxes[:, 1])
    return torch.stack([z * (u - K[:, 0, 2]) / K[:, 0, 0], z * (v - K[:, 1, 2]) / K[:, 1, 1], z], dim=1)


def decode_size(pred: torch.Tensor) -> torch.Tensor:
    """(R, 6) predictions -> (R, 3) scales."""
    return pred[:, 3:6].clamp(-5.0, 5.0).exp()


def centre_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Smooth L1 (beta 0.02) summed over the six outputs, weighted mean over ROIs. An error of
    0.1 in log z is 10 % of the distance, one of 0.1 in u or v a tenth of the box, one of 0.1 in
    a log scale 10 % of that side."""
    loss = F.smooth_l1_loss(pred.float(), target.float(), beta=0.02, reduction="none").sum(dim=1)
    w = weight.float()
    return (loss * w).sum() / w.sum().clamp_min(1e-6)


class CentreHead(nn.Module):
    """Crop (R, 3, S, S) and box geometry (R, 10) -> per-class (log z, offset u, offset v,
    log scale x, y, z); ``forward`` picks each ROI's class."""

    def __init__(self, num_classes: int, crop: int, width: int, hidden: int = 128) -> None:
        super().__init__()
        self.num_classes, self.crop = num_classes, crop
        self.net = nn.Sequential(*crop_encoder(width))
        self.mlp = nn.Sequential(nn.Linear(4 * width + GEOMETRY_FEATURES, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_classes * OUTPUTS))
        with torch.no_grad():  # start at 2.5 m, centred in the box, 1 m wide
            self.mlp[-1].bias.view(num_classes, OUTPUTS)[:, 0] = 0.9

    def forward(self, crops: torch.Tensor, geometry: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """crops (R, 3, S, S) RGB in [0, 1], geometry (R, 10) from ``box_geometry``, classes
        (R,) 0-based -> (R, 6). Float32 outside autocast, like the yaw head."""
        with torch.autocast(crops.device.type, enabled=False):
            x = torch.cat([self.net(crops.float()), geometry.float()], dim=1)
            out = self.mlp(x).view(-1, self.num_classes, OUTPUTS)
        return out[torch.arange(out.shape[0], device=out.device), classes]
