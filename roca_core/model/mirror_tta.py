"""Mirror test-time augmentation of the crop heads: each head also reads the left-right mirror
of its crop, and the two answers are averaged after mapping the mirrored one back.

Why: the crop heads are small CNNs on 32x32 crops, trained with random mirroring (the mirror
image of a piece of furniture is the same furniture seen from the mirrored side). Their two
readings of one object err differently, so their mean is better than either: on the 400
held-out images with the ground-truth boxes and the ground-plane prior, mirroring the yaw and
centre heads raised alignment from 37.1 / 38.9 to 39.5 / 41.2 % (class / instance mean);
models/README.md, "Mirror test-time augmentation". It costs a second pass of each head: the
demo network took 115 instead of 108 ms per image with 10 detections on one CPU core
(bench/bench_model.py).

How each answer maps back under the mirror (x -> -x in the camera, about the principal point):
- yaw: the allocentric yaw a becomes -a, so bin k becomes bin -k (``yaw_head.mirror_bins``);
  the probabilities are averaged and returned as log-probabilities (the decoders take softmax);
- centre: log z, the vertical offset and the sizes stay, the horizontal offset in the box
  changes sign; the box's geometry is mirrored with it (``centre_head.mirror_geometry``);
- class: the class stays; probabilities averaged, as for the yaw;
- shape: the CAD model stays (furniture is symmetric about its own y-z plane); embeddings averaged.
Which heads take part is ``ModelConfig.mirror_heads``.
"""
from __future__ import annotations

import math

import torch

from roca_core.model.centre_head import CentreHead, mirror_geometry
from roca_core.model.class_head import ClassHead
from roca_core.model.shape_head import ShapeHead
from roca_core.model.yaw_head import YawHead, mirror_bins


def _mean_log_probs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two (R, K) logits -> (R, K) log of their mean softmax."""
    logp = torch.stack([a.float().log_softmax(dim=1), b.float().log_softmax(dim=1)])
    return torch.logsumexp(logp, dim=0) - math.log(2.0)


def mirror_crops(crops: torch.Tensor) -> torch.Tensor:
    """(R, 3, S, S) -> the crops flipped left-right."""
    return crops.flip(-1)


def yaw_log_probs(head: YawHead, crops: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """crops (R, 3, S, S), classes (R,) -> (R, bins) log of the mean of the head's bin
    probabilities on the crop and on its mirror (mapped back)."""
    direct = head(crops, classes)
    mirrored = head(mirror_crops(crops), classes)[:, mirror_bins(head.bins).to(crops.device)]
    return _mean_log_probs(direct, mirrored)


def centre_outputs(head: CentreHead, crops: torch.Tensor, geometry: torch.Tensor,
                   classes: torch.Tensor) -> torch.Tensor:
    """crops (R, 3, S, S), geometry (R, 10), classes (R,) -> (R, 6) the mean of the head's
    outputs on the crop and on its mirror (horizontal offset mapped back)."""
    direct = head(crops, geometry, classes)
    mirrored = head(mirror_crops(crops), mirror_geometry(geometry), classes).clone()
    mirrored[:, 1] = -mirrored[:, 1]
    return 0.5 * (direct + mirrored)


def class_log_probs(head: ClassHead, crops: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """crops (R, 3, S, S), geometry (R, 10) -> (R, C + 1) log of the mean of the head's class
    probabilities on the crop and on its mirror (a class looks the same mirrored)."""
    return _mean_log_probs(head(crops, geometry), head(mirror_crops(crops), mirror_geometry(geometry)))


def shape_embeddings(head: ShapeHead, crops: torch.Tensor, classes: torch.Tensor,
                     size: torch.Tensor) -> torch.Tensor:
    """crops (R, 3, S, S), classes (R,), size (R, 3) -> (R, E) the mean of the head's
    embeddings of the crop and of its mirror (the mirror of a model is that model)."""
    return 0.5 * (head(crops, classes, size) + head(mirror_crops(crops), classes, size))
