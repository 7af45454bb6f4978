"""Train a network's yaw head on its own (roca-train-yaw): crops of the ground-truth boxes ->
yaw bins, with the rest of the network frozen and untouched.

The yaw head reads image crops only, so it can learn from cached crops
(``roca_core.training.crop_cache``) at a fraction of a full training step's cost: on one CPU
thread an epoch over the 15k objects of the demo data takes about 25 s instead of the hours a
joint schedule would need to give it as many samples. The result is the same network with its
yaw head trained (``model.yaw_bins`` set), ready for roca-eval, the node and further joint
training with roca-train.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from roca_core.model.yaw_head import YawHead, decode_allocentric, mirror_bins, yaw_loss
from roca_core.training.crop_augment import mirror, random_flips, relight, shift_zoom
from roca_core.training.head_epochs import HeadStageConfig, train_epochs, with_head


@dataclass
class YawStageConfig(HeadStageConfig):
    bins: int = 8
    crop: int = 32
    width: int = 16
    epochs: int = 40
    # Augment the training crops (``augment_crops``): mirror, shift and zoom, brightness and
    # contrast. Without it the head overfits the 15k crops after about 20 epochs.
    augment: bool = False


def augment_crops(x: torch.Tensor, allowed: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 3, S, S) crops in [0, 1] and allowed (B, bins) right bins -> both augmented: half
    mirrored (with their bins, ``mirror_bins``), each shifted, zoomed and relit
    (``crop_augment``)."""
    flip = random_flips(x.shape[0], gen)
    allowed = torch.where(flip[:, None], allowed[:, mirror_bins(allowed.shape[1])], allowed)
    return relight(shift_zoom(mirror(x, flip), gen), gen), allowed


@torch.no_grad()
def yaw_accuracy(head: YawHead, data: dict[str, torch.Tensor], batch: int = 512) -> dict[str, float]:
    """Over the objects with a yaw: share whose top bin is a right one, within one bin, and
    (with ``allo``/``fold`` in the data) whose decoded yaw, as the network uses it, is within
    20 degrees (the alignment metric's threshold) up to the CAD's symmetry; median error."""
    head.eval()
    sel = torch.where(data["valid"])[0]
    exact = near = 0
    errors = []
    for j in range(0, sel.numel(), batch):
        idx = sel[j:j + batch]
        logits = head(data["x"][idx].float() / 255, data["cls"][idx])
        top = logits.argmax(dim=1)
        allowed = data["allowed"][idx]
        b = allowed.shape[1]
        ar = torch.arange(idx.numel())
        exact += int(allowed[ar, top].sum())
        near += int((allowed[ar, top] | allowed[ar, (top + 1) % b] | allowed[ar, (top - 1) % b]).sum())
        if "allo" in data:
            pred, _ = decode_allocentric(logits)
            f = data["fold"][idx].clamp_min(1).float()
            err = torch.remainder((pred - data["allo"][idx]) * f + math.pi, 2 * math.pi) - math.pi
            errors.append((err / f).abs() * (180 / math.pi))
    head.train()
    n = max(1, sel.numel())
    out = {"exact": exact / n, "within_one_bin": near / n, "objects": int(sel.numel())}
    if errors:
        err = torch.cat(errors)
        out.update(within_20deg=float((err < 20).float().mean()), median_error_deg=float(err.median()))
    return out


def chance_levels(data: dict[str, torch.Tensor]) -> dict[str, float]:
    """What a guess of a uniformly random bin scores: symmetric objects have several right
    bins, so chance is above 1 / bins."""
    allowed = data["allowed"][data["valid"]]
    if allowed.shape[0] == 0:
        return {"exact": 0.0, "within_one_bin": 0.0}
    near = allowed | allowed.roll(1, dims=1) | allowed.roll(-1, dims=1)
    return {"exact": allowed.float().mean().item(), "within_one_bin": near.float().mean().item()}


def train_yaw_head(head: YawHead, train: dict[str, torch.Tensor], val: "dict[str, torch.Tensor] | None",
                   cfg: YawStageConfig, log: "Callable[[dict[str, Any]], None] | None" = None,
                   class_weight: "torch.Tensor | None" = None) -> list[dict[str, Any]]:
    """AdamW with cosine decay on the yaw loss (``head_epochs.train_epochs``); -> one dict per
    epoch (loss, held-out accuracy, seconds)."""
    cw = class_weight if class_weight is not None else torch.ones(head.num_classes)

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cls = train["cls"][idx]
        x, allowed = train["x"][idx].float() / 255, train["allowed"][idx]
        if cfg.augment:
            x, allowed = augment_crops(x, allowed, gen)
        return yaw_loss(head(x, cls), allowed, train["valid"][idx], cw[cls])

    heldout = None if val is None else lambda: yaw_accuracy(head, val)
    return train_epochs(head, head.parameters(), cfg, torch.where(train["valid"])[0], batch_loss, heldout, log)

def with_yaw_head(model: torch.nn.Module, cfg: Any, stage: YawStageConfig) -> tuple[torch.nn.Module, Any]:
    """-> (the network with a fresh yaw head of the stage's size, its config). An existing
    head of the same size is kept (training continues from it)."""
    return with_head(model, cfg, "yaw_head", {"yaw_bins": stage.bins, "yaw_crop": stage.crop, "yaw_width": stage.width},
                     lambda c: YawHead(c.num_classes, stage.bins, stage.crop, stage.width))
