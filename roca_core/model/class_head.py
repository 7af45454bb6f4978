"""Class head: re-scores each detection from the image crop of its box (an addition to ROCA,
issue #10).

Why: the small detector finds the objects but confuses their classes. On the 400 held-out
images of the demo data, 90 % of the objects have a detection with IoU > 0.5 and 82 % one of
the right class, but only 40 % one of the right class scoring above 0.5 (the alignment
metric's threshold), and half of the detections above 0.5 are wrong (beds called sofas,
bathtubs or tables; bookcases called cabinets). A small CNN on a crop of the box (as the yaw
and centre heads read) plus the box's geometry in the camera (how large the object is for
where it stands) classifies the box's content into background or one of the classes. Its
probability for the detection's label, mixed with the detector's score (a weighted mean with
weight ``model.class_mix``, arithmetic by default: ``model.class_mix_mean``), becomes the
detection's score; the labels and boxes stay, so the
other heads see the same detections, ranked and thresholded by the new score.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roca_core.model.centre_head import GEOMETRY_FEATURES
from roca_core.model.config import CLASS_MIX_MEANS
from roca_core.model.yaw_head import crop_encoder


def class_loss(logits: torch.Tensor, labels: torch.Tensor, weight: "torch.Tensor | None" = None) -> torch.Tensor:
    """Cross-entropy over background + classes. logits (R, C + 1), labels (R,) (0 background,
    1..C the classes), weight (R,) per-sample weights (None: 1) -> weighted mean."""
    nll = F.cross_entropy(logits.float(), labels, reduction="none")
    w = torch.ones_like(nll) if weight is None else weight.float()
    return (nll * w).sum() / w.sum().clamp_min(1e-6)


def rescore(scores: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, mix: float,
            mean: str = "arithmetic") -> torch.Tensor:
    """Detector scores (R,) of labels (R,) (1-based) and the head's logits (R, C + 1) ->
    (R,) the weighted mean of the score and the head's ``p(label)`` with weight ``mix`` on the
    latter: ``(1 - mix) * score + mix * p`` (``mean="arithmetic"``) or ``score ** (1 - mix) *
    p ** mix`` ("geometric"). mix 0 keeps the detector's score, 1 uses the head's probability
    alone.

    Why arithmetic by default: the alignment metric keeps detections scoring above 0.5, and the
    geometric mean of two probabilities lies below their arithmetic mean, the more so the more
    they differ (0.7 and 0.35: 0.49 against 0.53), so it pushed right detections under the
    threshold. On 800 tuning images (1731 objects) the arithmetic mean matched 1186 objects
    with a right-class detection where the geometric one matched 1112, for the same box AP50
    (68.0 and 68.2 %), and aligned 27.7 % of them where it aligned 26.3 % (class mean, with
    the ground-plane prior; models/README.md, "The class head's mean")."""
    if mean not in CLASS_MIX_MEANS:
        raise ValueError(f"class score mean must be one of {CLASS_MIX_MEANS}, got {mean!r}")
    p = logits.float().softmax(dim=1).gather(1, labels.long()[:, None])[:, 0]
    s = scores.float()
    if mean == "arithmetic":
        return (s * (1.0 - mix) + p * mix).to(scores.dtype)
    return (s.clamp_min(1e-12).log() * (1.0 - mix) + p.clamp_min(1e-12).log() * mix).exp().to(scores.dtype)


class ClassHead(nn.Module):
    """Crop (R, 3, S, S) and box geometry (R, 10) -> logits (R, C + 1) over background (0) and
    the classes (1..C), the detector's label convention."""

    def __init__(self, num_classes: int, crop: int, width: int, hidden: int = 128) -> None:
        super().__init__()
        self.num_classes, self.crop = num_classes, crop
        self.net = nn.Sequential(*crop_encoder(width))
        self.mlp = nn.Sequential(nn.Linear(4 * width + GEOMETRY_FEATURES, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_classes + 1))

    def forward(self, crops: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """crops (R, 3, S, S) RGB in [0, 1], geometry (R, 10) from ``centre_head.box_geometry``
        -> (R, C + 1). Float32 outside autocast, like the other crop heads."""
        with torch.autocast(crops.device.type, enabled=False):
            return self.mlp(torch.cat([self.net(crops.float()), geometry.float()], dim=1))
