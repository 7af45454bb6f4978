"""roca-predict: ROCA on your own images, without ROS.

    roca-predict photo.jpg [more.png ...] --out results/ [--fov 58 | --intrinsics fx,fy,cx,cy]

Writes, per image, <stem>.json (detections: class, score, box, 9-DoF pose, 4x4 transform,
retrieved CAD), <stem>_overlay.png (masks, boxes, projected CAD outlines) and
<stem>_scene.glb (aligned CAD models; glTF axes, camera at the origin).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_FOV_DEG = 58.0  # ScanNet colour frames at 480x360 have f ~ 435 px, i.e. ~58 deg across


class UsageError(Exception):
    """Bad input named in the message; exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roca-predict", description=__doc__.splitlines()[0],
        epilog="Without --intrinsics or --fov, the camera is assumed to have a horizontal "
               f"field of view of {DEFAULT_FOV_DEG:g} degrees (ScanNet-like: f = 435 px at 480x360) "
               "with the principal point at the image centre. --intrinsics are pixels of the "
               "image as given (any size; the image is resized for the network and K with it).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="+", help="input images (PNG, JPEG, ...)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY",
                     help="pinhole intrinsics in pixels of the input image(s)")
    cam.add_argument("--fov", type=float, default=None, metavar="DEG",
                     help=f"horizontal field of view in degrees (default {DEFAULT_FOV_DEG:g})")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the demo model)")
    p.add_argument("--cad-db", default=None, help="CAD database dir (default: the embedded CAD library)")
    p.add_argument("--no-retrieval", action="store_true", help="skip CAD retrieval")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--out", required=True, help="output directory")
    return p


def parse_intrinsics(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--intrinsics {text!r}: expected four numbers fx,fy,cx,cy") from None
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise UsageError(f"--intrinsics {text!r}: expected four finite numbers fx,fy,cx,cy")
    return vals  # type: ignore[return-value]


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); UsageError naming the file when it cannot be read."""
    import cv2

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise UsageError(f"{path}: not a readable image")
    return np.ascontiguousarray(img[:, :, ::-1])


def image_intrinsics(args: argparse.Namespace, path: Path, height: int, width: int) -> np.ndarray:
    from roca_core.geometry.camera import intrinsics_from_fov
    from roca_core.predictor import validate_intrinsics

    if args.intrinsics is not None:
        fx, fy, cx, cy = parse_intrinsics(args.intrinsics)
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        fov = DEFAULT_FOV_DEG if args.fov is None else args.fov
        if not 0.0 < fov < 180.0:
            raise UsageError(f"--fov {fov}: must lie strictly between 0 and 180 degrees")
        K = intrinsics_from_fov(width, height, fov)
    try:
        return validate_intrinsics(K, height, width)
    except ValueError as exc:
        raise UsageError(f"{path}: intrinsics do not fit this {width}x{height} image: {exc}") from None


def _output_stems(paths: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return stems


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from roca_core.predictor import Predictor
    from roca_core.visualize import draw_overlay, export_scene_glb

    paths = [Path(p) for p in args.images]
    if args.intrinsics is not None:
        parse_intrinsics(args.intrinsics)
    # Check every input before loading the model: fail fast, naming the file.
    sizes = []
    for p in paths:
        img = read_image(p)
        image_intrinsics(args, p, *img.shape[:2])
        sizes.append(img.shape[:2])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(args.checkpoint, cad_database=False if args.no_retrieval else args.cad_db,
                          device=args.device, score_threshold=args.score_threshold)
    for p, stem in tqdm(list(zip(paths, _output_stems(paths))), desc="roca-predict", unit="img"):
        img = read_image(p)
        K = image_intrinsics(args, p, *img.shape[:2])
        dets = predictor.predict(img, K)
        record = {
            "image": str(p), "height": int(img.shape[0]), "width": int(img.shape[1]),
            "K": K.tolist(), "class_names": list(predictor.class_names),
            "checkpoint": str(predictor.checkpoint_path) if predictor.checkpoint_path else None,
            "detections": [d.to_dict() for d in dets],
        }
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
        overlay = draw_overlay(img, dets, K, predictor.db)
        cv2.imwrite(str(out / f"{stem}_overlay.png"), overlay[:, :, ::-1])
        export_scene_glb(out / f"{stem}_scene.glb", dets, predictor.db)
    return 0


def main(argv: "Sequence[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.checkpoint import CheckpointError

    try:
        return run(args)
    except UsageError as exc:
        print(f"roca-predict: error: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError) as exc:
        print(f"roca-predict: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
