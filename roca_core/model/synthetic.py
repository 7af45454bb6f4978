"""Synthetic batches in the dataset contract's format, for tests and benchmarks.

Each object is an ellipse-shaped mask inside a random box, seen at a random pose; depth is
a smooth bump over the object on a background plane, and the NOCs are computed from that
depth exactly as the dataset does (``R^T (p - t) / s``), so targets are self-consistent.
"""
from __future__ import annotations

import math

import torch

from roca_core.classes import Symmetry
from roca_core.geometry.camera import backproject_pixels
from roca_core.geometry.rotations import matrix_to_quat


def _rot_y(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def make_sample(height: int, width: int, num_objects: int = 2, num_classes: int = 9,
                seed: int = 0) -> tuple[torch.Tensor, dict]:
    """One (image, target) pair per the RocaDataset contract."""
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * width
    K = torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    image = torch.rand(3, height, width, generator=g) * 0.2 + 0.4
    depth = torch.full((height, width), 4.0)
    noc = torch.zeros(3, height, width)
    vv, uu = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    boxes, labels, masks, rots, trans, scales, syms = [], [], [], [], [], [], []
    for _ in range(num_objects):
        bw = float(torch.randint(width // 4, width // 2 + 1, (1,), generator=g))
        bh = float(torch.randint(height // 4, height // 2 + 1, (1,), generator=g))
        x1 = float(torch.randint(0, int(width - bw), (1,), generator=g))
        y1 = float(torch.randint(0, int(height - bh), (1,), generator=g))
        cx, cy = x1 + bw / 2, y1 + bh / 2
        inside = ((uu + 0.5 - cx) / (bw / 2)) ** 2 + ((vv + 0.5 - cy) / (bh / 2)) ** 2 <= 1.0
        z = 1.5 + 2.0 * float(torch.rand(1, generator=g))
        bump = z - 0.3 * (1 - ((uu + 0.5 - cx) / (bw / 2)) ** 2 - ((vv + 0.5 - cy) / (bh / 2)) ** 2).clamp_min(0)
        depth = torch.where(inside, bump, depth)
        cls = int(torch.randint(0, num_classes, (1,), generator=g))
        image[:, inside] = torch.rand(3, 1, generator=g) * 0.8 + 0.1
        rot = _rot_y(float(torch.rand(1, generator=g)) * 2 * math.pi)
        t = torch.stack([(torch.tensor(cx) - K[0, 2]) * z / f, (torch.tensor(cy) - K[1, 2]) * z / f, torch.tensor(z)])
        s = 0.5 + torch.rand(3, generator=g)
        boxes.append(torch.tensor([x1, y1, x1 + bw, y1 + bh]))
        labels.append(cls + 1)
        masks.append(inside)
        rots.append(rot)
        trans.append(t)
        scales.append(s)
        syms.append(int(list(Symmetry)[int(torch.randint(0, 4, (1,), generator=g))]))
    # later objects occlude earlier ones: visible masks and NOCs follow the painter's order
    vis = [m.clone() for m in masks]
    for i in range(len(vis)):
        for j in range(i + 1, len(vis)):
            vis[i] &= ~masks[j]
    p = backproject_pixels(uu, vv, depth, K)  # (H, W, 3)
    for m, rot, t, s in zip(vis, rots, trans, scales):
        q = ((p[m] - t) @ rot) / s
        noc[:, m] = q.T
    n = num_objects
    vox = (torch.rand(n, 32, 32, 32, generator=g) > 0.9).float()
    target = {
        "boxes": torch.stack(boxes) if n else torch.zeros(0, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(vis).to(torch.uint8) if n else torch.zeros(0, height, width, dtype=torch.uint8),
        "depth": depth, "K": K,
        "rotations": torch.stack(rots) if n else torch.zeros(0, 3, 3),
        "quaternions": matrix_to_quat(torch.stack(rots)) if n else torch.zeros(0, 4),
        "translations": torch.stack(trans) if n else torch.zeros(0, 3),
        "scales": torch.stack(scales) if n else torch.zeros(0, 3),
        "noc": noc,
        "cad_voxels": vox,
        "neg_cad_voxels": (torch.rand(n, 32, 32, 32, generator=g) > 0.9).float(),
        "symmetries": torch.tensor(syms, dtype=torch.int64),
        "cad_ids": [f"synthetic_{seed}_{i}" for i in range(n)],
        "image_id": seed, "scene_id": "synthetic",
    }
    return image, target


def make_batch(height: int, width: int, batch_size: int = 2, num_objects: int = 2,
               num_classes: int = 9, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """A list of images and a list of targets (what ``collate_fn`` returns)."""
    pairs = [make_sample(height, width, num_objects, num_classes, seed + i) for i in range(batch_size)]
    return [p[0] for p in pairs], [p[1] for p in pairs]
