"""Train a network's up head on its own (roca-train-up): image thumbnails -> the camera-frame up
direction, with the rest of the network frozen.

The thumbnails and their up directions come from the crop cache
(``roca_core.training.crop_cache``), so an epoch over the 7600 training images of the demo data
takes seconds on one CPU thread. The result is the same network with its up head trained
(``model.up_width`` set), ready for roca-eval, the node and further joint training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from roca_core.model.up_head import UpHead, angle_deg, up_loss
from roca_core.training.head_epochs import HeadStageConfig, train_epochs, with_head


@dataclass
class UpStageConfig(HeadStageConfig):
    width: int = 16
    epochs: int = 30
    batch: int = 64


@torch.no_grad()
def up_errors(head: UpHead, data: dict[str, torch.Tensor], batch: int = 256) -> dict[str, float]:
    """Angle between predicted and true up over the images: median, shares within 2 and 5
    degrees."""
    head.eval()
    err = [angle_deg(head(data["thumbs"][j:j + batch].float() / 255), data["up"][j:j + batch])
           for j in range(0, data["up"].shape[0], batch)]
    head.train()
    if not err:
        return {"images": 0}
    e = torch.cat(err)
    return {"median_error_deg": float(e.median()), "within_2deg": float((e <= 2).float().mean()),
            "within_5deg": float((e <= 5).float().mean()), "images": int(e.numel())}


def train_up_head(head: UpHead, train: dict[str, torch.Tensor], val: "dict[str, torch.Tensor] | None",
                  cfg: UpStageConfig, log: "Callable[[dict[str, Any]], None] | None" = None) -> list[dict[str, Any]]:
    """AdamW with cosine decay on the up loss; -> one dict per epoch (loss, held-out errors,
    seconds). Thumbnails are mirrored left-right half of the time (the up vector's x with them)."""
    mirror = torch.tensor([-1.0, 1.0, 1.0])

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x, up = train["thumbs"][idx].float() / 255, train["up"][idx]
        flip = torch.rand(idx.numel(), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        up = torch.where(flip[:, None], up * mirror, up)
        return up_loss(head(x), up)

    heldout = None if val is None else lambda: up_errors(head, val)
    return train_epochs(head, head.parameters(), cfg, int(train["up"].shape[0]), batch_loss, heldout, log,
                        loss_digits=5)

def with_up_head(model: torch.nn.Module, cfg: Any, stage: UpStageConfig) -> tuple[torch.nn.Module, Any]:
    """-> (the network with a fresh up head of the stage's width, its config). An existing head
    of the same width is kept (training continues from it)."""
    return with_head(model, cfg, "up_head", {"up_width": stage.width}, lambda c: UpHead(stage.width))
