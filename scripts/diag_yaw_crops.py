"""Diagnosis (issue #10): can a small CNN trained from scratch read an object's yaw from its
image crop? If it can, the images carry the orientation the ROCA model fails to learn; if it
cannot, the renders (or the labels) are the limit.

    python scripts/diag_yaw_crops.py --data data/synthetic [--device cuda] [--epochs 40]

Crops of the ground-truth boxes (48x48, at the model's 192x256 input) -> yaw bin (8 bins of
45 degrees, per class), folded by the CAD's rotational symmetry (objects with "infinite"
symmetry are left out). Two labels: egocentric (the object's yaw in the camera frame, which
the NOCs need) and allocentric (relative to the viewing ray, which is what a crop shows).
Prints held-out accuracy against chance after each epoch and writes a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NB = 8  # yaw bins
CROP = 48
FOLD = {0: 1, 2: 2, 4: 4}  # Symmetry value -> rotations that look the same


def _yaw_bin(angle: float, fold: int) -> int:
    a = (angle * fold) % (2 * math.pi)
    return int(a / (2 * math.pi) * NB + 0.5) % NB


def _crops_of(args: tuple[str, str, int, int]) -> tuple[list, list, list, list]:
    root, split, start, stop = args
    torch.set_num_threads(1)
    from roca_core.data.loader import RocaDataset

    ds = RocaDataset(root, split, image_size=(192, 256))
    xs, ego, allo, cls = [], [], [], []
    for i in range(start, min(stop, len(ds))):
        img, t = ds[i]
        h, w = img.shape[-2:]
        for b, rot, tr, sym, lab in zip(t["boxes"], t["rotations"], t["translations"], t["symmetries"], t["labels"]):
            fold = FOLD.get(int(sym))
            x0, y0, x1, y1 = b.tolist()
            if fold is None or x1 - x0 < 8 or y1 - y0 < 8:
                continue
            cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 1.15
            gx = torch.linspace(cx - side / 2, cx + side / 2, CROP) / (w - 1) * 2 - 1
            gy = torch.linspace(cy - side / 2, cy + side / 2, CROP) / (h - 1) * 2 - 1
            grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
            xs.append((F.grid_sample(img[None], grid, align_corners=True)[0] * 255).to(torch.uint8))
            # rot maps object -> camera; its first column is the object's x axis in the camera.
            # About the vertical, that axis sits at -yaw; the viewing ray at atan2(x, z).
            neg_yaw = math.atan2(float(rot[2, 0]), float(rot[0, 0]))
            ray = math.atan2(float(tr[0]), float(tr[2]))
            ego.append(_yaw_bin(-neg_yaw, fold))
            allo.append(_yaw_bin(-neg_yaw - ray, fold))
            cls.append(int(lab))
    return xs, ego, allo, cls


def load_crops(root: str, split: str, limit: int, workers: int) -> dict[str, torch.Tensor]:
    from roca_core.data.loader import RocaDataset

    n = min(limit, len(RocaDataset(root, split)))
    chunk = max(1, math.ceil(n / max(1, workers * 4)))
    jobs = [(root, split, s, s + chunk) for s in range(0, n, chunk)]
    xs, ego, allo, cls = [], [], [], []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_crops_of, jobs))
    else:
        parts = [_crops_of(j) for j in jobs]
    for p in parts:
        xs += p[0]; ego += p[1]; allo += p[2]; cls += p[3]
    return {"x": torch.stack(xs), "ego": torch.tensor(ego), "allo": torch.tensor(allo), "cls": torch.tensor(cls)}


def make_net(width: int) -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.ReLU(), nn.MaxPool2d(2))
    # two heads per class: egocentric and allocentric bins
    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 2 * 10 * NB))


def accuracy(net: nn.Module, data: dict, device: torch.device) -> dict[str, float]:
    net.eval()
    out: dict[str, list] = {"ego": [], "allo": []}
    with torch.no_grad():
        for j in range(0, len(data["cls"]), 512):
            x = data["x"][j:j + 512].to(device).float() / 255
            c = data["cls"][j:j + 512].to(device)
            lo = net(x).view(-1, 2, 10, NB)[torch.arange(len(c), device=device), :, c]  # (B, 2, NB)
            for k, name in enumerate(("ego", "allo")):
                d = (lo[:, k].argmax(1).cpu() - data[name][j:j + 512]).abs()
                out[name].append(torch.minimum(d, NB - d))
    net.train()
    res = {}
    for name, ds in out.items():
        d = torch.cat(ds)
        res[f"{name}_exact"] = round((d == 0).float().mean().item(), 4)
        res[f"{name}_within1"] = round((d <= 1).float().mean().item(), 4)
    return res


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-images", type=int, default=100000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cache", default=None, help="crops file to reuse / write (torch.save)")
    p.add_argument("--resize", type=int, default=0, help="train on crops resized to this side (0: 48)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--save-net", default=None, help="write the trained network's state_dict here")
    p.add_argument("--out", default=None, help="JSON summary")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.cache and Path(args.cache).is_file():
        tr, va = torch.load(args.cache)
    else:
        tr = load_crops(args.data, "train", args.train_images, args.workers)
        va = load_crops(args.data, "val", 100000, args.workers)
        if args.cache:
            torch.save((tr, va), args.cache)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resize and args.resize != CROP:
        for d in (tr, va):
            d["x"] = F.interpolate(d["x"].float(), size=(args.resize, args.resize), mode="area").round().to(torch.uint8)
    print(f"crops: {len(tr['cls'])} train, {len(va['cls'])} held-out, {time.time() - t0:.0f} s; chance exact "
          f"{1 / NB:.3f}, within one bin {3 / NB:.3f}", flush=True)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = make_net(args.width).to(device)
    opt = torch.optim.Adam(net.parameters(), args.lr)
    history = []
    x_all, c_all = tr["x"], tr["cls"]
    y_all = torch.stack([tr["ego"], tr["allo"]], 1)
    for ep in range(args.epochs):
        perm = torch.randperm(len(c_all))
        total, n = 0.0, 0
        for j in range(0, len(perm), args.batch):
            idx = perm[j:j + args.batch]
            x = x_all[idx].to(device).float() / 255
            c, y = c_all[idx].to(device), y_all[idx].to(device)
            lo = net(x).view(-1, 2, 10, NB)[torch.arange(len(c), device=device), :, c]
            loss = F.cross_entropy(lo.reshape(-1, NB), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        row = {"epoch": ep + 1, "train_loss": round(total / n, 4), **{f"heldout_{k}": v for k, v in accuracy(net, va, device).items()},
               "seconds": round(time.time() - t0, 1)}
        if ep + 1 == args.epochs or (ep + 1) % 5 == 0:
            row.update({f"train_{k}": v for k, v in accuracy(net, {k: v[:2000] for k, v in tr.items()}, device).items()})
        history.append(row)
        print(json.dumps(row), flush=True)
    if args.save_net:
        torch.save(net.state_dict(), args.save_net)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "num_train": len(c_all), "num_heldout": len(va["cls"]),
                                              "history": history}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
