"""Synthetic data generation speed and size: images/s with 1 worker and with all cores, and
MB on disk per 1000 images (extrapolated from the measured run).

    .venv/bin/python bench/bench_render.py [--images 200] [--workers N]

Timings include writing JPEG/PNG files and the annotation JSON; the multi-worker figure
includes starting the worker processes (each opens its own EGL context), measured separately.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from roca_core.data.config import RenderConfig
from roca_core.data.dataset_writer import SyntheticSceneGenerator, make_dataset


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cfg = RenderConfig()
    tmp = Path(tempfile.mkdtemp(prefix="roca_bench_render_"))
    try:
        # render only (no file writing), one process
        gen = SyntheticSceneGenerator(cfg, args.seed)
        n = min(args.images, 100)
        gen.render(0)
        t0 = time.perf_counter()
        objs = 0
        for i in range(n):
            objs += len(gen.render(i).objects)
        t_render = time.perf_counter() - t0
        gen.release()
        print(f"render only (RGB + depth + instances + NOCs, {cfg.camera.height}x{cfg.camera.width}): "
              f"{n / t_render:.1f} images/s, {objs / n:.2f} annotated objects/image")

        results = {}
        for workers in sorted({1, args.workers}):
            # a run of one image per worker measures the fixed cost (process start, GL contexts,
            # CAD database); the steady rate excludes it
            t0 = time.perf_counter()
            make_dataset(tmp / f"s{workers}", workers, seed=args.seed, workers=workers, cfg=cfg, progress=False)
            fixed = time.perf_counter() - t0
            out = tmp / f"w{workers}"
            t0 = time.perf_counter()
            info = make_dataset(out, args.images, seed=args.seed, workers=workers, cfg=cfg, progress=False)
            wall = time.perf_counter() - t0
            steady = (args.images - workers) / max(wall - fixed, 1e-6)
            results[workers] = (info, wall, steady)
            print(f"roca-make-dataset --workers {workers}: {args.images / wall:.1f} images/s end to end "
                  f"for {args.images} images ({wall:.1f} s), {steady:.1f} images/s steady "
                  f"(fixed start-up cost {fixed:.1f} s)")
        if len(results) > 1:
            one, many = results[1][2], results[args.workers][2]
            print(f"steady speed-up with {args.workers} workers: {many / one:.2f}x on {os.cpu_count()} cores")
        img_dir = tmp / "w1"
        size = _dir_bytes(img_dir)
        per_image = _dir_bytes(img_dir / "images") + _dir_bytes(img_dir / "rendering")
        fixed = size - per_image
        print(f"disk: {size / 1e6:.1f} MB for {args.images} images -> "
              f"{per_image / args.images * 1000 / 1e6:.0f} MB per 1000 images "
              f"(+ {fixed / 1e6:.1f} MB annotations/CAD database for this run)")
        ann = sum(f.stat().st_size for f in img_dir.glob("annotations_*.json"))
        print(f"annotation JSON: {ann / args.images * 1000 / 1e6:.1f} MB per 1000 images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
