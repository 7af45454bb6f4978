"""What the head-only training stages (yaw, centre, up, class, shape) share: the row each
writes to its history at the end of an epoch, and how each puts its head on the network.

They share it so their histories stay alike (the same keys, rounding and order) and so every
``with_*_head`` keeps or replaces a head by the same rule.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

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
