"""A picture of a data set for eyeballing: rows of RGB | depth | masks + boxes | NOCs.

NOCs are the loader's targets (``R^T (p - t) / s`` from depth), shown as colours
``noc + 0.5``, so the montage also checks the pose convention: each object should show a
smooth colour ramp, red growing to the model's right (+x), green upwards, blue to its front.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from roca_core.data.loader import RocaDataset

_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.uint8)


def _depth_colour(depth: np.ndarray) -> np.ndarray:
    valid = depth > 0
    d = np.zeros_like(depth)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [1, 99])
        d = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    img = cv2.applyColorMap((255 - d * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    img[~valid] = 0
    return img


def save_montage(dataset_dir: str | Path, out_png: str | Path, n: int = 4, split: str = "train",
                 start: int = 0) -> Path:
    """Write an n-row montage of images ``start..start+n`` of ``split``; returns the path."""
    ds = RocaDataset(dataset_dir, split)
    rows = []
    for idx in range(start, min(start + n, len(ds))):
        image, t = ds[idx]
        rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        depth = _depth_colour(t["depth"].numpy())
        masks = (rgb * 0.35).astype(np.uint8)
        for i, m in enumerate(t["masks"].numpy().astype(bool)):
            masks[m] = _PALETTE[i % len(_PALETTE)]
        masks = np.ascontiguousarray(masks)
        for i, b in enumerate(t["boxes"].numpy().astype(int)):
            cv2.rectangle(masks, (int(b[0]), int(b[1])), (int(b[2]) - 1, int(b[3]) - 1), (255, 255, 255), 1)
            cls = ds.class_names[int(t["labels"][i]) - 1]
            cv2.putText(masks, cls, (int(b[0]) + 2, int(b[1]) + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        noc = t["noc"].permute(1, 2, 0).numpy()
        on = t["masks"].numpy().any(axis=0) if len(t["masks"]) else np.zeros(noc.shape[:2], bool)
        noc_img = np.zeros_like(rgb)
        noc_img[on] = (np.clip(noc[on] + 0.5, 0, 1) * 255).astype(np.uint8)
        rows.append(np.concatenate([rgb, depth, masks, noc_img], axis=1))
    if not rows:
        raise ValueError(f"{dataset_dir}: split {split!r} has no images from index {start}")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), np.concatenate(rows, axis=0)[..., ::-1])
    return out_png


def save_library_montage(out_png: str | Path, library_dir: str | Path | None = None, tile: int = 160) -> Path:
    """One tile per CAD model (front-left three-quarter view), a row per class."""
    from roca_core.data.cad_library import embedded_cad_library_dir, load_library
    from roca_core.data.renderer import DrawItem, SceneRenderer
    from roca_core.data.scene_sampler import camera_rotation

    models = load_library(library_dir or embedded_cad_library_dir())
    K = np.array([[tile * 1.1, 0, (tile - 1) / 2], [0, tile * 1.1, (tile - 1) / 2], [0, 0, 1.0]])
    R = camera_rotation(np.radians(180 + 35), np.radians(25))  # looking at the model's front (+z)
    eye = -2.2 * R[2]
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    renderer = SceneRenderer(tile, tile)
    rows: dict[str, list[np.ndarray]] = {}
    try:
        for i, m in enumerate(models):
            renderer.add_mesh(f"m{i}", m.mesh)
            out = renderer.render([DrawItem(f"m{i}", w2c, (0.75, 0.7, 0.6), instance=1)], K, 0.05, 10.0,
                                  R @ np.array([0.4, 1.0, 0.7]), 0.35, 0.65)
            img = (out.rgb * 255).astype(np.uint8)
            img[out.instance == 0] = 255
            img = np.ascontiguousarray(img)
            cv2.putText(img, f"{m.id} {m.variant}", (3, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1)
            rows.setdefault(m.class_name, []).append(img)
    finally:
        renderer.release()
    width = max(len(r) for r in rows.values())
    blank = np.full((tile, tile, 3), 255, np.uint8)
    grid = np.concatenate([np.concatenate(r + [blank] * (width - len(r)), axis=1) for r in rows.values()], axis=0)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), grid[..., ::-1])
    return out_png
