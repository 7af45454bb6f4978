"""What the head-only training stages (yaw, centre, up, class, shape, retrieval) share: the
epoch loop, the row each writes to its history at the end of an epoch, and how each puts its
head on the network.

They share it so every stage optimises by the same recipe (AdamW, cosine decay, a seeded new
order each epoch), their histories stay alike (the same keys, rounding and order) and every
``with_*_head`` keeps or replaces a head by the same rule. A stage only says what one batch's
loss is.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch


def epoch_row(epoch: int, mean_loss: float, t0: float, heldout: "Callable[[], dict[str, Any]] | None" = None,
              loss_digits: int = 4) -> dict[str, Any]:
    """One epoch's history row: the 1-based epoch, the mean loss, the seconds since ``t0`` and,
    when ``heldout`` is given, its numbers prefixed ``heldout_`` (floats to 4 places).
    ``heldout`` is called after the clock is read, so the seconds are training time only."""
    row: dict[str, Any] = {"epoch": epoch + 1, "loss": round(mean_loss, loss_digits),
                           "seconds": round(time.time() - t0, 1)}
    if heldout is not None:
        row.update({f"heldout_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in heldout().items()})
    return row


@dataclass
class HeadStageConfig:
    """The settings every head stage has: ``train_epochs``'s recipe and how its samples are
    made. Each stage's config adds its own (crop side, widths, augmentation) and its defaults."""
    epochs: int = 10
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    workers: int = 2  # processes that make the samples (cut crops, run the detector)
    max_train_images: int = 0  # 0: all


def train_epochs(module: torch.nn.Module, params: Iterable[torch.nn.Parameter], cfg: HeadStageConfig,
                 samples: "torch.Tensor | int", batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                 heldout: "Callable[[], dict[str, Any]] | None" = None,
                 log: "Callable[[dict[str, Any]], None] | None" = None, loss_digits: int = 4) -> list[dict[str, Any]]:
    """AdamW on ``params`` (``cfg.lr``, ``cfg.weight_decay``) with cosine decay over
    ``cfg.epochs``; -> one ``epoch_row`` per epoch.

    ``samples``: the indices to train on (R,), or their count. Each epoch visits them in a new
    order drawn from a generator seeded with ``cfg.seed``, in batches of ``cfg.batch``;
    ``batch_loss(idx, gen)`` -> that batch's mean loss (``gen`` for its augmentation).
    ``module`` is in training mode during the epochs, in eval mode after them."""
    gen = torch.Generator().manual_seed(cfg.seed)
    sel = torch.arange(samples) if isinstance(samples, int) else samples  # (R,)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs))
    history: list[dict[str, Any]] = []
    t0 = time.time()
    module.train()
    for epoch in range(cfg.epochs):
        perm = sel[torch.randperm(sel.numel(), generator=gen)]
        total = 0.0
        for j in range(0, perm.numel(), cfg.batch):
            idx = perm[j:j + cfg.batch]
            loss = batch_loss(idx, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        sched.step()
        append_row(history, epoch_row(epoch, total / max(1, sel.numel()), t0, heldout, loss_digits), log)
    module.eval()
    return history


def append_row(history: list[dict[str, Any]], row: dict[str, Any],
               log: "Callable[[dict[str, Any]], None] | None" = None) -> None:
    """Add ``row`` to ``history`` and hand it to ``log`` (when there is one)."""
    history.append(row)
    if log is not None:
        log(row)


def with_head(model: torch.nn.Module, cfg: Any, attr: str, fields: dict[str, Any],
              build: Callable[[Any], torch.nn.Module],
              keep_if: "tuple[str, ...] | None" = None) -> tuple[torch.nn.Module, Any]:
    """-> (the network with its head ``model.<attr>`` for a stage, the config with ``fields``
    (config field -> the stage's value) set). An existing head is kept (training continues
    from it) when ``cfg`` already holds the stage's values in the ``keep_if`` fields (its size;
    all of ``fields`` when None), else ``build(new_cfg)`` replaces it."""
    new_cfg = dataclasses.replace(cfg, **fields)
    keys = tuple(fields) if keep_if is None else keep_if
    if getattr(model, attr, None) is None or tuple(getattr(cfg, k) for k in keys) != tuple(fields[k] for k in keys):
        setattr(model, attr, build(new_cfg))
    model.cfg = new_cfg
    return model, new_cfg
