"""Depth error over all valid pixels of a dataset (ground truth > 0, prediction finite).

Pixels are pooled across images (not averaged per image) so large and small images weigh
by their valid pixel counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class DepthResult:
    abs_rel: float  # mean |d - d*| / d*
    rmse_m: float
    mae_m: float
    delta_1_25: float  # percent of pixels with max(d/d*, d*/d) < 1.25
    num_pixels: int

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> "float | None":
            return None if not math.isfinite(x) else float(x)
        return {"abs_rel": num(self.abs_rel), "rmse_m": num(self.rmse_m), "mae_m": num(self.mae_m),
                "delta_1_25": num(self.delta_1_25), "num_pixels": int(self.num_pixels)}


class DepthErrorAccumulator:
    """Running sums of depth errors; ``add`` one image at a time."""

    def __init__(self) -> None:
        self._n = 0
        self._abs = 0.0
        self._sq = 0.0
        self._rel = 0.0
        self._delta = 0

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray) -> None:
        """pred_m, gt_m: (H, W) metres; a prediction of another size is resized bilinearly."""
        pred = np.asarray(pred_m, dtype=np.float64)
        gt = np.asarray(gt_m, dtype=np.float64)
        if gt.ndim != 2 or pred.ndim != 2:
            raise ValueError(f"depth maps must be (H, W); got {pred.shape} and {gt.shape}")
        if pred.shape != gt.shape:
            import cv2
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        valid = (gt > 0) & np.isfinite(gt) & np.isfinite(pred)
        if not valid.any():
            return
        p, g = pred[valid], gt[valid]
        err = p - g
        self._n += int(valid.sum())
        self._abs += float(np.abs(err).sum())
        self._sq += float((err * err).sum())
        self._rel += float((np.abs(err) / g).sum())
        ratio = np.maximum(p / g, g / np.maximum(p, 1e-9))
        self._delta += int((ratio < 1.25).sum())

    def result(self) -> DepthResult:
        if self._n == 0:
            nan = float("nan")
            return DepthResult(nan, nan, nan, nan, 0)
        return DepthResult(self._rel / self._n, math.sqrt(self._sq / self._n), self._abs / self._n,
                           100.0 * self._delta / self._n, self._n)
