"""COCO-style box and mask AP at IoU 0.5, in numpy.

Follows COCOeval's recipe (area range "all", no crowd regions): per image and class,
detections in score order take the unmatched ground truth of highest IoU >= threshold;
then per class, over all images, the precision envelope is sampled at 101 recall points.
Images are reduced to (score, true-positive) pairs as they come, so masks are never kept.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from roca_core.classes import CLASS_NAMES

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy -> (N, M) IoU."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def mask_iou(a_masks: np.ndarray, b_masks: np.ndarray) -> np.ndarray:
    """(N, H, W), (M, H, W) boolean masks -> (N, M) IoU."""
    a = np.asarray(a_masks).astype(bool)
    b = np.asarray(b_masks).astype(bool)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask_iou: mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    af = a.reshape(len(a), -1).astype(np.float32)
    bf = b.reshape(len(b), -1).astype(np.float32)
    inter = af @ bf.T
    union = af.sum(1)[:, None] + bf.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(iou: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy COCO matching; iou (D, G) with detections already in score order -> TP flags (D,)."""
    num_det, num_gt = iou.shape
    tp = np.zeros(num_det, dtype=bool)
    taken = np.zeros(num_gt, dtype=bool)
    for d in range(num_det):
        if num_gt == 0:
            break
        cand = np.where(taken, -1.0, iou[d])
        g = int(np.argmax(cand))
        if cand[g] >= iou_threshold:
            tp[d] = True
            taken[g] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP (fraction in [0, 1]); nan when there is no ground truth."""
    if num_gt <= 0:
        return float("nan")
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.asarray(tp, dtype=bool)[order]
    tps = np.cumsum(tp)
    fps = np.cumsum(~tp)
    recall = tps / num_gt
    precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
    # Precision envelope: best precision at any recall at least as high.
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.zeros(len(RECALL_POINTS))
    ok = idx < len(precision)
    sampled[ok] = precision[idx[ok]]
    return float(sampled.mean())


@dataclass
class DetectionResult:
    """AP50 in percent (nan without ground truth)."""

    box_ap50: float
    mask_ap50: float
    per_class_box: dict[str, float]
    per_class_mask: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> "float | None":
            return None if not np.isfinite(x) else float(x)
        return {"box_ap50": num(self.box_ap50), "mask_ap50": num(self.mask_ap50),
                "per_class_box_ap50": {k: num(v) for k, v in self.per_class_box.items()},
                "per_class_mask_ap50": {k: num(v) for k, v in self.per_class_mask.items()}}


class DetectionAPAccumulator:
    """Collects images one by one; ``result()`` gives box and mask AP50 over them.

    Class ids are 0-based indices into ``class_names``.
    """

    def __init__(self, class_names: Sequence[str] = CLASS_NAMES, iou_threshold: float = 0.5,
                 max_detections: int = 100) -> None:
        self.class_names = tuple(class_names)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self._num_gt: dict[int, int] = defaultdict(int)
        self._scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self._tp_box: dict[int, list[np.ndarray]] = defaultdict(list)
        self._tp_mask: dict[int, list[np.ndarray]] = defaultdict(list)
        self._has_masks = True

    def add(self, pred_classes: np.ndarray, pred_scores: np.ndarray, pred_boxes: np.ndarray,
            gt_classes: np.ndarray, gt_boxes: np.ndarray,
            pred_masks: "np.ndarray | None" = None, gt_masks: "np.ndarray | None" = None) -> None:
        """One image: predictions (D,), (D,), (D, 4) xyxy [, (D, H, W)]; GT (G,), (G, 4) [, (G, H, W)]."""
        pc = np.asarray(pred_classes, dtype=np.int64).reshape(-1)
        ps = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        pb = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
        gc = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
        gb = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        if not (len(pc) == len(ps) == len(pb)):
            raise ValueError(f"prediction arrays disagree in length: {len(pc)}, {len(ps)}, {len(pb)}")
        if len(gc) != len(gb):
            raise ValueError(f"ground-truth arrays disagree in length: {len(gc)}, {len(gb)}")
        use_masks = pred_masks is not None and gt_masks is not None
        if not use_masks:
            self._has_masks = False
        else:
            pred_masks = np.asarray(pred_masks)
            gt_masks = np.asarray(gt_masks)
            if len(pred_masks) != len(pc) or len(gt_masks) != len(gc):
                raise ValueError("mask counts differ from box counts")
        for c in np.unique(np.concatenate([pc, gc])):
            c = int(c)
            if not 0 <= c < len(self.class_names):
                raise ValueError(f"class id {c} outside 0..{len(self.class_names) - 1}")
            di = np.where(pc == c)[0]
            di = di[np.argsort(-ps[di], kind="mergesort")][: self.max_detections]
            gi = np.where(gc == c)[0]
            self._num_gt[c] += len(gi)
            if len(di) == 0:
                continue
            self._scores[c].append(ps[di])
            self._tp_box[c].append(match_detections(box_iou(pb[di], gb[gi]), self.iou_threshold))
            if use_masks:
                iou = (mask_iou(pred_masks[di], gt_masks[gi]) if len(gi)
                       else np.zeros((len(di), 0)))
                self._tp_mask[c].append(match_detections(iou, self.iou_threshold))

    def result(self) -> DetectionResult:
        per_box: dict[str, float] = {}
        per_mask: dict[str, float] = {}
        for c, name in enumerate(self.class_names):
            n = self._num_gt.get(c, 0)
            if n == 0:
                continue
            scores = np.concatenate(self._scores[c]) if self._scores[c] else np.zeros(0)
            tp_b = np.concatenate(self._tp_box[c]) if self._tp_box[c] else np.zeros(0, bool)
            per_box[name] = 100.0 * average_precision(scores, tp_b, n)
            if self._has_masks:
                tp_m = np.concatenate(self._tp_mask[c]) if self._tp_mask[c] else np.zeros(0, bool)
                per_mask[name] = 100.0 * average_precision(scores, tp_m, n)
        box = float(np.mean(list(per_box.values()))) if per_box else float("nan")
        mask = float(np.mean(list(per_mask.values()))) if per_mask else float("nan")
        return DetectionResult(box, mask, per_box, per_mask)
