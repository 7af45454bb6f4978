"""`roca-make-dataset`: render a synthetic ScanNet25k-like training set (see
:mod:`roca_core.data.dataset_writer` for the output layout and annotation rules).

By default a tenth of the rooms (at least one when there are two or more) becomes the held-out
``val`` split, the split ``roca-eval`` and the trainer's periodic evaluation read."""
from __future__ import annotations

import argparse
import math
import os
import sys

from roca_core.config_io import ConfigError, load_yaml
from roca_core.data.config import render_config_from_dict


DEFAULT_VAL_FRACTION = 0.1


def default_val_fraction(num_images: int, images_per_scene: int) -> float:
    """DEFAULT_VAL_FRACTION of the rooms, rounded, but at least one room when there are two
    or more (so small data sets get a held-out split too); 0 for a single room."""
    num_scenes = math.ceil(num_images / images_per_scene)
    if num_scenes < 2:
        return 0.0
    if round(num_scenes * DEFAULT_VAL_FRACTION) >= 1:
        return DEFAULT_VAL_FRACTION
    return 1.0 / num_scenes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="roca-make-dataset", description=__doc__.split("(")[0].strip())
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel renderer processes")
    p.add_argument("--split-val", type=float, default=None,
                   help=f"fraction of scenes (rooms) for the held-out val split; default "
                        f"{DEFAULT_VAL_FRACTION} with at least one room when there are two or more; "
                        f"0 writes no val split")
    p.add_argument("--height", type=int, help="image height (default 360)")
    p.add_argument("--width", type=int, help="image width (default 480)")
    p.add_argument("--focal", type=float, help="focal length in pixels (default 435)")
    p.add_argument("--images-per-scene", type=int, help="images sharing one room layout (default 10)")
    p.add_argument("--config", help="YAML overriding roca_core.data.config.RenderConfig fields")
    p.add_argument("--sensor-depth", action="store_true",
                   help="also write sensor-like depth (RealSense D435-class noise, quantisation and holes; "
                        "RenderConfig.sensor_depth) to rendering/<scene>/sensor_depth/<frame>.png, "
                        "beside the true depth")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = render_config_from_dict(load_yaml(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.height:
        cfg.camera.height = args.height
    if args.width:
        cfg.camera.width = args.width
    if args.focal:
        cfg.camera.focal = args.focal
    if args.images_per_scene:
        cfg.images_per_scene = args.images_per_scene
    from roca_core.data.config import validate_render_config
    from roca_core.data.dataset_writer import make_dataset
    from roca_core.data.renderer import RendererUnavailable

    try:
        validate_render_config(cfg)  # again: command-line sizes may be bad
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    split_val = args.split_val
    if split_val is None:
        split_val = default_val_fraction(args.images, cfg.images_per_scene) if args.images > 0 else 0.0
        if split_val == 0.0 and args.images > 0:
            print(f"note: {args.images} image(s) make a single room ({cfg.images_per_scene} images "
                  f"per room): no held-out val split (roca-eval will warn and use train)",
                  file=sys.stderr)
    try:
        info = make_dataset(args.out, args.images, seed=args.seed, workers=args.workers,
                            split_val=split_val, cfg=cfg, progress=not args.no_progress,
                            sensor_depth=args.sensor_depth)
    except (ValueError, RendererUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {info['splits']} in {info['seconds']:.1f} s "
          f"({info['images_per_second']:.1f} images/s, {args.workers} worker(s)), "
          f"{info['cad_models_used']} CAD models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
