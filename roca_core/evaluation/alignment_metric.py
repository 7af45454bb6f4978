"""Scan2CAD alignment accuracy (per frame or per scene), plain numpy.

A prediction is correct when it matches a not yet matched ground-truth object of the same
class with translation error <= 0.2 m, rotation error <= 20 degrees (minimised over the
ground truth's symmetry rotations about the canonical up axis) and
``|mean(s_pred / s_gt) - 1| <= 0.2``; the retrieval-aware variant also needs the CAD id.
Matching is greedy in score order and each ground-truth object is matched at most once, so
duplicate predictions count once. Accuracy is matches / ground-truth objects, reported per
class, as class mean and as instance mean, in percent.

Before matching, predictions with score > 0.5 of one "scene" (a single frame in ``frame``
mode, a whole ScanNet scene in world coordinates in ``scene`` mode) are merged greedily in
score order (a prediction close to a kept one of the same class is dropped) and capped per
class at the number of ground-truth objects of that class in the scene.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Literal, Mapping, Sequence

import numpy as np

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.geometry.rotations import matrix_to_quat_np

FrameKey = tuple[str, Hashable]  # (scene_id, frame_id)


@dataclass(frozen=True)
class AlignmentThresholds:
    """The metric's tolerances; defaults are the Scan2CAD / Vid2CAD protocol."""

    translation_m: float = 0.2
    rotation_deg: float = 20.0
    scale_ratio: float = 0.2
    score: float = 0.5  # predictions must have score > this
    # Per-scene merge of near-duplicate predictions.
    merge_translation_m: float = 0.4
    merge_rotation_deg: float = 60.0
    merge_scale_ratio: float = 0.6
    # Scene mode: ground-truth objects without object_id seen in several frames are the same
    # object when class and CAD id agree and their world positions are this close.
    gt_duplicate_m: float = 0.05


def _vec(value: Any, size: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (size,):
        raise ValueError(f"{what}: expected {size} values, got shape {np.shape(value)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: not finite: {arr}")
    return arr


def _unit_quat(q: Any, what: str) -> np.ndarray:
    arr = _vec(q, 4, what)
    norm = np.linalg.norm(arr)
    if norm < 1e-8:
        raise ValueError(f"{what}: zero quaternion")
    return arr / norm


@dataclass
class GtObject:
    """One ground-truth alignment in the camera frame of its frame. q is (w, x, y, z)."""

    scene_id: str
    frame_id: Hashable
    class_name: str
    t: np.ndarray
    q: np.ndarray
    s: np.ndarray
    sym: Symmetry = Symmetry.NONE
    cad_id: "str | None" = None
    object_id: "str | None" = None  # identifies the object across frames (scene mode)

    def __post_init__(self) -> None:
        where = f"GtObject({self.scene_id}, {self.frame_id}, {self.class_name})"
        self.t = _vec(self.t, 3, f"{where}.t")
        self.q = _unit_quat(self.q, f"{where}.q")
        self.s = _vec(self.s, 3, f"{where}.s")
        if np.any(self.s <= 0):
            raise ValueError(f"{where}.s: scales must be positive, got {self.s}")
        self.sym = Symmetry.from_tag(self.sym)


@dataclass
class PredObject:
    """One predicted alignment in the camera frame of its frame. q is (w, x, y, z).

    ``sym`` (e.g. the symmetry of the retrieved CAD) only serves the merge step.
    """

    scene_id: str
    frame_id: Hashable
    class_name: str
    score: float
    t: np.ndarray
    q: np.ndarray
    s: np.ndarray
    cad_id: "str | None" = None
    sym: Symmetry = Symmetry.NONE

    def __post_init__(self) -> None:
        where = f"PredObject({self.scene_id}, {self.frame_id}, {self.class_name})"
        self.score = float(self.score)
        if not math.isfinite(self.score):
            raise ValueError(f"{where}.score: not finite")
        self.t = _vec(self.t, 3, f"{where}.t")
        self.q = _unit_quat(self.q, f"{where}.q")
        self.s = _vec(self.s, 3, f"{where}.s")
        self.sym = Symmetry.from_tag(self.sym)


@dataclass
class AccuracySummary:
    """Accuracies in percent; nan where there is no ground truth."""

    class_mean: float
    instance_mean: float
    per_class: dict[str, float]
    num_gt: dict[str, int]
    num_correct: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> "float | None":
            return None if not math.isfinite(x) else float(x)
        return {
            "class_mean": num(self.class_mean),
            "instance_mean": num(self.instance_mean),
            "per_class": {k: num(v) for k, v in self.per_class.items()},
            "num_gt": dict(self.num_gt),
            "num_correct": dict(self.num_correct),
        }


@dataclass
class AlignmentResult(AccuracySummary):
    """Alignment accuracy plus its retrieval-aware variant (``retrieval_aware``)."""

    retrieval_aware: AccuracySummary = field(default=None)  # type: ignore[assignment]
    mode: str = "frame"
    classes: tuple[str, ...] = ()
    num_predictions: int = 0  # after score threshold, merge and per-class cap

    def to_dict(self) -> dict[str, Any]:
        return {
            "alignment": AccuracySummary.to_dict(self),
            "retrieval_aware": self.retrieval_aware.to_dict(),
            "mode": self.mode,
            "classes": list(self.classes),
            "num_predictions": self.num_predictions,
        }


# ---------------------------------------------------------------------------------------
# Geometry helpers


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) (w, x, y, z) quaternions; R(a * b) = R(a) @ R(b)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def symmetry_quaternions(q: np.ndarray, sym: Symmetry) -> np.ndarray:
    """(n, 4): q composed with the symmetry's rotations about the object's own up axis.

    ``R(q) @ R_y(2 pi k / n)``: the symmetry acts in the canonical frame, so it multiplies
    on the right.
    """
    n = Symmetry.from_tag(sym).num_rotations
    half = np.pi * np.arange(n) / n  # half of 2 pi k / n
    q_y = np.stack([np.cos(half), np.zeros(n), np.sin(half), np.zeros(n)], axis=-1)
    return quat_multiply(np.asarray(q, dtype=np.float64)[None, :], q_y)


def rotation_error_deg(q_pred: np.ndarray, q_gt: np.ndarray, sym: Symmetry = Symmetry.NONE) -> float:
    """``2 acos(|<q_pred, q_gt'>|)`` in degrees, minimised over q_gt's symmetric versions."""
    qp = np.asarray(q_pred, dtype=np.float64)
    qp = qp / np.linalg.norm(qp)
    cands = symmetry_quaternions(np.asarray(q_gt, dtype=np.float64) / np.linalg.norm(q_gt), sym)
    dots = np.abs(cands @ qp)
    return float(np.degrees(2.0 * np.arccos(np.clip(dots.max(), 0.0, 1.0))))


def scale_ratio_error(s_pred: np.ndarray, s_ref: np.ndarray) -> float:
    """``|mean(s_pred / s_ref) - 1|`` (inf for a degenerate reference scale)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        err = float(abs(np.mean(np.asarray(s_pred) / np.asarray(s_ref)) - 1.0))
    return err if math.isfinite(err) else math.inf


def _check_pose(pose: Any, key: FrameKey) -> np.ndarray:
    m = np.asarray(pose, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"pose of frame {key}: expected a finite 4x4 matrix, got shape {m.shape}")
    r = m[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
        raise ValueError(f"pose of frame {key}: the rotation block is not a rotation "
                         f"(camera-to-world poses must be rigid)")
    return m


def _to_world(t: np.ndarray, q: np.ndarray, pose: np.ndarray, pose_q: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``pose_cam_to_world @ M`` to the rigid part of an alignment (scale unchanged)."""
    return pose[:3, :3] @ t + pose[:3, 3], quat_multiply(pose_q, q)


# ---------------------------------------------------------------------------------------
# Merge and matching


@dataclass
class _Obj:
    """Internal view of an object in the evaluation frame (camera or world)."""

    group: Hashable
    class_name: str
    t: np.ndarray
    q: np.ndarray
    s: np.ndarray
    sym: Symmetry
    cad_id: "str | None"
    score: float = 0.0
    object_id: "str | None" = None


def _is_near(a: _Obj, b_kept: _Obj, th: AlignmentThresholds) -> bool:
    return (np.linalg.norm(a.t - b_kept.t) <= th.merge_translation_m
            and scale_ratio_error(a.s, b_kept.s) <= th.merge_scale_ratio
            and rotation_error_deg(a.q, b_kept.q, b_kept.sym) <= th.merge_rotation_deg)


def merge_predictions(preds: Sequence[_Obj], gt_count: Mapping[str, int],
                      th: AlignmentThresholds) -> list[_Obj]:
    """Greedy duplicate removal in score order, then a per-class cap at the GT count.

    ``preds`` all belong to one group (frame or scene).
    """
    kept_by_class: dict[str, list[_Obj]] = defaultdict(list)
    for p in sorted(preds, key=lambda o: -o.score):
        kept = kept_by_class[p.class_name]
        if any(p.class_name == k.class_name and _is_near(p, k, th) for k in kept):
            continue
        kept.append(p)
    out: list[_Obj] = []
    for cls, kept in kept_by_class.items():
        out.extend(kept[: gt_count.get(cls, 0)])  # kept is already in score order
    return out


def _is_match(p: _Obj, g: _Obj, th: AlignmentThresholds, need_cad: bool) -> "float | None":
    """Translation error when p matches g, else None."""
    if p.class_name != g.class_name:
        return None
    if need_cad and (p.cad_id is None or p.cad_id != g.cad_id):
        return None
    t_err = float(np.linalg.norm(p.t - g.t))
    if t_err > th.translation_m:
        return None
    if scale_ratio_error(p.s, g.s) > th.scale_ratio:
        return None
    if rotation_error_deg(p.q, g.q, g.sym) > th.rotation_deg:
        return None
    return t_err


def match_group(preds: Sequence[_Obj], gts: Sequence[_Obj], th: AlignmentThresholds,
                need_cad: bool) -> list[bool]:
    """Greedy score-order matching within one group; returns per-GT matched flags.

    Among several unmatched GTs a prediction fits, it takes the nearest one.
    """
    matched = [False] * len(gts)
    for p in sorted(preds, key=lambda o: -o.score):
        best, best_err = -1, math.inf
        for gi, g in enumerate(gts):
            if matched[gi]:
                continue
            err = _is_match(p, g, th, need_cad)
            if err is not None and err < best_err:
                best, best_err = gi, err
        if best >= 0:
            matched[best] = True
    return matched


def _dedupe_scene_gts(gts: list[_Obj], th: AlignmentThresholds) -> list[_Obj]:
    """One entry per physical object of a scene, even when several frames see it."""
    out: list[_Obj] = []
    seen_ids: set[str] = set()
    for g in gts:
        if g.object_id is not None:
            if g.object_id in seen_ids:
                continue
            seen_ids.add(g.object_id)
            out.append(g)
            continue
        if any(o.object_id is None and o.class_name == g.class_name and o.cad_id == g.cad_id
               and np.linalg.norm(o.t - g.t) <= th.gt_duplicate_m for o in out):
            continue
        out.append(g)
    return out


def _summarise(correct: Mapping[str, int], total: Mapping[str, int],
               classes: Sequence[str]) -> AccuracySummary:
    per_class = {c: 100.0 * correct.get(c, 0) / total[c] for c in classes if total.get(c, 0) > 0}
    n_gt = {c: int(total.get(c, 0)) for c in classes}
    n_ok = {c: int(correct.get(c, 0)) for c in classes}
    all_gt = sum(n_gt.values())
    class_mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    instance_mean = 100.0 * sum(n_ok.values()) / all_gt if all_gt else float("nan")
    return AccuracySummary(class_mean, instance_mean, per_class, n_gt, n_ok)


def _default_classes(gts: Iterable[GtObject]) -> tuple[str, ...]:
    present = {g.class_name for g in gts}
    known = [c for c in CLASS_NAMES if c in present]
    return tuple(known + sorted(present - set(known)))


def evaluate_alignment(preds: Sequence[PredObject], gts: Sequence[GtObject],
                       mode: Literal["frame", "scene"] = "frame",
                       poses: "Mapping[FrameKey, np.ndarray] | None" = None,
                       classes: "Sequence[str] | None" = None,
                       thresholds: "AlignmentThresholds | None" = None) -> AlignmentResult:
    """Scan2CAD alignment accuracy and its retrieval-aware variant.

    mode: ``frame`` treats each (scene_id, frame_id) as its own scene, in camera coordinates;
    ``scene`` moves every object to world coordinates with ``poses[(scene_id, frame_id)]``
    (camera-to-world 4x4) and evaluates per scene_id.
    classes: the classes that count (e.g. ``BENCHMARK_CLASSES``); default: those with GT.
    """
    th = thresholds or AlignmentThresholds()
    if mode not in ("frame", "scene"):
        raise ValueError(f"mode must be 'frame' or 'scene', got {mode!r}")
    if mode == "scene" and poses is None:
        raise ValueError("mode='scene' needs poses: {(scene_id, frame_id): 4x4 cam-to-world}")
    classes = tuple(classes) if classes is not None else _default_classes(gts)
    wanted = set(classes)

    pose_cache: dict[FrameKey, tuple[np.ndarray, np.ndarray]] = {}

    def view(o: "GtObject | PredObject") -> _Obj:
        key: FrameKey = (o.scene_id, o.frame_id)
        t, q = o.t, o.q
        if mode == "scene":
            if key not in pose_cache:
                if key not in poses:  # type: ignore[operator]
                    raise ValueError(f"no camera pose for frame {key} (scene mode)")
                m = _check_pose(poses[key], key)  # type: ignore[index]
                pose_cache[key] = (m, matrix_to_quat_np(m[:3, :3]))
            t, q = _to_world(t, q, *pose_cache[key])
        group = o.scene_id if mode == "scene" else key
        if isinstance(o, PredObject):
            return _Obj(group, o.class_name, t, q, o.s, o.sym, o.cad_id, o.score)
        return _Obj(group, o.class_name, t, q, o.s, o.sym, o.cad_id, object_id=o.object_id)

    gt_groups: dict[Hashable, list[_Obj]] = defaultdict(list)
    for g in gts:
        if g.class_name in wanted:
            v = view(g)
            gt_groups[v.group].append(v)
    if mode == "scene":
        gt_groups = defaultdict(list, {k: _dedupe_scene_gts(v, th) for k, v in gt_groups.items()})
    pred_groups: dict[Hashable, list[_Obj]] = defaultdict(list)
    for p in preds:
        if p.class_name in wanted and p.score > th.score:
            v = view(p)
            pred_groups[v.group].append(v)

    total: dict[str, int] = defaultdict(int)
    correct: dict[str, int] = defaultdict(int)
    correct_ret: dict[str, int] = defaultdict(int)
    num_kept = 0
    for group, group_gts in gt_groups.items():
        gt_count: dict[str, int] = defaultdict(int)
        for g in group_gts:
            gt_count[g.class_name] += 1
            total[g.class_name] += 1
        kept = merge_predictions(pred_groups.get(group, []), gt_count, th)
        num_kept += len(kept)
        for g, ok in zip(group_gts, match_group(kept, group_gts, th, need_cad=False)):
            correct[g.class_name] += int(ok)
        for g, ok in zip(group_gts, match_group(kept, group_gts, th, need_cad=True)):
            correct_ret[g.class_name] += int(ok)

    align = _summarise(correct, total, classes)
    ret = _summarise(correct_ret, total, classes)
    return AlignmentResult(**dataclasses.asdict(align), retrieval_aware=ret, mode=mode,
                           classes=classes, num_predictions=num_kept)
