"""Train a network's class head on its own (roca-train-class): crops of the network's own
detections -> background or the class of the object they hold, with the rest of the network
frozen.

The head learns what the detector gets wrong, so it trains on the detector's output: the
detections (score above ``model.box_score_thresh``, every label torchvision keeps for a box)
of each training image, labelled with the class of the ground-truth object they overlap with
IoU >= 0.5 (torchvision's foreground rule), background otherwise, plus the ground-truth
boxes themselves. Running the detector over the training images takes a few minutes; the
crops are cached in OUT/class_crops_<split>.pt, after which an epoch takes about a minute on
one CPU thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torchvision.ops import box_iou

from roca_core.model.centre_head import box_geometry, mirror_geometry
from roca_core.model.class_head import ClassHead, class_loss, rescore
from roca_core.model.config import ModelConfig
from roca_core.model.yaw_head import yaw_crops
from roca_core.training.crop_augment import mirror, random_flips
from roca_core.training.crop_cache import keyed_cache, map_image_chunks
from roca_core.training.head_epochs import HeadStageConfig, train_epochs, with_head

CLASS_CROPS_VERSION = 1
# per sample: x (N, 3, S, S) uint8 crop; boxes (N, 4), K (N, 3, 3) at the network input;
# target (N,) 0 background or 1..C; det_label (N,) the detector's label (0 for a ground-truth
# box); det_score (N,); gt_id (N,) index of the overlapped ground-truth object in the split (-1:
# none); gt_cls (N,) its class 1..C (0: none). Plus num_gt: the split's ground-truth objects.
KEYS = ("x", "boxes", "K", "target", "det_label", "det_score", "gt_id", "gt_cls")
POSITIVE_IOU = 0.5


@dataclass
class ClassStageConfig(HeadStageConfig):
    crop: int = 32
    width: int = 16
    mix: float = ModelConfig.class_mix  # model.class_mix of the result
    epochs: int = 8
    batch: int = 256


def _empty(crop: int) -> dict[str, torch.Tensor]:
    i64 = dict(dtype=torch.int64)
    return {"x": torch.zeros(0, 3, crop, crop, dtype=torch.uint8), "boxes": torch.zeros(0, 4),
            "K": torch.zeros(0, 3, 3), "target": torch.zeros(0, **i64), "det_label": torch.zeros(0, **i64),
            "det_score": torch.zeros(0), "gt_id": torch.zeros(0, **i64), "gt_cls": torch.zeros(0, **i64),
            "num_gt": torch.tensor(0)}


@torch.no_grad()
def image_samples(model: torch.nn.Module, image: torch.Tensor, target: dict, crop: int, gt_offset: int
                  ) -> dict[str, torch.Tensor]:
    """One image at the network input (3, H, W) and its target -> the samples of its detections
    and ground-truth boxes (``KEYS``); ``gt_offset`` numbers its ground-truth objects."""
    K = target["K"].float()
    image_list, feats, proposals, _ = model._features([image], None)
    det = model.roi_heads.forward_eval(feats, proposals, image_list.image_sizes)[0]
    gt_boxes, gt_labels = target["boxes"].float().reshape(-1, 4), target["labels"].long().reshape(-1)
    n_det, n_gt = det["boxes"].shape[0], gt_boxes.shape[0]
    boxes = torch.cat([det["boxes"].float(), gt_boxes])
    gt_id = torch.full((n_det + n_gt,), -1, dtype=torch.int64)
    gt_cls = torch.zeros(n_det + n_gt, dtype=torch.int64)
    if n_gt:
        best, idx = box_iou(boxes, gt_boxes).max(dim=1)
        hit = best >= POSITIVE_IOU
        gt_id = torch.where(hit, idx + gt_offset, gt_id)
        gt_cls = torch.where(hit, gt_labels[idx], gt_cls)
    x = yaw_crops(image[None].float(), boxes, torch.zeros(boxes.shape[0], dtype=torch.int64), crop)
    return {"x": (x * 255).round().clamp(0, 255).to(torch.uint8), "boxes": boxes,
            "K": K[None].expand(boxes.shape[0], 3, 3).contiguous(), "target": gt_cls.clone(),
            "det_label": torch.cat([det["labels"].long(), torch.zeros(n_gt, dtype=torch.int64)]),
            "det_score": torch.cat([det["scores"].float(), torch.ones(n_gt)]), "gt_id": gt_id, "gt_cls": gt_cls}


def _chunk(job: tuple[str, str, str, int, int, int]) -> dict[str, torch.Tensor]:
    checkpoint, root, split, crop, start, stop = job
    torch.set_num_threads(1)
    from roca_core.checkpoint import load_checkpoint
    from roca_core.data.loader import RocaDataset

    model, cfg, _ = load_checkpoint(checkpoint)
    model.eval()
    ds = RocaDataset(root, split, image_size=cfg.image_size, class_names=cfg.class_names)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS}
    num_gt = 0
    for i in range(start, min(stop, len(ds))):
        img, t = ds[i]
        s = image_samples(model, img, t, crop, num_gt)
        num_gt += int(t["boxes"].shape[0])
        for k in KEYS:
            parts[k].append(s[k])
    if not parts["x"]:
        return {**_empty(crop), "num_gt": torch.tensor(num_gt)}
    return {**{k: torch.cat(v) for k, v in parts.items()}, "num_gt": torch.tensor(num_gt)}


def detection_samples(checkpoint: "str | Path", root: "str | Path", split: str, crop: int, workers: int = 1,
                      max_images: int = 0) -> dict[str, torch.Tensor]:
    """The samples (``KEYS``, ``num_gt``) of a split's images, from the detector of
    ``checkpoint``, cut by ``workers`` processes."""
    from roca_core.data.loader import RocaDataset

    n = len(RocaDataset(root, split))
    if max_images:
        n = min(n, max_images)
    parts = map_image_chunks(_chunk, lambda a, b: (str(checkpoint), str(root), split, crop, a, b), n, workers)
    if not parts:
        return _empty(crop)
    offset = 0
    for p in parts:  # number the ground-truth objects across chunks
        p["gt_id"] = torch.where(p["gt_id"] >= 0, p["gt_id"] + offset, p["gt_id"])
        offset += int(p["num_gt"])
    return {**{k: torch.cat([p[k] for p in parts]) for k in KEYS}, "num_gt": torch.tensor(offset)}


def cached_detection_samples(out: Path, checkpoint: "str | Path", root: "str | Path", split: str, crop: int,
                             workers: int = 1, max_images: int = 0, log=print) -> dict[str, torch.Tensor]:
    """``detection_samples`` through the cache OUT/class_crops_<split>.pt, reused when it was
    made from the same checkpoint file, data and crop size by this version."""
    cache = Path(out) / f"class_crops_{split}.pt"
    ck = Path(checkpoint).resolve()
    stat = ck.stat()
    key = {"version": CLASS_CROPS_VERSION, "checkpoint": str(ck), "size": stat.st_size, "mtime": stat.st_mtime_ns,
           "data": str(Path(root).resolve()), "crop": crop, "max_images": max_images}
    return keyed_cache(cache, key, "samples",
                       lambda: detection_samples(checkpoint, root, split, crop, workers, max_images),
                       f"running the detector over the {split} images of {root} ({workers} worker(s))", log)


def detection_recall(scores: torch.Tensor, data: dict[str, torch.Tensor], threshold: float = 0.5) -> dict[str, float]:
    """What the alignment metric sees of the detections (ground-truth-box samples left out):
    the share of ground-truth objects with a right-class detection scoring above
    ``threshold`` (recall) and the share of detections above it that are right (precision)."""
    det = data["det_label"] > 0
    right = det & (data["det_label"] == data["gt_cls"])
    above = det & (scores > threshold)
    found = torch.unique(data["gt_id"][right & above])
    n_above = int(above.sum())
    return {"recall": float(found.numel() / max(1, int(data["num_gt"]))),
            "precision": float((right & above).sum() / max(1, n_above)), "detections": n_above}


@torch.no_grad()
def head_logits(head: ClassHead, data: dict[str, torch.Tensor], image_hw: tuple[int, int],
                batch: int = 1024) -> torch.Tensor:
    head.eval()
    out = [head(data["x"][j:j + batch].float() / 255, box_geometry(data["boxes"][j:j + batch], data["K"][j:j + batch],
                                                                    image_hw))
           for j in range(0, data["target"].shape[0], batch)]
    head.train()
    return torch.cat(out) if out else torch.zeros(0, head.num_classes + 1)


def class_errors(head: ClassHead, data: dict[str, torch.Tensor], image_hw: tuple[int, int],
                 mix: float, mean: str = "arithmetic") -> dict[str, float]:
    """Held-out: the head's accuracy on the detections, and recall / precision at score 0.5
    with the detector's scores and with the ones re-scored as the model will (``mix``,
    ``mean``: ``model.class_mix`` and ``model.class_mix_mean``)."""
    det = data["det_label"] > 0
    if not bool(det.any()):
        return {"detections": 0}
    logits = head_logits(head, data, image_hw)
    before = detection_recall(data["det_score"], data)
    after = detection_recall(rescore(data["det_score"][det], data["det_label"][det], logits[det], mix, mean),
                             {k: (v[det] if k != "num_gt" else v) for k, v in data.items()})
    acc = float((logits[det].argmax(dim=1) == data["target"][det]).float().mean())
    return {"accuracy": acc, "recall_before": before["recall"], "precision_before": before["precision"],
            "recall": after["recall"], "precision": after["precision"], "detections": int(det.sum())}


def train_class_head(head: ClassHead, train: dict[str, torch.Tensor], val: "dict[str, torch.Tensor] | None",
                     cfg: ClassStageConfig, image_hw: tuple[int, int],
                     log: "Callable[[dict[str, Any]], None] | None" = None,
                     mean: str = "arithmetic") -> list[dict[str, Any]]:
    """AdamW with cosine decay on the cross-entropy; -> one dict per epoch (loss, held-out
    numbers re-scored with ``mean`` (``model.class_mix_mean``), seconds)."""
    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = train["x"][idx].float() / 255
        geo = box_geometry(train["boxes"][idx], train["K"][idx], image_hw)
        flip = random_flips(idx.numel(), gen)  # the classes look the same mirrored
        x, geo = mirror(x, flip), torch.where(flip[:, None], mirror_geometry(geo), geo)
        return class_loss(head(x, geo), train["target"][idx])

    heldout = None if val is None else lambda: class_errors(head, val, image_hw, cfg.mix, mean)
    return train_epochs(head, head.parameters(), cfg, int(train["target"].shape[0]), batch_loss, heldout, log)

def with_class_head(model: torch.nn.Module, cfg: Any, stage: ClassStageConfig) -> tuple[torch.nn.Module, Any]:
    """-> (the network with a fresh class head of the stage's size, its config). An existing
    head of the same size is kept (training continues from it)."""
    return with_head(model, cfg, "class_head",
                     {"class_width": stage.width, "class_crop": stage.crop, "class_mix": stage.mix},
                     lambda c: ClassHead(c.num_classes, stage.crop, stage.width), keep_if=("class_width", "class_crop"))
