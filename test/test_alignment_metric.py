"""Scan2CAD alignment accuracy on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from roca_core.classes import BENCHMARK_CLASSES, Symmetry
from roca_core.evaluation.alignment_metric import (AlignmentThresholds, GtObject, PredObject,
                                                   evaluate_alignment, quat_multiply,
                                                   rotation_error_deg, symmetry_quaternions)
from roca_core.geometry.rotations import (matrix_to_quat_np, quat_to_matrix_np,
                                          rotation_about_y_np)

Q_ID = np.array([1.0, 0.0, 0.0, 0.0])


def quat_y(deg: float) -> np.ndarray:
    return matrix_to_quat_np(rotation_about_y_np(math.radians(deg)))


def quat_x(deg: float) -> np.ndarray:
    h = math.radians(deg) / 2
    return np.array([math.cos(h), math.sin(h), 0.0, 0.0])


def gt(cls="table", t=(0.0, 0.0, 2.0), q=Q_ID, s=(1.0, 0.8, 0.6), sym=Symmetry.NONE,
       cad="cad_a", frame=0, scene="s0", object_id=None) -> GtObject:
    return GtObject(scene, frame, cls, np.array(t), np.array(q), np.array(s), sym, cad, object_id)


def pred(cls="table", t=(0.0, 0.0, 2.0), q=Q_ID, s=(1.0, 0.8, 0.6), score=0.9, cad="cad_a",
         frame=0, scene="s0", sym=Symmetry.NONE) -> PredObject:
    return PredObject(scene, frame, cls, score, np.array(t), np.array(q), np.array(s), cad, sym)


def accuracy(preds, gts, **kw) -> float:
    return evaluate_alignment(preds, gts, **kw).instance_mean


# A tilted, yawed ground-truth orientation so symmetry composition order matters.
Q_TILTED = quat_multiply(quat_x(30.0), quat_y(25.0))


def test_symmetry_composes_in_the_object_frame():
    """R(q_sym) == R_gt @ R_y(2 pi k / n): the symmetry acts on the canonical frame."""
    r_gt = quat_to_matrix_np(Q_TILTED)
    for k, q in enumerate(symmetry_quaternions(Q_TILTED, Symmetry.ROTATE_UP_4)):
        expected = r_gt @ rotation_about_y_np(2 * math.pi * k / 4)
        np.testing.assert_allclose(quat_to_matrix_np(q), expected, atol=1e-12)


def test_symmetric_table_rotated_180_is_correct_but_not_without_symmetry():
    q_flipped = quat_multiply(Q_TILTED, quat_y(180.0))  # 180 degrees about the object's up
    for sym, expected in ((Symmetry.ROTATE_UP_2, 100.0), (Symmetry.ROTATE_UP_4, 100.0),
                          (Symmetry.NONE, 0.0)):
        assert accuracy([pred(q=q_flipped)], [gt(q=Q_TILTED, sym=sym)]) == expected, sym


def test_symmetry_about_the_camera_y_axis_is_not_the_object_up_axis():
    """Rotating a tilted object by 180 degrees about the *camera* y axis is wrong."""
    q_wrong = quat_multiply(quat_y(180.0), Q_TILTED)
    assert rotation_error_deg(q_wrong, Q_TILTED, Symmetry.ROTATE_UP_2) > 20.0
    assert accuracy([pred(q=q_wrong)], [gt(q=Q_TILTED, sym=Symmetry.ROTATE_UP_2)]) == 0.0


def test_rotate_up_4_accepts_90_but_up_2_does_not():
    q90 = quat_multiply(Q_TILTED, quat_y(90.0))
    assert accuracy([pred(q=q90)], [gt(q=Q_TILTED, sym=Symmetry.ROTATE_UP_4)]) == 100.0
    assert accuracy([pred(q=q90)], [gt(q=Q_TILTED, sym=Symmetry.ROTATE_UP_2)]) == 0.0


@pytest.mark.parametrize("yaw", [0.0, 37.0, 95.0, 181.0, 263.0, 359.0])
def test_infinite_symmetry_is_correct_at_any_yaw(yaw):
    q = quat_multiply(Q_TILTED, quat_y(yaw))
    assert accuracy([pred(q=q)], [gt(q=Q_TILTED, sym=Symmetry.ROTATE_UP_INF)]) == 100.0
    # 36 steps of 10 degrees: the residual error is at most 5 degrees.
    assert rotation_error_deg(q, Q_TILTED, Symmetry.ROTATE_UP_INF) <= 5.0 + 1e-9


def test_rotation_error_threshold_20_degrees():
    assert accuracy([pred(q=quat_x(19.0))], [gt()]) == 100.0
    assert accuracy([pred(q=quat_x(21.0))], [gt()]) == 0.0
    # Sign of the quaternion does not matter (|<q1, q2>|).
    assert rotation_error_deg(-quat_x(10.0), Q_ID) == pytest.approx(10.0)


def test_translation_19cm_correct_21cm_not():
    direction = np.array([1.0, -2.0, 2.0]) / 3.0
    base = np.array([0.0, 0.0, 2.0])
    assert accuracy([pred(t=base + 0.19 * direction)], [gt(t=base)]) == 100.0
    assert accuracy([pred(t=base + 0.21 * direction)], [gt(t=base)]) == 0.0


def test_scale_ratio_threshold():
    s = np.array([1.0, 0.8, 0.6])
    assert accuracy([pred(s=1.19 * s)], [gt(s=s)]) == 100.0
    assert accuracy([pred(s=1.21 * s)], [gt(s=s)]) == 0.0
    assert accuracy([pred(s=0.81 * s)], [gt(s=s)]) == 100.0
    # The mean of the per-axis ratios counts: (1.5 + 0.7 + 0.9) / 3 = 1.0333 is fine.
    assert accuracy([pred(s=s * [1.5, 0.7, 0.9])], [gt(s=s)]) == 100.0


def test_wrong_class_never_matches():
    res = evaluate_alignment([pred(cls="chair", score=0.99)], [gt(cls="table")])
    assert res.instance_mean == 0.0 and res.retrieval_aware.instance_mean == 0.0


def test_duplicates_count_once():
    gts = [gt()]
    preds = [pred(score=0.9), pred(score=0.8, t=(0.01, 0.0, 2.0))]
    res = evaluate_alignment(preds, gts)
    assert res.num_correct == {"table": 1} and res.instance_mean == 100.0
    # Two GT objects, two predictions on the first one: 1 of 2 is correct.
    gts2 = [gt(), gt(t=(1.5, 0.0, 3.0), cad="cad_b")]
    assert accuracy(preds, gts2) == 50.0


def test_greedy_in_score_order_each_gt_once():
    """Two GTs close together: each prediction takes the nearest free one."""
    gts = [gt(t=(0.0, 0.0, 2.0)), gt(t=(0.25, 0.0, 2.0))]
    preds = [pred(t=(0.12, 0.0, 2.0), score=0.9), pred(t=(0.30, 0.0, 2.0), score=0.8)]
    # Within frame mode the merge would drop the second (0.18 m from the first), so
    # evaluate with merging disabled to exercise the matcher alone.
    no_merge = AlignmentThresholds(merge_translation_m=-1.0)
    assert accuracy(preds, gts, thresholds=no_merge) == 100.0


def test_score_threshold_is_strict():
    assert accuracy([pred(score=0.5)], [gt()]) == 0.0
    assert accuracy([pred(score=0.51)], [gt()]) == 100.0


def test_retrieval_aware_needs_the_cad_id():
    res = evaluate_alignment([pred(cad="cad_other")], [gt(cad="cad_a")])
    assert res.instance_mean == 100.0
    assert res.retrieval_aware.instance_mean == 0.0
    res = evaluate_alignment([pred(cad=None)], [gt(cad="cad_a")])
    assert res.retrieval_aware.instance_mean == 0.0
    res = evaluate_alignment([pred(cad="cad_a")], [gt(cad="cad_a")])
    assert res.retrieval_aware.instance_mean == 100.0


def _random_scene(rng: np.random.Generator, n_frames=4, per_frame=3):
    classes = ["table", "chair", "bed", "sofa", "bin"]
    gts = []
    for f in range(n_frames):
        for k in range(per_frame):
            q = rng.normal(size=4)
            gts.append(gt(cls=classes[(f + k) % len(classes)], t=rng.uniform(-2, 2, 3) + [0, 0, 4],
                          q=q / np.linalg.norm(q), s=rng.uniform(0.3, 2.0, 3),
                          sym=list(Symmetry)[k % 4], cad=f"cad_{f}_{k}", frame=f,
                          object_id=f"obj_{f}_{k}"))
    return gts


def test_ground_truth_as_predictions_scores_100_percent_in_both_modes():
    rng = np.random.default_rng(0)
    gts = _random_scene(rng)
    preds = [pred(cls=g.class_name, t=g.t, q=g.q, s=g.s, cad=g.cad_id, frame=g.frame_id,
                  score=0.6 + 0.01 * i, sym=g.sym) for i, g in enumerate(gts)]
    res = evaluate_alignment(preds, gts)
    assert res.class_mean == 100.0 and res.instance_mean == 100.0
    assert res.retrieval_aware.class_mean == 100.0
    assert set(res.per_class) == {"table", "chair", "bed", "sofa", "bin"}
    poses = {}
    for f in range(4):
        m = np.eye(4)
        m[:3, :3] = quat_to_matrix_np(rng.normal(size=4))
        m[:3, 3] = rng.uniform(-5, 5, 3)
        poses[("s0", f)] = m
    res = evaluate_alignment(preds, gts, mode="scene", poses=poses)
    assert res.instance_mean == 100.0 and res.retrieval_aware.instance_mean == 100.0


def _pose(yaw_deg: float, t) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation_about_y_np(math.radians(yaw_deg))
    m[:3, 3] = t
    return m


def test_scene_mode_moves_objects_to_world_and_merges_frames():
    """One chair seen by two cameras; the GT (no object ids) counts once in scene mode."""
    world_pose = _pose(40.0, [1.0, 0.0, 3.0])  # object-to-world rigid part
    poses = {("s0", 0): _pose(0.0, [0.0, 0.0, 0.0]), ("s0", 1): _pose(-70.0, [0.5, 0.2, -1.0])}
    gts, preds = [], []
    for f, cam in poses.items():
        local = np.linalg.inv(cam) @ world_pose  # object pose in this camera
        q = matrix_to_quat_np(local[:3, :3])
        gts.append(gt(cls="chair", t=local[:3, 3], q=q, frame=f[1]))
        preds.append(pred(cls="chair", t=local[:3, 3], q=q, frame=f[1], score=0.9 - 0.1 * f[1]))
    res = evaluate_alignment(preds, gts, mode="scene", poses=poses)
    assert res.num_gt == {"chair": 1} and res.num_correct == {"chair": 1}
    assert res.num_predictions == 1  # the second view's prediction merged away
    frame_res = evaluate_alignment(preds, gts, mode="frame")
    assert frame_res.num_gt == {"chair": 2} and frame_res.instance_mean == 100.0
    # Frame 1's prediction against frame 0's ground truth: right pose matches, a pose
    # shifted by 3 m moves the prediction away in world space.
    assert evaluate_alignment(preds[1:], gts[:1], mode="scene", poses=poses).instance_mean == 100.0
    bad = dict(poses)
    bad[("s0", 1)] = _pose(-70.0, [3.5, 0.2, -1.0])
    assert evaluate_alignment(preds[1:], gts[:1], mode="scene", poses=bad).instance_mean == 0.0


def test_scene_merge_drops_near_duplicate_keeps_far_one():
    gts = [gt(t=(0.0, 0.0, 2.0)), gt(t=(2.0, 0.0, 2.0), cad="cad_b")]
    near_dup = [pred(t=(0.0, 0.0, 2.0), score=0.9), pred(t=(0.3, 0.0, 2.0), score=0.8)]
    res = evaluate_alignment(near_dup, gts)
    assert res.num_predictions == 1
    far = [pred(t=(0.0, 0.0, 2.0), score=0.9), pred(t=(2.0, 0.0, 2.0), score=0.8)]
    res = evaluate_alignment(far, gts)
    assert res.num_predictions == 2 and res.instance_mean == 100.0
    # Same place but rotated 90 degrees: not a duplicate (60 degree merge threshold)...
    rotated = [pred(score=0.9), pred(t=(0.1, 0.0, 2.0), q=quat_y(90.0), score=0.8)]
    assert evaluate_alignment(rotated, gts).num_predictions == 2
    # ... unless the kept prediction's CAD is 4-fold symmetric.
    rotated[0].sym = Symmetry.ROTATE_UP_4
    assert evaluate_alignment(rotated, gts).num_predictions == 1
    # Different scale (ratio beyond 0.6): not a duplicate.
    scaled = [pred(score=0.9), pred(t=(0.1, 0.0, 2.0), s=(2.0, 1.6, 1.2), score=0.8)]
    assert evaluate_alignment(scaled, gts).num_predictions == 2


def test_merge_drops_a_lower_scored_correct_prediction_next_to_a_wrong_one():
    """The merge keeps the higher score even when it is the wrong pose (as the protocol does)."""
    gts = [gt(), gt(t=(3.0, 0.0, 5.0), cad="cad_b")]  # two tables: the cap allows two
    preds = [pred(t=(0.25, 0.0, 2.0), score=0.9), pred(score=0.8)]
    assert accuracy(preds, gts) == 0.0
    assert accuracy(preds, gts, thresholds=AlignmentThresholds(merge_translation_m=-1)) == 50.0


def test_per_class_cap_at_ground_truth_count():
    """Scene with one table: only the best-scored table prediction is kept."""
    gts = [gt()]
    preds = [pred(t=(3.0, 0.0, 5.0), score=0.9), pred(score=0.8)]  # far apart: no merge
    res = evaluate_alignment(preds, gts)
    assert res.num_predictions == 1 and res.instance_mean == 0.0


def test_class_mean_versus_instance_mean_unbalanced():
    # 4 chairs (3 correct), 1 table (0 correct), 1 sofa (1 correct).
    gts, preds = [], []
    for k in range(4):
        g = gt(cls="chair", t=(2.0 * k, 0.0, 3.0), cad=f"chair{k}")
        gts.append(g)
        if k < 3:
            preds.append(pred(cls="chair", t=g.t, cad=g.cad_id))
    gts.append(gt(cls="table", t=(0.0, 2.0, 6.0)))
    preds.append(pred(cls="table", t=(0.0, 2.0, 7.0)))  # 1 m off
    gts.append(gt(cls="sofa", t=(-3.0, 0.0, 6.0), cad="sofa0"))
    preds.append(pred(cls="sofa", t=(-3.0, 0.0, 6.0), cad="sofa1"))  # wrong CAD
    res = evaluate_alignment(preds, gts)
    assert res.per_class == {"chair": 75.0, "table": 0.0, "sofa": 100.0}
    assert res.class_mean == pytest.approx((75.0 + 0.0 + 100.0) / 3)
    assert res.instance_mean == pytest.approx(100.0 * 4 / 6)
    ra = res.retrieval_aware
    assert ra.per_class == {"chair": 75.0, "table": 0.0, "sofa": 0.0}
    assert ra.class_mean == pytest.approx(25.0) and ra.instance_mean == pytest.approx(50.0)
    # Restricting to a class subset: only chair and sofa count.
    sub = evaluate_alignment(preds, gts, classes=["chair", "sofa"])
    assert sub.class_mean == pytest.approx(87.5) and sub.instance_mean == pytest.approx(80.0)


def test_benchmark_classes_ignore_bed_and_missing_classes():
    gts = [gt(cls="bed"), gt(cls="chair", t=(2.0, 0.0, 3.0))]
    preds = [pred(cls="chair", t=(2.0, 0.0, 3.0))]
    res = evaluate_alignment(preds, gts, classes=BENCHMARK_CLASSES)
    assert res.per_class == {"chair": 100.0}  # bed excluded, other classes have no GT
    assert res.class_mean == 100.0 and res.num_gt["bathtub"] == 0


def test_no_ground_truth_gives_nan_and_json_null():
    res = evaluate_alignment([pred()], [])
    assert math.isnan(res.class_mean) and math.isnan(res.instance_mean)
    assert res.to_dict()["alignment"]["class_mean"] is None


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="t: expected 3"):
        gt(t=(0.0, 1.0))
    with pytest.raises(ValueError, match="scales must be positive"):
        gt(s=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown symmetry"):
        gt(sym="__SYM_ROTATE_UP_3")
    with pytest.raises(ValueError, match="mode"):
        evaluate_alignment([], [gt()], mode="video")
    with pytest.raises(ValueError, match="needs poses"):
        evaluate_alignment([], [gt()], mode="scene")
    with pytest.raises(ValueError, match="no camera pose"):
        evaluate_alignment([], [gt()], mode="scene", poses={})
    scaled = np.diag([2.0, 2.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="rigid"):
        evaluate_alignment([], [gt()], mode="scene", poses={("s0", 0): scaled})


def test_scene_mode_counts_an_object_id_once_even_with_noisy_views():
    poses = {("s0", 0): np.eye(4), ("s0", 1): np.eye(4)}
    gts = [gt(t=(0.0, 0.0, 2.0), frame=0, object_id="7"), gt(t=(0.1, 0.0, 2.0), frame=1, object_id="7")]
    res = evaluate_alignment([], gts, mode="scene", poses=poses)
    assert res.num_gt == {"table": 1}
    # Without ids the 10 cm apart views are taken for two objects (5 cm tolerance).
    for g in gts:
        g.object_id = None
    assert evaluate_alignment([], gts, mode="scene", poses=poses).num_gt == {"table": 2}
