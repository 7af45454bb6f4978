"""Where alignment fails: pose errors of the closest same-class prediction, per component.

The Scan2CAD accuracy is all-or-nothing per object, so a low score does not say whether
translation, rotation or scale is the problem. For every ground-truth object this takes the
prediction of its frame and class (score above the threshold) closest in translation and
reports the three errors separately: medians and the share within each threshold alone, over
all classes and per class (:func:`pose_error_summaries`). The share of rotations off by more than
``FLIP_DEG`` tells a front/back confusion (an object turned round) from a poor estimate.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Hashable, Sequence

import numpy as np

from roca_core.evaluation.alignment_metric import (AlignmentThresholds, GtObject, PredObject,
                                                   rotation_error_deg, scale_ratio_error)

FLIP_DEG = 160.0  # a rotation error beyond this is an object turned round, not a poor estimate


@dataclass
class PoseErrorSummary:
    num_gt: int
    num_with_prediction: int  # GT objects whose frame has a same-class prediction
    median_translation_m: "float | None"
    median_rotation_deg: "float | None"
    median_scale_error: "float | None"  # |mean(s_pred / s_gt) - 1|
    # percent of the GT objects with a prediction whose error is within each threshold alone,
    # and within all three (the alignment test without the one-to-one matching)
    within_translation: "float | None"
    within_rotation: "float | None"
    within_scale: "float | None"
    within_all: "float | None"
    flipped: "float | None" = None  # percent whose rotation error exceeds FLIP_DEG

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _closest_errors(preds: Sequence[PredObject], gts: Sequence[GtObject],
                    th: AlignmentThresholds) -> list["tuple[float, float, float] | None"]:
    """Per ground-truth object: (translation m, rotation deg, scale) errors of the closest
    same-class prediction of its frame above the score threshold, or None without one."""
    by_key: dict[tuple[str, Hashable, str], list[PredObject]] = defaultdict(list)
    for p in preds:
        if p.score > th.score:
            by_key[(p.scene_id, p.frame_id, p.class_name)].append(p)
    out: list["tuple[float, float, float] | None"] = []
    for g in gts:
        cands = by_key.get((g.scene_id, g.frame_id, g.class_name))
        if not cands:
            out.append(None)
            continue
        dists = [float(np.linalg.norm(np.asarray(p.t) - g.t)) for p in cands]
        best = cands[int(np.argmin(dists))]
        out.append((min(dists), rotation_error_deg(best.q, g.q, g.sym), scale_ratio_error(best.s, g.s)))
    return out


def _summarise(errors: Sequence["tuple[float, float, float] | None"], th: AlignmentThresholds) -> PoseErrorSummary:
    found = [e for e in errors if e is not None]
    if not found:
        return PoseErrorSummary(len(errors), 0, None, None, None, None, None, None, None, None)
    t, r, s = (np.array(col) for col in zip(*found))
    ok_t, ok_r, ok_s = t <= th.translation_m, r <= th.rotation_deg, s <= th.scale_ratio
    pct = lambda m: float(100.0 * m.mean())  # noqa: E731
    return PoseErrorSummary(
        num_gt=len(errors), num_with_prediction=len(found), median_translation_m=float(np.median(t)),
        median_rotation_deg=float(np.median(r)), median_scale_error=float(np.median(s)),
        within_translation=pct(ok_t), within_rotation=pct(ok_r), within_scale=pct(ok_s),
        within_all=pct(ok_t & ok_r & ok_s), flipped=pct(r > FLIP_DEG))


def pose_error_summaries(preds: Sequence[PredObject], gts: Sequence[GtObject],
                         thresholds: "AlignmentThresholds | None" = None
                         ) -> tuple[PoseErrorSummary, dict[str, PoseErrorSummary]]:
    """-> (the summary over all ground-truth objects, that of each class that has some, by
    class name), from one search for each object's closest prediction."""
    th = thresholds or AlignmentThresholds()
    errors = _closest_errors(preds, gts, th)
    by_class: dict[str, list] = defaultdict(list)
    for g, e in zip(gts, errors):
        by_class[g.class_name].append(e)
    return _summarise(errors, th), {c: _summarise(e, th) for c, e in sorted(by_class.items())}


def pose_error_summary(preds: Sequence[PredObject], gts: Sequence[GtObject],
                       thresholds: "AlignmentThresholds | None" = None) -> PoseErrorSummary:
    """The summary over all ground-truth objects."""
    th = thresholds or AlignmentThresholds()
    return _summarise(_closest_errors(preds, gts, th), th)

