"""Runs a Predictor (or an in-memory model) over a dataset and scores it.

The core, :func:`evaluate_frames`, only needs a function from a dataset sample to a
:class:`FrameOutput`, so the CLI (a :class:`roca_core.Predictor` from a checkpoint) and the
trainer (an ``nn.Module`` under training plus a CAD database) share one code path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.evaluation.alignment_metric import (AlignmentThresholds, GtObject, PredObject,
                                                   evaluate_alignment)
from roca_core.evaluation.depth_metric import DepthErrorAccumulator
from roca_core.evaluation.detection_metric import DetectionAPAccumulator
from roca_core.evaluation.model_tap import ModelTap, gt_box_hook, retrieved_objects
from roca_core.evaluation.pose_errors import pose_error_summaries
from roca_core.evaluation.report import build_report
from roca_core.evaluation.retrieval_metric import (RetrievalAccumulator, RetrievedObject,
                                                   SameClassRanker)
from roca_core.geometry.rotations import matrix_to_quat_np


@dataclass
class FrameOutput:
    """What a model predicted for one image, as numpy (N detections)."""

    class_indices: np.ndarray  # (N,) int, 0-based
    scores: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4) xyxy pixels
    rotations: np.ndarray  # (N, 3, 3)
    translations: np.ndarray  # (N, 3)
    scales: np.ndarray  # (N, 3)
    masks: "np.ndarray | None" = None  # (N, H, W) bool
    cad_ids: list["str | None"] = field(default_factory=list)
    symmetries: list[Symmetry] = field(default_factory=list)  # of the retrieved CADs
    depth: "np.ndarray | None" = None  # (H, W) metres
    # Per ground-truth object of the frame: retrieval rankings (None: no matched detection);
    # None for the whole frame when retrieval was not measured.
    retrieval: "list[RetrievedObject | None] | None" = None

    def __len__(self) -> int:
        return len(self.scores)


Infer = Callable[[int, torch.Tensor, Mapping[str, Any]], FrameOutput]


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def frame_pose(dataset: Any, index: int, target: Mapping[str, Any]) -> "np.ndarray | None":
    """The frame's camera-to-world 4x4 if the dataset provides one, else None.

    Looks, in order, at ``target["pose_cam_to_world"]`` / ``target["pose"]``,
    ``dataset.camera_pose(index)`` and a ``pose`` / ``pose_cam_to_world`` / ``camera_pose``
    key of the COCO-style image entry (``dataset.images[index]``).
    """
    for key in ("pose_cam_to_world", "pose"):
        if key in target and target[key] is not None:
            return _np(target[key]).astype(np.float64).reshape(4, 4)
    getter = getattr(dataset, "camera_pose", None)
    if callable(getter):
        pose = getter(index)
        if pose is not None:
            return _np(pose).astype(np.float64).reshape(4, 4)
    images = getattr(dataset, "images", None)
    if isinstance(images, Sequence) and index < len(images) and isinstance(images[index], Mapping):
        for key in ("pose_cam_to_world", "pose", "camera_pose"):
            if images[index].get(key) is not None:
                return np.asarray(images[index][key], dtype=np.float64).reshape(4, 4)
    return None


def gt_objects_from_target(target: Mapping[str, Any], class_names: Sequence[str]) -> list[GtObject]:
    """The dataset contract's target dict -> metric ground truth (camera frame)."""
    labels = _np(target["labels"]).astype(np.int64).reshape(-1)
    n = len(labels)
    if n == 0:
        return []
    scene_id = str(target.get("scene_id", ""))
    frame_id = int(_np(target["image_id"]).reshape(-1)[0]) if "image_id" in target else 0
    quats = (_np(target["quaternions"]) if "quaternions" in target
             else matrix_to_quat_np(_np(target["rotations"])))
    trans, scales = _np(target["translations"]), _np(target["scales"])
    syms = _np(target["symmetries"]).reshape(-1) if "symmetries" in target else np.zeros(n, int)
    cad_ids = list(target.get("cad_ids") or [None] * n)
    # Identity of the object within its scene (Scan2CAD alignment id), if the dataset gives it.
    object_ids = next((target[k] for k in ("object_ids", "alignment_ids") if target.get(k) is not None),
                      None)
    if object_ids is not None:
        object_ids = [str(x) for x in (_np(object_ids).reshape(-1).tolist()
                                       if isinstance(object_ids, torch.Tensor) else object_ids)]
    out = []
    for j in range(n):
        out.append(GtObject(
            scene_id=scene_id, frame_id=frame_id, class_name=class_names[int(labels[j]) - 1],
            t=trans[j], q=quats[j], s=scales[j], sym=Symmetry(int(syms[j])), cad_id=cad_ids[j],
            object_id=None if object_ids is None else object_ids[j]))
    return out


def _image_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8 RGB."""
    return (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def spread_indices(num_items: int, count: "int | None") -> list[int]:
    """``count`` indices spread evenly over ``range(num_items)`` (all when count is None or
    larger): a fixed subset that samples every part of a split, e.g. every held-out room,
    instead of its first few scenes."""
    if count is None or count >= num_items:
        return list(range(num_items))
    if count <= 0:
        return []
    return np.unique(np.floor(np.arange(count) * num_items / count).astype(np.int64)).tolist()


def evaluate_frames(infer: Infer, dataset: Any, *, class_names: "Sequence[str] | None" = None,
                    classes: "Sequence[str] | None" = None,
                    mode: Literal["auto", "frame", "scene"] = "auto",
                    thresholds: "AlignmentThresholds | None" = None,
                    max_images: "int | None" = None, progress: bool = True,
                    desc: str = "evaluating", gt_boxes: bool = False) -> dict[str, Any]:
    """Score ``infer`` over ``dataset`` and return the report dict (see ``report.py``).

    class_names: the dataset's class list (default ``dataset.class_names`` or CLASS_NAMES).
    classes: classes counted by the alignment metric (default: all with ground truth).
    mode: ``auto`` adds the per-scene evaluation when every frame has a camera pose.
    max_images: evaluate this many images spread evenly over the dataset (:func:`spread_indices`).
    gt_boxes: ``infer`` ran on the ground-truth boxes; box AP is then meaningless and left out.
    """
    if mode not in ("auto", "frame", "scene"):
        raise ValueError(f"mode must be auto, frame or scene; got {mode!r}")
    class_names = tuple(class_names or getattr(dataset, "class_names", None) or CLASS_NAMES)
    indices = spread_indices(len(dataset), None if max_images is None else int(max_images))
    total = len(indices)
    if total <= 0:
        raise ValueError(f"nothing to evaluate: the dataset has {len(dataset)} images "
                         f"(max_images={max_images})")
    preds: list[PredObject] = []
    gts: list[GtObject] = []
    poses: dict[tuple[str, Any], np.ndarray] = {}
    missing_pose = False
    det_acc = DetectionAPAccumulator(class_names)
    depth_acc = DepthErrorAccumulator()
    have_depth = False
    retrieval_acc = RetrievalAccumulator()
    have_retrieval = False
    num_dets = 0
    infer_seconds = 0.0
    for i in tqdm(indices, desc=desc, disable=not progress, unit="img"):
        image, target = dataset[i]
        t0 = time.perf_counter()
        out = infer(i, image, target)
        infer_seconds += time.perf_counter() - t0
        frame_gts = gt_objects_from_target(target, class_names)
        gts.extend(frame_gts)
        scene_id = str(target.get("scene_id", ""))
        frame_id = int(_np(target["image_id"]).reshape(-1)[0]) if "image_id" in target else 0
        pose = frame_pose(dataset, i, target)
        if pose is None:
            missing_pose = True
        else:
            poses[(scene_id, frame_id)] = pose
        n = len(out)
        num_dets += n
        quats = matrix_to_quat_np(out.rotations.reshape(-1, 3, 3)) if n else np.zeros((0, 4))
        for j in range(n):
            preds.append(PredObject(
                scene_id=scene_id, frame_id=frame_id,
                class_name=class_names[int(out.class_indices[j])], score=float(out.scores[j]),
                t=out.translations[j], q=quats[j], s=out.scales[j],
                cad_id=out.cad_ids[j] if j < len(out.cad_ids) else None,
                sym=out.symmetries[j] if j < len(out.symmetries) else Symmetry.NONE))
        gt_masks = _np(target["masks"]).astype(bool) if "masks" in target else None
        det_acc.add(out.class_indices, out.scores, out.boxes,
                    _np(target["labels"]).reshape(-1) - 1, _np(target["boxes"]).reshape(-1, 4),
                    pred_masks=out.masks if gt_masks is not None else None, gt_masks=gt_masks)
        if out.depth is not None and "depth" in target:
            depth_acc.add(out.depth, _np(target["depth"]))
            have_depth = True
        if out.retrieval is not None:
            have_retrieval = True
            for obj in out.retrieval:
                if obj is None:
                    retrieval_acc.add_missing()
                else:
                    retrieval_acc.add(obj)

    if mode == "scene" and missing_pose:
        raise ValueError("mode='scene' needs a camera pose for every frame; the dataset lacks some")
    th = thresholds or AlignmentThresholds()
    frame_res = evaluate_alignment(preds, gts, mode="frame", classes=classes, thresholds=th)
    scene_res = None
    if mode in ("auto", "scene") and not missing_pose:
        scene_res = evaluate_alignment(preds, gts, mode="scene", poses=poses,
                                       classes=frame_res.classes, thresholds=th)
    detection = det_acc.result()
    if gt_boxes:  # boxes are the ground truth: box AP would be 100 % by construction
        detection.box_ap50, detection.per_class_box = float("nan"), {}
    extra: dict[str, Any] = {"gt_boxes": bool(gt_boxes)}
    overall, per_class = pose_error_summaries(preds, gts, th)
    if have_retrieval:
        extra["retrieval"] = retrieval_acc.result()
    return build_report(frame_res, scene_res, detection,
                        depth_acc.result() if have_depth else None,
                        num_images=total, num_detections=num_dets,
                        seconds_per_image=infer_seconds / total,
                        score_threshold=th.score,
                        pose_errors=overall.to_dict(),
                        pose_errors_per_class={c: e.to_dict() for c, e in per_class.items()}, **extra)


# ---------------------------------------------------------------------------------------
# Adapters


def _cad_symmetry(db: Any, cad_id: "str | None") -> Symmetry:
    if db is None or cad_id is None:
        return Symmetry.NONE
    try:
        return Symmetry.from_tag(db.symmetries[db.index_of(cad_id)])
    except Exception:  # unknown id or a database without symmetries: merge without symmetry
        return Symmetry.NONE


def detections_to_frame(detections: Sequence[Any], class_names: Sequence[str],
                        image_hw: tuple[int, int], cad_database: Any = None,
                        depth: "np.ndarray | None" = None) -> FrameOutput:
    """``roca_core.predictor.Detection`` list -> FrameOutput (class ids by class name)."""
    h, w = image_hw
    n = len(detections)
    index = {c: k for k, c in enumerate(class_names)}
    for d in detections:
        if d.class_name not in index:
            raise ValueError(f"predicted class {d.class_name!r} is not in the dataset's classes "
                             f"{list(class_names)}")
    return FrameOutput(
        class_indices=np.array([index[d.class_name] for d in detections], dtype=np.int64),
        scores=np.array([float(d.score) for d in detections], dtype=np.float64),
        boxes=np.array([np.asarray(d.box, dtype=np.float64) for d in detections]).reshape(n, 4),
        rotations=np.array([np.asarray(d.rotation, dtype=np.float64) for d in detections]).reshape(n, 3, 3),
        translations=np.array([np.asarray(d.translation, dtype=np.float64) for d in detections]).reshape(n, 3),
        scales=np.array([np.asarray(d.scale, dtype=np.float64) for d in detections]).reshape(n, 3),
        masks=(np.stack([np.asarray(d.mask, dtype=bool) for d in detections]) if n
               else np.zeros((0, h, w), dtype=bool)),
        cad_ids=[d.cad_id for d in detections],
        symmetries=[_cad_symmetry(cad_database, d.cad_id) for d in detections],
        depth=depth)


DEPTH_SOURCES = ("predicted", "sensor", "gt")


def measured_depth(target: Mapping[str, Any], depth_source: str) -> "np.ndarray | None":
    """The depth map ``depth_source`` asks the 3D heads to use for this frame (None: the
    network's own prediction): ``gt`` the rendered depth (an upper bound showing how much depth
    errors cost), ``sensor`` the simulated depth camera (``roca-make-dataset --sensor-depth``)."""
    if depth_source not in DEPTH_SOURCES:
        raise ValueError(f"depth_source must be one of {DEPTH_SOURCES}, got {depth_source!r}")
    if depth_source == "predicted":
        return None
    key = "depth" if depth_source == "gt" else "sensor_depth"
    if target.get(key) is None:
        raise ValueError("ground-truth depth was asked for but the dataset has no depth maps"
                         if depth_source == "gt" else
                         "sensor depth was asked for but the dataset has none (make it with "
                         "roca-make-dataset --sensor-depth)")
    d = _np(target[key]).astype(np.float32)
    return d.reshape(d.shape[-2:])


def up_from_ground_truth(target: Mapping[str, Any]) -> "np.ndarray | None":
    """The camera-frame up direction of a frame, from its ground-truth objects: furniture
    stands upright, so each object's canonical y axis (column 1 of its rotation) is the world's
    up seen from the camera, which an IMU or the robot's TF would give. None without objects."""
    if "rotations" in target:
        rot = _np(target["rotations"]).reshape(-1, 3, 3)
    elif "quaternions" in target:
        from roca_core.geometry.rotations import quat_to_matrix_np
        rot = quat_to_matrix_np(_np(target["quaternions"]).reshape(-1, 4)).reshape(-1, 3, 3)
    else:
        return None
    if len(rot) == 0:
        return None
    up = rot[:, :, 1].astype(np.float64).sum(0)
    norm = float(np.linalg.norm(up))
    return up / norm if norm > 1e-6 else None


def camera_height_from_ground_truth(target: Mapping[str, Any], db: Any,
                                    half_heights: "np.ndarray | None" = None) -> "float | None":
    """The camera's height above the floor of a frame, from its ground-truth objects (which
    stand on the floor) and their CAD models' heights in ``db``: what a robot's calibrated
    camera mount would give. ``half_heights`` (M,): ``canonical_half_heights(db.voxels)``,
    computed here when not given. None without objects whose CAD model ``db`` holds."""
    from roca_core.geometry.ground_plane import camera_height_from_objects, canonical_half_heights

    up = up_from_ground_truth(target)
    ids = list(target.get("cad_ids", []))
    if up is None or db is None or not ids:
        return None
    known = [k for k, c in enumerate(ids) if c in db.ids]
    if not known:
        return None
    if half_heights is None:
        half_heights = canonical_half_heights(db.voxels)
    half = np.asarray(half_heights)[[db.index_of(ids[k]) for k in known]]
    return camera_height_from_objects(_np(target["translations"]).reshape(-1, 3)[known],
                                      _np(target["scales"]).reshape(-1, 3)[known], half, up)


def _frame_retrieval(model: Any, tap: "ModelTap | None", ranker: "SameClassRanker | None",
                     target: Mapping[str, Any], class_names: tuple[str, ...], score: float,
                     gt_boxes: bool) -> "list[RetrievedObject | None] | None":
    if tap is None or ranker is None or tap.output is None or "noc_embeddings" not in tap.output:
        return None
    return retrieved_objects(model, tap, target, ranker, class_names, score, gt_boxes)


def _score_threshold(kwargs: Mapping[str, Any]) -> float:
    return (kwargs.get("thresholds") or AlignmentThresholds()).score


def evaluate_predictor(predictor: Any, dataset: Any, *, depth_source: str = "predicted",
                       gt_depth: bool = False, upright: bool = False, gt_boxes: bool = False,
                       floor: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a :class:`roca_core.Predictor` (or anything with the same ``predict``).

    ``depth_source`` (see :func:`measured_depth`) gives ``predict`` a measured depth map:
    ``sensor`` the data set's simulated depth camera, ``gt`` its true depth (``gt_depth=True``
    is the same). ``upright`` gives it the camera's up direction (see
    :func:`up_from_ground_truth`): the upright prior. ``floor`` gives it the up direction
    and the camera's height above the floor as well (see
    :func:`camera_height_from_ground_truth`): the ground-plane prior. ``gt_boxes`` runs the depth,
    alignment and retrieval heads on the ground-truth boxes and classes (see
    :func:`roca_core.evaluation.model_tap.gt_box_hook`), so alignment is measured without
    detection errors; it needs ``predictor.model`` to be a RocaModel. All combine.

    Depth error needs the predicted depth map, which ``predict`` does not return: it is read
    from ``predictor.last_depth`` ((H, W) metres) when the predictor sets one, else caught
    with a forward hook on ``predictor.model`` (eval outputs ``[{"depth": (H, W), ...}]``).
    The same hook feeds the retrieval accuracy (``report["retrieval"]``) when the predictor
    has a CAD database with embeddings.
    Keyword arguments go to :func:`evaluate_frames`; give the Predictor a low
    ``score_threshold`` (e.g. 0.05) for meaningful AP, the alignment metric applies its own 0.5.
    """
    class_names = tuple(kwargs.pop("class_names", None) or getattr(dataset, "class_names", None)
                        or CLASS_NAMES)
    db = getattr(predictor, "cad_database", None)
    model = getattr(predictor, "model", None)
    if gt_boxes and not isinstance(model, torch.nn.Module):
        raise ValueError("ground-truth boxes need a predictor with a RocaModel (predictor.model)")
    if floor and db is None:
        raise ValueError("the ground-plane prior (floor) needs a predictor with a CAD database")
    if floor:  # the database's model heights, once for all frames
        from roca_core.geometry.ground_plane import canonical_half_heights
        db_half_heights = canonical_half_heights(db.voxels)
    if gt_depth:
        depth_source = "gt"
    if depth_source not in DEPTH_SOURCES:
        raise ValueError(f"depth_source must be one of {DEPTH_SOURCES}, got {depth_source!r}")
    box_source: dict[str, Any] = {}
    refine_stats = {"seconds": 0.0, "objects": 0, "accepted": 0}
    handles: list[Any] = []
    tap = None
    try:
        if gt_boxes:
            handles.append(gt_box_hook(model, box_source))
        if isinstance(model, torch.nn.Module):
            tap = ModelTap(model)
        ranker = (SameClassRanker.from_database(db)
                  if tap is not None and getattr(db, "embeddings", None) is not None else None)
        score = _score_threshold(kwargs)

        def infer(_i: int, image: torch.Tensor, target: Mapping[str, Any]) -> FrameOutput:
            rgb = _image_uint8(image)
            if tap is not None:
                tap.clear()
            if gt_boxes:
                box_source.update(boxes=target["boxes"], labels=target["labels"])
            extra: dict[str, Any] = {}
            measured = measured_depth(target, depth_source)
            if measured is not None:
                extra["depth"] = measured
            if upright or floor:
                extra["up"] = up_from_ground_truth(target)
            if floor and extra["up"] is not None:
                extra["camera_height"] = camera_height_from_ground_truth(target, db, db_half_heights)
            dets = predictor.predict(rgb, _np(target["K"]).astype(np.float64), **extra)
            refine_s = getattr(predictor, "last_refine_seconds", 0.0)
            if refine_s:
                refine_stats["seconds"] += refine_s
                refine_stats["objects"] += sum(d.cad_id is not None for d in dets)
                refine_stats["accepted"] += sum(bool(getattr(d, "refined", False)) for d in dets)
            depth = getattr(predictor, "last_depth", None)
            if depth is None and tap is not None and tap.output is not None:
                depth = tap.output.get("depth")
            if depth is not None:
                depth = _np(depth).astype(np.float32)
                depth = depth.reshape(depth.shape[-2:])
            frame = detections_to_frame(dets, class_names, rgb.shape[:2], db, depth)
            frame.retrieval = _frame_retrieval(model, tap, ranker, target, class_names, score, gt_boxes)
            return frame

        report = evaluate_frames(infer, dataset, class_names=class_names, gt_boxes=gt_boxes, **kwargs)
        if "retrieval" in report:
            report["retrieval"]["boxes"] = "ground_truth" if gt_boxes else "detections"
        report.update(depth_source=depth_source, gt_depth=depth_source == "gt", upright=bool(upright or floor),
                      floor=bool(floor))
        if refine_stats["objects"]:
            n = refine_stats["objects"]
            report["refinement"] = {"objects": n, "accepted": refine_stats["accepted"],
                                    "ms_per_object": 1000.0 * refine_stats["seconds"] / n}
        return report
    finally:
        if tap is not None:
            tap.remove()
        for h in handles:
            h.remove()


@torch.no_grad()
def _embed_database(model: torch.nn.Module, voxels: np.ndarray, device: torch.device,
                    chunk: int = 64) -> np.ndarray:
    out = []
    for k in range(0, len(voxels), chunk):
        vox = torch.from_numpy(np.asarray(voxels[k:k + chunk], dtype=np.float32)).to(device)
        out.append(model.embed_cad(vox).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def evaluate_model(model: torch.nn.Module, dataset: Any, cad_database: Any = None, *,
                   score_threshold: float = 0.05, mask_threshold: float = 0.7,
                   device: "str | torch.device | None" = None, gt_boxes: bool = False,
                   retrieval_on_gt_boxes: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Evaluate an in-memory :class:`roca_core.model.RocaModel` (e.g. during training).

    The CAD database (``CadDatabase``-like: ids, model_classes, symmetries, voxels) is
    embedded with the model's current CAD encoder, without touching its stored embeddings;
    retrieval is nearest neighbour within the predicted class, and ``report["retrieval"]``
    scores it per ground-truth object (top-1/top-5 from predicted and ground-truth NOCs).
    Without a database the retrieval-aware accuracy is 0. ``gt_boxes`` runs the 3D heads on
    the ground-truth boxes and classes. ``retrieval_on_gt_boxes`` measures retrieval with a
    second forward on the ground-truth boxes (the rest stays on detections), so it is
    defined from the first evaluation on, before the detector finds objects.
    The model's train/eval mode is restored afterwards.
    """
    class_names = tuple(kwargs.pop("class_names", None) or getattr(dataset, "class_names", None)
                        or CLASS_NAMES)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    tap = ModelTap(model)
    try:
        cad_emb = cad_cls = None
        ranker = None
        if cad_database is not None and len(cad_database) > 0:
            cad_emb = _embed_database(model, cad_database.voxels, device)
            cad_cls = np.asarray(cad_database.model_classes)
            ranker = SameClassRanker(cad_emb, list(cad_database.model_classes), list(cad_database.ids))
        score = _score_threshold(kwargs)

        @torch.no_grad()
        def infer(_i: int, image: torch.Tensor, target: Mapping[str, Any]) -> FrameOutput:
            tap.clear()
            extra = ({"gt_boxes": [target["boxes"].to(device)], "gt_labels": [target["labels"].to(device)]}
                     if gt_boxes else {})
            out = model([image.to(device)], intrinsics=[target["K"].to(device)], **extra)[0]
            keep = (out["scores"] >= score_threshold).cpu()
            o = {k: (v.detach().cpu()[keep] if isinstance(v, torch.Tensor) and v.dim() > 0
                     and len(v) == len(keep) and k != "depth" else v)
                 for k, v in out.items()}
            n = int(keep.sum())
            masks = o["masks"]
            if masks.dim() == 4:  # (N, 1, H, W)
                masks = masks[:, 0]
            classes = (o["labels"].long() - 1).numpy()
            cad_ids: list[str | None] = [None] * n
            syms = [Symmetry.NONE] * n
            if cad_emb is not None and n:
                queries = o["noc_embeddings"].float().numpy()
                for j in range(n):
                    in_class = np.where(cad_cls == class_names[classes[j]])[0]
                    if len(in_class) == 0:
                        continue
                    d2 = ((cad_emb[in_class] - queries[j]) ** 2).sum(1)
                    best = int(in_class[int(np.argmin(d2))])
                    cad_ids[j] = cad_database.ids[best]
                    syms[j] = Symmetry.from_tag(cad_database.symmetries[best])
            depth = out.get("depth")
            if retrieval_on_gt_boxes and not gt_boxes:
                tap.clear()
                model([image.to(device)], intrinsics=[target["K"].to(device)],
                      gt_boxes=[target["boxes"].to(device)], gt_labels=[target["labels"].to(device)])
            return FrameOutput(
                class_indices=classes, scores=o["scores"].double().numpy(),
                boxes=o["boxes"].double().numpy().reshape(n, 4),
                rotations=o["rotations"].double().numpy().reshape(n, 3, 3),
                translations=o["translations"].double().numpy().reshape(n, 3),
                scales=o["scales"].double().numpy().reshape(n, 3),
                masks=(masks >= mask_threshold).numpy(), cad_ids=cad_ids, symmetries=syms,
                depth=None if depth is None else _np(depth).reshape(depth.shape[-2:]),
                retrieval=_frame_retrieval(model, tap, ranker, target, class_names, score,
                                           gt_boxes or retrieval_on_gt_boxes))

        report = evaluate_frames(infer, dataset, class_names=class_names, gt_boxes=gt_boxes, **kwargs)
        if "retrieval" in report:
            report["retrieval"]["boxes"] = ("ground_truth" if gt_boxes or retrieval_on_gt_boxes
                                            else "detections")
        return report
    finally:
        tap.remove()
        model.train(was_training)
