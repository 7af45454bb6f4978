"""Where alignment fails: pose errors of the closest same-class prediction, per component.

The Scan2CAD accuracy is all-or-nothing per object, so a low score does not say whether
translation, rotation or scale is the problem. For every ground-truth object this takes the
prediction of its frame and class (score above the threshold) closest in translation and
reports the three errors separately: medians and the share within each threshold alone, over
all classes and per class (:func:`pose_errors_by_class`). The share of rotations off by more than
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


def pose_error_summary(preds: Sequence[PredObject], gts: Sequence[GtObject],
                       thresholds: "AlignmentThresholds | None" = None) -> PoseErrorSummary:
    th = thresholds or AlignmentThresholds()
    by_key: dict[tuple[str, Hashable, str], list[PredObject]] = defaultdict(list)
    for p in preds:
        if p.score > th.score:
            by_key[(p.scene_id, p.frame_id, p.class_name)].append(p)
    t_err, r_err, s_err = [], [], []
    for g in gts:
        cands = by_key.get((g.scene_id, g.frame_id, g.class_name))
        if not cands:
            continue
        dists = [float(np.linalg.norm(np.asarray(p.t) - g.t)) for p in cands]
        best = cands[int(np.argmin(dists))]
        t_err.append(min(dists))
        r_err.append(rotation_error_deg(best.q, g.q, g.sym))
        s_err.append(scale_ratio_error(best.s, g.s))
    n = len(t_err)
    if n == 0:
        return PoseErrorSummary(len(gts), 0, None, None, None, None, None, None, None, None)
    t, r, s = np.array(t_err), np.array(r_err), np.array(s_err)
    ok_t, ok_r, ok_s = t <= th.translation_m, r <= th.rotation_deg, s <= th.scale_ratio
    pct = lambda m: float(100.0 * m.mean())  # noqa: E731
    return PoseErrorSummary(
        num_gt=len(gts), num_with_prediction=n, median_translation_m=float(np.median(t)),
        median_rotation_deg=float(np.median(r)), median_scale_error=float(np.median(s)),
        within_translation=pct(ok_t), within_rotation=pct(ok_r), within_scale=pct(ok_s),
        within_all=pct(ok_t & ok_r & ok_s), flipped=pct(r > FLIP_DEG))


def pose_errors_by_class(preds: Sequence[PredObject], gts: Sequence[GtObject],
                         thresholds: "AlignmentThresholds | None" = None) -> dict[str, PoseErrorSummary]:
    """:func:`pose_error_summary` of each class that has ground-truth objects, by class name."""
    by_class: dict[str, list[GtObject]] = defaultdict(list)
    for g in gts:
        by_class[g.class_name].append(g)
    return {c: pose_error_summary([p for p in preds if p.class_name == c], objs, thresholds)
            for c, objs in sorted(by_class.items())}
