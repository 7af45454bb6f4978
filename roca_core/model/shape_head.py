"""Shape head: each detection's retrieval embedding from the image crop of its box (an addition
to ROCA, issue #10).

Why: ROCA retrieves a CAD model by embedding the object's voxelised NOCs next to the CAD
models' occupancy grids. In the small demo network those NOCs are too coarse to tell the CAD
models of a class apart: the right one is first for 29 % of the held-out objects (chance 16 %),
which caps the retrieval-aware alignment. The image crop shows more of the shape (arms on a
chair, doors on a cabinet), and the object's metric size (the network's scale output, the
centre head's when it has one) tells the CAD models of a class apart as well: they differ in
proportions. This head maps the crop, as the yaw, centre and class heads read it, and the log
size into the same embedding space as the CAD encoder (``retrieval_head``), so retrieval stays a
nearest-neighbour search over any CAD database that encoder embeds; it is trained (roca-train-
shape) with the CAD encoder frozen, as a softmax over the embedded CAD models of the object's
class, to put each crop closest to its own CAD model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roca_core.model.yaw_head import crop_encoder


def shape_logits(embedding: torch.Tensor, cad_embedding: torch.Tensor, allowed: torch.Tensor,
                 log_temperature: torch.Tensor) -> torch.Tensor:
    """embedding (R, E), cad_embedding (M, E), allowed (R, M) bool (the CAD models of each
    object's class) -> (R, M) logits ``-|e - z|^2 * exp(log_temperature)``, -inf where not allowed:
    the nearest CAD model has the largest logit, as in the retrieval's nearest-neighbour search."""
    d2 = torch.cdist(embedding.float(), cad_embedding.float()) ** 2
    return (-d2 * log_temperature.float().exp()).masked_fill(~allowed, float("-inf"))


def shape_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each object's CAD model among its class's. logits (R, M) from
    ``shape_logits``, target (R,) indices into the M CAD models -> mean."""
    return F.cross_entropy(logits, target)


SIZE_FEATURES = 3  # log of the object's three scales


class ShapeHead(nn.Module):
    """Crop (R, 3, S, S), class (R,) 0-based and size (R, 3) -> (R, E) embedding in the CAD
    encoder's space."""

    def __init__(self, num_classes: int, crop: int, width: int, embedding_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.num_classes, self.crop = num_classes, crop
        self.net = nn.Sequential(*crop_encoder(width))
        self.mlp = nn.Sequential(nn.Linear(4 * width + num_classes + SIZE_FEATURES, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, embedding_dim))
        # sharpness of the softmax over CAD models in training (learnt; retrieval ignores it)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, crops: torch.Tensor, classes: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """crops (R, 3, S, S) RGB in [0, 1], classes (R,) 0-based, size (R, 3) the object's
        scales (metres) -> (R, E). Float32 outside autocast, like the other crop heads."""
        with torch.autocast(crops.device.type, enabled=False):
            onehot = F.one_hot(classes.long(), self.num_classes).float()
            log_size = size.float().nan_to_num(1.0).clamp(1e-3, 1e3).log()
            return self.mlp(torch.cat([self.net(crops.float()), onehot, log_size], dim=1))
