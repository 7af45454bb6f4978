"""One dataset class for the synthetic data and for real ScanNet25k + Scan2CAD data.

Both come as the reference implementation prepares them (see :mod:`roca_core.data.coco_format`):
a COCO JSON per split, colour images whose path ends in ``<scene>/color/<frame>.jpg``, and
renderings ``<rendering_root>/<scene>/depth/<frame>.png`` (uint16 millimetres) and
``.../instance/<frame>.png`` (uint8, value = the annotation's ``alignment_id``). Optionally
``<rendering_root>/<scene>/sensor_depth/<frame>.png`` (same format: depth as a depth camera
would measure it, ``roca-make-dataset --sensor-depth``); where that file exists, the sample has
the extra field ``sensor_depth`` ((H, W) float32 metres, 0 = no measurement), resized like
``depth``; where it does not, the field is absent.

Where things are looked up under ``root`` (each can be given explicitly):

* annotations: ``annotations_<split>.json`` (synthetic), ``scan2cad_instances_<split>.json`` or
  ``Dataset/scan2cad_instances_<split>.json`` (reference ``Data/`` folder);
* images: ``file_name`` relative to ``root`` or ``root/Images``;
* renderings: ``root/rendering`` or ``root/Rendering``;
* CAD voxels (choose with ``cad_voxels``): a roca CAD database directory (``root/cad_db``,
  ids = ``id_cad``), or the reference preparation's ``<split>_grids_32.pkl``
  (``{(catid_cad, id_cad): (K, 3) int indices}``, found in ``root`` or ``root/Dataset``).
  The reference stores indices in (z, y, x) order (it transposes trimesh's matrix); they are
  turned into roca's ``grid[ix, iy, iz]`` here. Its cells are centred half a cell off roca's
  (``(i - 16) / 32`` instead of ``(i - 15.5) / 32``), which is ignored. Pickle files execute
  code when loaded: only use ones you trust.

Masks come from the instance image (falling back to the annotation's RLE), boxes are the
bounds of the (possibly resized) masks, NOC targets are ``R^T (p - t) / s`` of the depth
points on each object's visible pixels, and objects without ``q`` (non-CAD ScanNet labels) or of
classes outside ``class_names`` are skipped.
"""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.data.coco_format import decode_mask
from roca_core.data.voxelize_mesh import GRID_RES
from roca_core.geometry.camera import backproject_depth_np, scale_intrinsics
from roca_core.geometry.rotations import quat_to_matrix_np

DEPTH_SCALE = 1000.0
SENSOR_DEPTH_DIR = "sensor_depth"  # beside depth/ under <rendering_root>/<scene>/
JITTER_RANGE = (0.8, 1.25)


class DatasetError(ValueError):
    """The data set folder is missing files or has inconsistent annotations."""


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)


class CadVoxelSource:
    """id_cad -> (32, 32, 32) bool occupancy, from a CadDatabase or a reference grids pickle."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path
        self.grids: dict[str, np.ndarray] = {}
        self.classes: dict[str, str] = {}
        self.database = None  # the CadDatabase when read from one
        if path.is_dir():
            from roca_core.data.cad_database import CadDatabase

            db = CadDatabase.load(path)
            self.database = db
            for i, cid in enumerate(db.ids):
                self.grids[cid] = db.voxels[i]
                self.classes[cid] = db.model_classes[i]
        elif path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = pickle.load(f)
            for key, idx in data.items():
                cid = key[1] if isinstance(key, tuple) else str(key)
                grid = np.zeros((GRID_RES,) * 3, dtype=bool)
                idx = np.asarray(idx, dtype=np.int64).reshape(-1, 3)
                grid[idx[:, 2], idx[:, 1], idx[:, 0]] = True  # (z, y, x) -> [ix, iy, iz]
                self.grids[cid] = grid
        else:
            raise DatasetError(f"CAD voxels must be a CAD database folder or a .pkl of grids: {path}")

    def get(self, cad_id: str) -> np.ndarray | None:
        return self.grids.get(cad_id)


class RocaDataset(Dataset):
    """Images and targets per the shared dataset contract (see module docstring for layout).

    ``image_size=(H, W)`` resizes images (bilinear), masks, instance ids and depth (nearest)
    and scales K. ``augment`` applies colour jitter (contrast, brightness, saturation factors
    in [0.8, 1.25]) drawn from torch's global RNG (seeded per DataLoader worker).
    """

    def __init__(self, root: str | Path, split: str = "train", augment: bool = False,
                 image_size: tuple[int, int] | None = None, *, annotation_file: str | Path | None = None,
                 image_root: str | Path | None = None, rendering_root: str | Path | None = None,
                 cad_voxels: str | Path | None = None, class_names: tuple[str, ...] = CLASS_NAMES,
                 skip_empty: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"data set folder not found: {self.root}")
        self.split = split
        self.augment = bool(augment)
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 8):
            raise ValueError(f"image_size must be (H, W) with both >= 8, got {image_size}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.class_names = tuple(class_names)

        ann_path = Path(annotation_file) if annotation_file else _first_existing([
            self.root / f"annotations_{split}.json", self.root / f"scan2cad_instances_{split}.json",
            self.root / "Dataset" / f"scan2cad_instances_{split}.json"])
        if ann_path is None or not ann_path.is_file():
            raise DatasetError(f"no annotations for split {split!r} in {self.root} (looked for "
                               f"annotations_{split}.json and [Dataset/]scan2cad_instances_{split}.json)")
        self.annotation_file = ann_path
        data = json.loads(ann_path.read_text())
        cat_names = {c["id"]: c["name"] for c in data.get("categories", [])}
        self.images: list[dict] = list(data["images"])
        self._anns: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for a in data.get("annotations", []):
            if "q" not in a or a.get("image_id") not in self._anns:
                continue
            name = cat_names.get(a["category_id"])
            if name is None and 0 <= a["category_id"] < len(CLASS_NAMES):
                name = CLASS_NAMES[a["category_id"]]
            if name not in self.class_names:
                continue
            self._anns[a["image_id"]].append(dict(a, _class_index=self.class_names.index(name)))
        if skip_empty:
            self.images = [im for im in self.images if self._anns[im["id"]]]

        self.image_root = Path(image_root) if image_root else self._guess_image_root()
        self.rendering_root = Path(rendering_root) if rendering_root else (
            _first_existing([self.root / "rendering", self.root / "Rendering"]) or self.root / "rendering")
        self.cad_voxels = self._open_cad_voxels(cad_voxels)
        self._class_pool: dict[int, list[str]] = {}
        if self.cad_voxels is not None:
            for anns in self._anns.values():
                for a in anns:
                    pool = self._class_pool.setdefault(a["_class_index"], [])
                    cid = a["model"]["id_cad"]
                    if cid not in pool and self.cad_voxels.get(cid) is not None:
                        pool.append(cid)
            for pool in self._class_pool.values():
                pool.sort()
        self._intrinsics_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ set-up helpers
    def _guess_image_root(self) -> Path:
        if not self.images:
            return self.root
        first = self.images[0]["file_name"]
        for cand in (self.root, self.root / "Images"):
            if (cand / first).is_file():
                return cand
        return self.root

    def _open_cad_voxels(self, cad_voxels) -> CadVoxelSource | None:
        path = Path(cad_voxels) if cad_voxels else _first_existing([
            self.root / "cad_db", self.root / f"{self.split}_grids_32.pkl",
            self.root / "Dataset" / f"{self.split}_grids_32.pkl"])
        if path is None:
            warnings.warn(f"{self.root}: no CAD voxels found (cad_db/ or <split>_grids_32.pkl); "
                          "cad_voxels targets will be all zeros", stacklevel=3)
            return None
        if not path.exists():
            raise DatasetError(f"CAD voxels not found: {path}")
        return CadVoxelSource(path)

    # ------------------------------------------------------------------ summaries
    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self) -> np.ndarray:
        """(len(class_names),) int64 annotated objects per class in this split (no image reads)."""
        counts = np.zeros(len(self.class_names), dtype=np.int64)
        for im in self.images:
            for a in self._anns[im["id"]]:
                counts[a["_class_index"]] += 1
        return counts

    @property
    def cad_database(self):
        """The split's CadDatabase when the CAD voxels come from one (synthetic data), else None."""
        return None if self.cad_voxels is None else self.cad_voxels.database

    def annotations(self, idx: int) -> list[dict]:
        """Raw annotation records of image ``idx`` (kept ones: with a pose and a known class)."""
        return [{k: v for k, v in a.items() if k != "_class_index"} for a in self._anns[self.images[idx]["id"]]]

    # ------------------------------------------------------------------ reading

    def _frame_paths(self, info: dict) -> tuple[Path, str, str]:
        file_name = info["file_name"]
        parts = Path(file_name).parts
        if len(parts) < 3:
            raise DatasetError(f"image file_name {file_name!r} does not end in <scene>/color/<frame>.<ext>")
        return self.image_root / file_name, parts[-3], Path(parts[-1]).stem

    def _scene_intrinsics(self, image_path: Path) -> np.ndarray | None:
        path = image_path.parent.parent / "intrinsics_color.txt"
        key = str(path)
        if key not in self._intrinsics_cache:
            self._intrinsics_cache[key] = np.loadtxt(path)[:3, :3] if path.is_file() else None
        return self._intrinsics_cache[key]

    def raw_sample(self, idx: int) -> dict[str, Any]:
        """Numpy arrays at the stored resolution (no resize, no augmentation)."""
        info = self.images[idx]
        image_path, scene, frame = self._frame_paths(info)
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"cannot read image {image_path}")
        rgb = bgr[..., ::-1]
        h, w = rgb.shape[:2]
        depth_path = self.rendering_root / scene / "depth" / f"{frame}.png"
        depth_raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        if depth_raw is None:
            raise DatasetError(f"cannot read depth {depth_path}")
        depth = depth_raw.astype(np.float32) / DEPTH_SCALE
        if depth.shape != (h, w):
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        sensor_depth = self._read_sensor_depth(scene, frame, (h, w))
        inst_path = self.rendering_root / scene / "instance" / f"{frame}.png"
        instance = cv2.imread(str(inst_path), cv2.IMREAD_UNCHANGED)
        if instance is not None and instance.ndim == 3:
            instance = instance[..., 0]
        anns = self._anns[info["id"]]
        masks = []
        for a in anns:
            if instance is not None and "alignment_id" in a:
                m = instance == a["alignment_id"]
                if m.shape != (h, w):
                    m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            elif "segmentation" in a:
                m = decode_mask(a["segmentation"], h, w)
            else:
                raise DatasetError(f"{inst_path} missing and annotation {a.get('id')} has no segmentation")
            masks.append(m)
        if anns:
            K = np.asarray(anns[0]["intrinsics"], dtype=np.float64)[:3, :3]
        else:
            K = self._scene_intrinsics(image_path)
            if K is None:
                f = 435.0 * w / 480.0
                K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
        return {"info": info, "scene": scene, "rgb": np.ascontiguousarray(rgb), "depth": depth,
                "sensor_depth": sensor_depth, "masks": masks, "anns": anns, "K": K}

    def _read_sensor_depth(self, scene: str, frame: str, hw: tuple[int, int]) -> np.ndarray | None:
        """(H, W) float32 metres from ``sensor_depth/<frame>.png``, or None without that file."""
        path = self.rendering_root / scene / SENSOR_DEPTH_DIR / f"{frame}.png"
        if not path.is_file():
            return None
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise DatasetError(f"cannot read sensor depth {path} (expected a 1-channel 16-bit PNG)")
        depth = raw.astype(np.float32) / DEPTH_SCALE
        if depth.shape != hw:
            depth = cv2.resize(depth, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        return depth

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, dict[str, Any]]:
        raw = self.raw_sample(idx)
        rgb, depth, masks, K, anns = raw["rgb"], raw["depth"], raw["masks"], raw["K"], raw["anns"]
        sensor_depth = raw["sensor_depth"]
        h0, w0 = depth.shape
        if self.image_size is not None and self.image_size != (h0, w0):
            h, w = self.image_size
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if h < h0 else cv2.INTER_LINEAR)
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
            if sensor_depth is not None:
                sensor_depth = cv2.resize(sensor_depth, (w, h), interpolation=cv2.INTER_NEAREST)
            masks = [cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                     for m in masks]
            K = scale_intrinsics(K, (h0, w0), (h, w))
        h, w = depth.shape
        keep = [i for i, m in enumerate(masks) if m.any()]
        anns = [anns[i] for i in keep]
        masks = [masks[i] for i in keep]
        n = len(anns)

        image = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if self.augment:
            image = color_jitter(image)

        quats = np.array([a["q"] for a in anns], dtype=np.float64).reshape(n, 4)
        rots = quat_to_matrix_np(quats) if n else np.zeros((0, 3, 3))
        trans = np.array([a["t"] for a in anns], dtype=np.float64).reshape(n, 3)
        scales = np.array([a["s"] for a in anns], dtype=np.float64).reshape(n, 3)
        noc = np.zeros((h, w, 3), dtype=np.float32)
        if n:
            pts = backproject_depth_np(depth, K)
            valid_depth = depth > 0
            for i, m in enumerate(masks):
                sel = m & valid_depth
                p = pts[sel]
                noc[sel] = (((p - trans[i]) @ rots[i]) / scales[i]).astype(np.float32)
        boxes = np.zeros((n, 4), dtype=np.float32)
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([a["_class_index"] + 1 for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8) if n else np.zeros((0, h, w), np.uint8)),
            "depth": torch.from_numpy(depth.astype(np.float32)),
            "K": torch.from_numpy(np.asarray(K, dtype=np.float32)),
            "rotations": torch.from_numpy(rots.astype(np.float32)),
            "quaternions": torch.from_numpy(quats.astype(np.float32)),
            "translations": torch.from_numpy(trans.astype(np.float32)),
            "scales": torch.from_numpy(scales.astype(np.float32)),
            "noc": torch.from_numpy(noc).permute(2, 0, 1).contiguous(),
            "symmetries": torch.tensor([int(Symmetry.from_tag(a.get("sym", "__SYM_NONE"))) for a in anns],
                                       dtype=torch.int64),
            "cad_ids": [str(a["model"]["id_cad"]) for a in anns],
            "image_id": int(raw["info"]["id"]),
            "scene_id": str(raw["info"].get("scene_id", raw["scene"])),
        }
        if sensor_depth is not None:
            target["sensor_depth"] = torch.from_numpy(sensor_depth.astype(np.float32))
        pos, neg = self._cad_targets(anns)
        target["cad_voxels"] = pos
        target["neg_cad_voxels"] = neg
        return image, target

    def _cad_targets(self, anns: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(anns)
        pos = torch.zeros((n, GRID_RES, GRID_RES, GRID_RES), dtype=torch.float32)
        neg = torch.zeros_like(pos)
        if self.cad_voxels is None:
            return pos, neg
        for i, a in enumerate(anns):
            cid = str(a["model"]["id_cad"])
            grid = self.cad_voxels.get(cid)
            if grid is None:
                raise DatasetError(f"CAD {cid!r} of annotation {a.get('id')} has no voxel grid in "
                                   f"{self.cad_voxels.path}")
            pos[i] = torch.from_numpy(grid.astype(np.float32))
            pool = [c for c in self._class_pool.get(a["_class_index"], []) if c != cid]
            other = pool[int(torch.randint(len(pool), ()).item())] if pool else cid
            neg[i] = torch.from_numpy(self.cad_voxels.get(other).astype(np.float32))
        return pos, neg


def color_jitter(image: torch.Tensor, lo: float = JITTER_RANGE[0], hi: float = JITTER_RANGE[1]) -> torch.Tensor:
    """Contrast, brightness and saturation factors in [lo, hi] (as the reference training)."""
    f = torch.empty(3).uniform_(lo, hi)
    gray_mean = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).mean()
    image = (image - gray_mean) * f[0] + gray_mean
    image = image * f[1]
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    image = (image - gray) * f[2] + gray
    return image.clamp(0.0, 1.0)


def collate_fn(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists (sizes and object counts differ), torchvision style."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
