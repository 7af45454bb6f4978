"""Train a network's centre head on its own (roca-train-centre): crops and geometry of the
ground-truth boxes -> each object's 3D centre and size, with the rest of the network frozen.

Like the yaw head, the centre head reads only a crop and its box, so it learns from the cached
crops of ``roca_core.training.crop_cache`` in minutes on one CPU thread. The result is the same
network with its centre head trained (``model.centre_width`` set), ready for roca-eval, the node
and further joint training with roca-train.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from roca_core.model.centre_head import (CentreHead, box_geometry, centre_loss, centre_targets, decode_centre,
                                         decode_size, mirror_geometry)
from roca_core.training.crop_augment import mirror, random_flips, relight
from roca_core.training.head_epochs import HeadStageConfig, train_epochs, with_head


@dataclass
class CentreStageConfig(HeadStageConfig):
    crop: int = 32
    width: int = 16
    epochs: int = 30
    # Each side of a training box moves by up to this share of the box's size (uniform), so
    # the head learns to read detected boxes, which are never exact (0: the true boxes only).
    box_jitter: float = 0.05
    # Mirror half of the training crops (with their box geometry and the centre's offset in
    # the box) and relight them (``crop_augment``); without it the head overfits after ~10 epochs.
    augment: bool = False


@torch.no_grad()
def centre_errors(head: CentreHead, data: dict[str, torch.Tensor], image_hw: tuple[int, int],
                  batch: int = 512) -> dict[str, float]:
    """Over all objects: median distance of the predicted centre to the true one (metres),
    share within 20 cm (the alignment metric's threshold), median relative error of the
    centre's depth, the median of the true depth for comparison, and the scale error as the
    alignment metric measures it (``|mean(s_pred / s_true) - 1|``: median, share within 20 %)."""
    head.eval()
    dist, rel, size = [], [], []
    for j in range(0, data["cls"].shape[0], batch):
        sl = slice(j, j + batch)
        boxes, K = data["boxes"][sl], data["K"][sl]
        pred = head(data["x"][sl].float() / 255, box_geometry(boxes, K, image_hw), data["cls"][sl])
        centre = decode_centre(pred, boxes, K)
        dist.append((centre - data["t"][sl]).norm(dim=1))
        rel.append((centre[:, 2] - data["t"][sl, 2]).abs() / data["t"][sl, 2].clamp_min(1e-3))
        size.append((decode_size(pred) / data["s"][sl].clamp_min(1e-3)).mean(dim=1).sub(1).abs())
    head.train()
    if not dist:
        return {"objects": 0}
    d, r, e = torch.cat(dist), torch.cat(rel), torch.cat(size)
    return {"median_error_m": float(d.median()), "within_20cm": float((d <= 0.2).float().mean()),
            "depth_rel_median": float(r.median()), "true_depth_median_m": float(data["t"][:, 2].median()),
            "scale_error_median": float(e.median()), "scale_within_20pct": float((e <= 0.2).float().mean()),
            "objects": int(d.numel())}


def train_centre_head(head: CentreHead, train: dict[str, torch.Tensor], val: "dict[str, torch.Tensor] | None",
                      cfg: CentreStageConfig, image_hw: tuple[int, int],
                      log: "Callable[[dict[str, Any]], None] | None" = None,
                      class_weight: "torch.Tensor | None" = None) -> list[dict[str, Any]]:
    """AdamW with cosine decay on the centre loss; -> one dict per epoch (loss, held-out
    errors, seconds)."""
    boxes, K = train["boxes"], train["K"]
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # (N, 4): w, h, w, h
    cw = class_weight if class_weight is not None else torch.ones(head.num_classes)

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cls = train["cls"][idx]
        b = boxes[idx]
        if cfg.box_jitter > 0:
            noise = torch.rand(b.shape, generator=gen) * 2 - 1
            b = b + noise * cfg.box_jitter * size[idx]
            b = torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 1)], dim=1)
        x, geo = train["x"][idx].float() / 255, box_geometry(b, K[idx], image_hw)
        target = centre_targets(train["t"][idx], b, K[idx], train["s"][idx])
        if cfg.augment:
            flip = random_flips(idx.numel(), gen)
            x, geo = relight(mirror(x, flip), gen), torch.where(flip[:, None], mirror_geometry(geo), geo)
            target[:, 1] = torch.where(flip, -target[:, 1], target[:, 1])  # offset u in the box
        return centre_loss(head(x, geo, cls), target, cw[cls])

    heldout = None if val is None else lambda: centre_errors(head, val, image_hw)
    return train_epochs(head, head.parameters(), cfg, int(train["cls"].shape[0]), batch_loss, heldout, log)

def with_centre_head(model: torch.nn.Module, cfg: Any, stage: CentreStageConfig) -> tuple[torch.nn.Module, Any]:
    """-> (the network with a fresh centre head of the stage's size, its config). An existing
    head of the same size is kept (training continues from it)."""
    return with_head(model, cfg, "centre_head", {"centre_width": stage.width, "centre_crop": stage.crop},
                     lambda c: CentreHead(c.num_classes, stage.crop, stage.width))
