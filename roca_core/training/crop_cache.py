"""Crops of every ground-truth box of a data set split and a thumbnail of every image, with
what the small heads learn from them, cut once and cached on disk (roca-train-yaw,
roca-train-centre, roca-train-up).

These heads (``roca_core.model.yaw_head``, ``centre_head``, ``up_head``) read only an image
crop and its box, or a thumbnail, so they can be trained on these tensors alone: an epoch over
the 15k objects of the demo data takes under a minute on one CPU thread, against the hours of
full training steps that would show the heads as many samples.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import torch

from roca_core.model.up_head import THUMB_SIZE, thumbnails, up_targets
from roca_core.model.yaw_head import allocentric_yaw, symmetry_folds, yaw_crops, yaw_targets

CROPS_VERSION = 5  # cached crops of another version are cut again (3: boxes, K, t; 4: thumbnails; 5: s)

# per object: x (N, 3, S, S) uint8 crops; allowed (N, bins) bool right yaw bins; valid (N,) bool
# has a yaw; cls (N,) 0-based class; allo (N,) allocentric yaw (radians); fold (N,) symmetry
# folds; boxes (N, 4) and K (N, 3, 3) at the network input; t (N, 3) centre; s (N, 3) scale;
# img (N,) index of its image in the per-image tensors. Per image (with objects): thumbs (M, 3, 48, 64) uint8,
# up (M, 3) unit up direction.
KEYS = ("x", "allowed", "valid", "cls", "allo", "fold", "boxes", "K", "t", "s", "img")
IMAGE_KEYS = ("thumbs", "up")


def _empty(crop: int, bins: int) -> dict[str, torch.Tensor]:
    return {"x": torch.zeros(0, 3, crop, crop, dtype=torch.uint8), "allowed": torch.zeros(0, bins, dtype=torch.bool),
            "valid": torch.zeros(0, dtype=torch.bool), "cls": torch.zeros(0, dtype=torch.int64),
            "allo": torch.zeros(0), "fold": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4),
            "K": torch.zeros(0, 3, 3), "t": torch.zeros(0, 3), "s": torch.zeros(0, 3), "img": torch.zeros(0, dtype=torch.int64),
            "thumbs": torch.zeros(0, 3, *THUMB_SIZE, dtype=torch.uint8), "up": torch.zeros(0, 3)}


def _crops_chunk(job: tuple[str, str, tuple[int, int], tuple[str, ...], int, int, int, int]) -> dict[str, torch.Tensor]:
    root, split, size, class_names, crop, bins, start, stop = job
    torch.set_num_threads(1)
    from roca_core.data.loader import RocaDataset

    ds = RocaDataset(root, split, image_size=size, class_names=class_names)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS + IMAGE_KEYS}
    for i in range(start, min(stop, len(ds))):
        img, t = ds[i]
        n = t["boxes"].shape[0]
        if n == 0:
            continue
        boxes = t["boxes"].float()
        K = t["K"].float()[None].expand(n, 3, 3)
        rot = t["rotations"].float()
        parts["x"].append((yaw_crops(img[None].float(), boxes, torch.zeros(n, dtype=torch.int64), crop) * 255)
                          .round().clamp(0, 255).to(torch.uint8))
        allowed, valid = yaw_targets(rot, boxes, K, t["symmetries"], bins)
        parts["allowed"].append(allowed)
        parts["valid"].append(valid)
        parts["cls"].append(t["labels"] - 1)
        parts["allo"].append(allocentric_yaw(rot, boxes, K))
        parts["fold"].append(symmetry_folds(t["symmetries"]))
        parts["boxes"].append(boxes)
        parts["K"].append(K.contiguous())
        parts["t"].append(t["translations"].float())
        parts["s"].append(t["scales"].float())
        parts["img"].append(torch.full((n,), len(parts["thumbs"]), dtype=torch.int64))
        parts["thumbs"].append((thumbnails(img[None]) * 255).round().clamp(0, 255).to(torch.uint8))
        parts["up"].append(up_targets(rot)[None])
    if not parts["x"]:
        return _empty(crop, bins)
    return {k: torch.cat(v) for k, v in parts.items()}


def map_image_chunks(fn, job_of: "Callable[[int, int], tuple]", num_images: int, workers: int) -> list:
    """``fn`` over about ``4 * workers`` chunks of ``range(num_images)`` (``job_of(start,
    stop)`` makes each chunk's job), in ``workers`` processes; results in chunk order."""
    chunk = max(1, math.ceil(num_images / max(1, 4 * workers)))
    jobs = [job_of(s, min(s + chunk, num_images)) for s in range(0, num_images, chunk)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(fn, jobs))
    return [fn(j) for j in jobs]


def load_crops(root: "str | Path", split: str, image_size: tuple[int, int], class_names: tuple[str, ...],
               crop: int, bins: int, workers: int = 1, max_images: int = 0) -> dict[str, torch.Tensor]:
    """Crops of every ground-truth box of a split and their targets (``KEYS``), and the
    thumbnails of the images with objects (``IMAGE_KEYS``), cut by ``workers`` processes from
    the images resized to the network input ``image_size``."""
    from roca_core.data.loader import RocaDataset

    n = len(RocaDataset(root, split, class_names=class_names))
    if max_images:
        n = min(n, max_images)
    parts = map_image_chunks(_crops_chunk, lambda a, b: (str(root), split, tuple(image_size), tuple(class_names),
                                                         crop, bins, a, b), n, workers)
    if not parts:
        return _empty(crop, bins)
    offsets = torch.tensor([0] + [p["thumbs"].shape[0] for p in parts[:-1]]).cumsum(0)
    for p, o in zip(parts, offsets):
        p["img"] = p["img"] + o
    return {k: torch.cat([p[k] for p in parts]) for k in KEYS + IMAGE_KEYS}


def keyed_cache(cache: Path, key: dict, field: str, make: "Callable[[], dict[str, torch.Tensor]]",
                note: str, log=print) -> dict[str, torch.Tensor]:
    """The tensors stored under ``field`` in the file ``cache`` when it holds the same ``key``
    (what they were cut from, by which version), else ``make()``'s, saved there first; ``note``
    is logged before making them. One rule for every stage's cache of cut samples."""
    if cache.is_file():
        stored = torch.load(cache)
        if stored.get("key") == key:
            return stored[field]
    log(note)
    tensors = make()
    torch.save({"key": key, field: tensors}, cache)
    return tensors


def cached_crops(out: Path, root: "str | Path", split: str, image_size: tuple[int, int],
                 class_names: tuple[str, ...], crop: int, bins: int, workers: int = 1, max_images: int = 0,
                 log=print) -> dict[str, torch.Tensor]:
    """``load_crops`` through the cache file OUT/crops_<split>.pt: reused when it was cut from
    the same data, sizes and bins by this version, cut again otherwise."""
    key = {"version": CROPS_VERSION, "data": str(Path(root).resolve()), "size": list(image_size), "crop": crop,
           "bins": bins, "max_images": max_images}
    return keyed_cache(Path(out) / f"crops_{split}.pt", key, "crops",
                       lambda: load_crops(root, split, image_size, class_names, crop, bins, workers, max_images),
                       f"cutting {split} crops from {root} ({workers} worker(s))", log)
