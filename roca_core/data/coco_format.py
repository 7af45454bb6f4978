"""COCO-style records in the exact layout of ROCA's ScanNet25k + Scan2CAD preparation.

The reference preparation writes ``scan2cad_instances_<split>.json`` with

* ``images``: ``id, height, width, scene_id, file_name, duplicate``; the file name ends in
  ``<scene_id>/color/<frame>.jpg`` and the renderings sit in
  ``<rendering_root>/<scene_id>/{depth,instance}/<frame>.png``;
* ``annotations``: ``id, image_id, bbox`` (XYWH of the visible mask), ``area``,
  ``segmentation`` (COCO RLE with string counts), ``iscrowd, category_id`` (0-based, classes
  sorted by name), ``scene_id, is_cad, intrinsics`` (3x3), ``duplicate, alignment_id``
  (value of the object in the instance image), ``t, q`` (w, x, y, z), ``s, sym``
  (``__SYM_*`` tag) and ``model`` (``scene_id, catid_cad, id_cad, idx``);
* ``categories``: ``{name, id}``.

The synthetic writer produces the same records, so one loader reads both.
"""
from __future__ import annotations

import warnings

import numpy as np
import pycocotools.mask as mask_util

from roca_core.classes import CLASS_NAMES


def encode_mask(mask: np.ndarray) -> tuple[dict, list[float], float]:
    """bool (H, W) -> (RLE with str counts, bbox XYWH, area)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(x) for x in mask_util.toBbox(rle)]
    area = float(mask_util.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, bbox, area


def decode_mask(segmentation: dict, height: int, width: int) -> np.ndarray:
    """COCO RLE (str or bytes counts, or uncompressed list counts) -> bool (H, W)."""
    seg = dict(segmentation)
    if isinstance(seg.get("counts"), list):
        seg = mask_util.frPyObjects(seg, height, width)
    elif isinstance(seg.get("counts"), str):
        seg["counts"] = seg["counts"].encode("ascii")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode([seg])[:, :, 0].astype(bool)


def categories(class_names: tuple[str, ...] = CLASS_NAMES) -> list[dict]:
    return [{"name": name, "id": i} for i, name in enumerate(class_names)]


def image_record(image_id: int, file_name: str, height: int, width: int, scene_id: str) -> dict:
    return {"id": int(image_id), "height": int(height), "width": int(width), "scene_id": scene_id,
            "file_name": file_name, "duplicate": False}


def annotation_record(ann_id: int, image_id: int, mask: np.ndarray, category_id: int, scene_id: str,
                      K: np.ndarray, t, q, s, sym_tag: str, catid_cad: str, id_cad: str,
                      alignment_id: int) -> dict:
    rle, bbox, area = encode_mask(mask)
    return {
        "id": int(ann_id), "image_id": int(image_id), "bbox": bbox, "area": area, "segmentation": rle,
        "iscrowd": 0, "category_id": int(category_id), "scene_id": scene_id, "is_cad": True,
        "intrinsics": np.asarray(K, dtype=float)[:3, :3].tolist(), "duplicate": False,
        "alignment_id": int(alignment_id),
        "t": [float(x) for x in t], "q": [float(x) for x in q], "s": [float(x) for x in s], "sym": sym_tag,
        "model": {"scene_id": scene_id, "catid_cad": catid_cad, "id_cad": id_cad, "idx": int(alignment_id)},
    }
