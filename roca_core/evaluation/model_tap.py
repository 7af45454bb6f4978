"""Hooks that let the evaluator look inside a RocaModel's eval forward without changing it.

* :class:`ModelTap` keeps the raw output of the last forward (boxes, labels, scores,
  ``noc_embeddings``, depth) and the alignment head's shape codes, whatever wraps the model
  (a Predictor filters and sorts; the raw rows stay aligned with the shape codes);
* :func:`gt_box_hook` makes every eval forward run on the ground-truth boxes and classes;
* :func:`retrieved_objects` turns one frame's tapped output into retrieval rankings per
  ground-truth object (see :mod:`roca_core.evaluation.retrieval_metric`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from roca_core.evaluation.detection_metric import box_iou
from roca_core.evaluation.retrieval_metric import RetrievedObject, SameClassRanker


class ModelTap:
    """Forward hooks on a RocaModel (eval forwards of one image) and on its alignment head.

    After each forward: ``output`` is the model's first per-image dict, ``shape_codes``
    (R, E) the alignment head's shape codes of the same R detections (None when the model
    has no alignment head, e.g. a stand-in in tests). ``remove()`` takes the hooks off.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.output: "Mapping[str, Any] | None" = None
        self.shape_codes: "torch.Tensor | None" = None
        self._handles = [model.register_forward_hook(self._grab_output)]
        head = getattr(model, "alignment_head", None)
        if isinstance(head, torch.nn.Module):
            self._handles.append(head.register_forward_hook(self._grab_shape_codes))

    def clear(self) -> None:
        self.output, self.shape_codes = None, None

    def _grab_output(self, _m: Any, _inp: Any, out: Any) -> None:
        if isinstance(out, (list, tuple)) and out and isinstance(out[0], Mapping):
            self.output = out[0]

    def _grab_shape_codes(self, _m: Any, _inp: Any, out: Any) -> None:
        code = getattr(out, "shape_code", None)
        self.shape_codes = code.detach() if isinstance(code, torch.Tensor) else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def gt_box_hook(model: torch.nn.Module, source: Mapping[str, Any]) -> Any:
    """Make every eval forward of ``model`` (a RocaModel) use ``source["boxes"]`` ((N, 4) xyxy
    in the input image's pixels) and ``source["labels"]`` ((N,) 1-based) instead of its
    detector, through the model's ``gt_boxes`` / ``gt_labels`` arguments (one image per
    forward). Returns the hook handle (``.remove()`` undoes it)."""
    import inspect
    params = inspect.signature(model.forward).parameters
    if "gt_boxes" not in params or "gt_labels" not in params:
        raise ValueError("ground-truth boxes need a RocaModel whose forward takes gt_boxes / "
                         "gt_labels")

    def inject(m: torch.nn.Module, args: tuple, kwargs: dict) -> "tuple[tuple, dict] | None":
        if m.training or "boxes" not in source:
            return None
        return args, dict(kwargs, gt_boxes=[source["boxes"]], gt_labels=[source["labels"]])

    return model.register_forward_pre_hook(inject, with_kwargs=True)


def match_gt_to_detections(gt_boxes: np.ndarray, gt_classes: np.ndarray, det_boxes: np.ndarray,
                           det_classes: np.ndarray, det_scores: np.ndarray, score_threshold: float,
                           iou_threshold: float = 0.5) -> list["int | None"]:
    """One-to-one: per GT object the index of its detection (same class, score above the
    threshold, box IoU >= iou_threshold), pairs taken in decreasing IoU; None if unmatched."""
    g, d = len(gt_boxes), len(det_boxes)
    out: list[int | None] = [None] * g
    if g == 0 or d == 0:
        return out
    iou = box_iou(det_boxes, gt_boxes)  # (D, G)
    ok = ((np.asarray(det_classes)[:, None] == np.asarray(gt_classes)[None, :])
          & (np.asarray(det_scores)[:, None] > score_threshold) & (iou >= iou_threshold))
    iou = np.where(ok, iou, -1.0)
    used = np.zeros(d, bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        di, gi = divmod(int(flat), g)
        if iou[di, gi] < 0:
            break
        if used[di] or out[gi] is not None:
            continue
        used[di], out[gi] = True, di
    return out


@torch.no_grad()
def gt_noc_embeddings(model: torch.nn.Module, target: Mapping[str, Any], boxes: torch.Tensor,
                      gt_index: torch.Tensor, shape_codes: torch.Tensor) -> torch.Tensor:
    """Query embeddings (R, D) of the ground-truth NOCs inside ``boxes`` (R, 4) (the target
    maps' pixels), as training builds them: NOC map, instance mask of object ``gt_index``
    (R,) and valid depth cropped to the model's ROI grid, voxelised, plus the model's shape
    codes (R, E) of those detections."""
    from roca_core.model.roi_sampling import gt_noc_rois

    dev = shape_codes.device
    noc = torch.as_tensor(target["noc"], dtype=torch.float32, device=dev)  # (3, H, W)
    masks = torch.as_tensor(target["masks"], device=dev)[gt_index.to(dev)].float()  # (R, H, W)
    depth = torch.as_tensor(target["depth"], dtype=torch.float32, device=dev)  # (H, W)
    points, weights = gt_noc_rois(noc, masks, depth, boxes.to(dev, torch.float32), model.cfg.roi_size)
    z, _ = model.retrieval_head.embed_noc(points, weights, shape_codes.float())
    return z.float()


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def retrieved_objects(model: torch.nn.Module, tap: ModelTap, target: Mapping[str, Any],
                      ranker: SameClassRanker, class_names: "tuple[str, ...]",
                      score_threshold: float, gt_boxes: bool) -> list["RetrievedObject | None"]:
    """Per ground-truth object of the frame: its rankings from predicted and ground-truth
    NOCs, or None without a matched detection. With ``gt_boxes`` detection j is object j."""
    out = tap.output
    labels = _np(target["labels"]).astype(np.int64).reshape(-1)
    g = len(labels)
    if out is None or g == 0:
        return [None] * g
    det_labels = _np(out["labels"]).astype(np.int64).reshape(-1)
    if gt_boxes:
        if len(det_labels) != g:
            raise RuntimeError(f"with ground-truth boxes the model returned {len(det_labels)} "
                               f"detections for {g} objects")
        match: list[int | None] = list(range(g))
    else:
        match = match_gt_to_detections(_np(target["boxes"]).reshape(-1, 4), labels,
                                       _np(out["boxes"]).reshape(-1, 4), det_labels,
                                       _np(out["scores"]).reshape(-1), score_threshold)
    pairs = [(j, k) for j, k in enumerate(match) if k is not None]
    gt_ranked: dict[int, list[str]] = {}
    codes = tap.shape_codes
    if pairs and "noc" in target and codes is not None and len(codes) == len(det_labels):
        gi = torch.tensor([j for j, _ in pairs])
        di = torch.tensor([k for _, k in pairs])
        z = gt_noc_embeddings(model, target, out["boxes"][di.to(out["boxes"].device)].float(),
                              gi, codes[di.to(codes.device)])
        z_np = z.cpu().numpy()
        for row, (j, _k) in enumerate(pairs):
            gt_ranked[j] = ranker.rank(class_names[labels[j] - 1], z_np[row])
    queries = _np(out["noc_embeddings"]).astype(np.float32)
    cad_ids = list(target.get("cad_ids") or [None] * g)
    result: list[RetrievedObject | None] = [None] * g
    for j, k in pairs:
        cls = class_names[labels[j] - 1]
        cad = None if cad_ids[j] is None else str(cad_ids[j])
        result[j] = RetrievedObject(cls, cad, ranker.num_candidates(cls), ranker.rank(cls, queries[k]),
                                    gt_ranked.get(j), in_database=cad in ranker.id_set)
    return result
