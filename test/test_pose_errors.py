"""pose_error_summary on hand-made cases: which component of a pose is off."""
from __future__ import annotations

import numpy as np
import pytest

from roca_core.classes import Symmetry
from roca_core.evaluation.alignment_metric import AlignmentThresholds, GtObject, PredObject
from roca_core.evaluation.pose_errors import pose_error_summaries, pose_error_summary

IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


def _yaw(deg: float) -> np.ndarray:
    h = np.radians(deg) / 2
    return np.array([np.cos(h), 0.0, np.sin(h), 0.0])


def gt(t, cls="chair", frame=0, q=IDENTITY, s=(1.0, 1.0, 1.0), sym=Symmetry.NONE) -> GtObject:
    return GtObject("s0", frame, cls, np.array(t, float), q, np.array(s, float), sym)


def pred(t, cls="chair", frame=0, q=IDENTITY, s=(1.0, 1.0, 1.0), score=0.9) -> PredObject:
    return PredObject("s0", frame, cls, score, np.array(t, float), q, np.array(s, float))


def test_each_component_is_measured_on_the_closest_same_class_prediction():
    gts = [gt([0, 0, 2]), gt([1, 0, 3], cls="table"), gt([-1, 0, 2], frame=1)]
    preds = [
        pred([0.1, 0, 2]),                       # chair frame 0: 10 cm off, exact otherwise
        pred([3, 0, 2], q=_yaw(90)),             # a farther chair: ignored
        pred([1, 0, 3.5], cls="table", q=_yaw(30), s=(1.5, 1.5, 1.5)),  # 50 cm, 30 deg, +50 %
        pred([-1, 0, 2], cls="table", frame=1),  # wrong class for the frame-1 chair
    ]
    r = pose_error_summary(preds, gts)
    assert r.num_gt == 3 and r.num_with_prediction == 2
    assert r.median_translation_m == pytest.approx(0.3)
    assert r.median_rotation_deg == pytest.approx(15.0)
    assert r.median_scale_error == pytest.approx(0.25)
    assert (r.within_translation, r.within_rotation, r.within_scale, r.within_all) == (50.0, 50.0, 50.0, 50.0)


def test_symmetry_and_score_threshold_apply():
    gts = [gt([0, 0, 2], cls="table", sym=Symmetry.ROTATE_UP_2)]
    flipped = [pred([0, 0, 2], cls="table", q=_yaw(180))]
    assert pose_error_summary(flipped, gts).median_rotation_deg == pytest.approx(0.0, abs=1e-6)
    weak = [pred([0, 0, 2], cls="table", score=0.4)]
    r = pose_error_summary(weak, gts, AlignmentThresholds(score=0.5))
    assert r.num_with_prediction == 0 and r.median_translation_m is None and r.within_all is None


def test_per_class_errors_and_the_share_turned_round():
    gts = [gt([0, 0, 2], cls="bed"), gt([2, 0, 3], cls="bed"), gt([0, 0, 4])]
    preds = [pred([0, 0, 2], cls="bed", q=_yaw(175)),   # a bed turned round: its head at the foot
             pred([2, 0, 3], cls="bed", q=_yaw(90)),    # one a quarter turn off
             pred([0, 0, 4], q=_yaw(5))]                # the chair nearly right
    by_class = pose_error_summaries(preds, gts)[1]
    assert list(by_class) == ["bed", "chair"]
    assert by_class["bed"].flipped == 50.0 and by_class["bed"].within_rotation == 0.0
    assert by_class["chair"].flipped == 0.0 and by_class["chair"].within_all == 100.0
    assert pose_error_summary(preds, gts).flipped == pytest.approx(100 / 3)
    assert pose_error_summaries([], gts)[1]["bed"].flipped is None  # no prediction: undefined, not 0
