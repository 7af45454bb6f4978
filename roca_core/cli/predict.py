"""roca-predict: ROCA on your own images, without ROS.

    roca-predict photo.jpg [more.png ...] --out results/ [--fov 58 | --intrinsics fx,fy,cx,cy]
                 [--depth depth.png [more.png ...]] [--up 0,-1,0 [--camera-height 1.2]]

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
    p.add_argument("--depth", nargs="+", default=None, metavar="FILE",
                   help="depth maps registered to the images, one per image in the same order: "
                        "16-bit PNG/TIFF in millimetres (scaled by --depth-scale) or .npy float "
                        "metres; 0 or NaN = no measurement (the predicted depth fills holes)")
    p.add_argument("--depth-scale", type=float, default=0.001,
                   help="metres per unit of integer depth images (RealSense, Kinect: 0.001)")
    p.add_argument("--up", default=None, metavar="X,Y,Z",
                   help="the camera-frame up direction (against gravity; OpenCV axes: x right, y "
                        "down, z forward, so 0,-1,0 for a level camera): the upright prior, only "
                        "each object's yaw is solved")
    p.add_argument("--camera-height", type=float, default=None, metavar="M",
                   help="the camera's height above the floor in metres (with --up): the ground-plane "
                        "prior, each object is scaled about the camera until it stands on the floor, "
                        "then slid along it towards its box's bottom edge")
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


def parse_up(text: str) -> np.ndarray:
    try:
        vals = np.array([float(x) for x in text.split(",")])
    except ValueError:
        raise UsageError(f"--up {text!r}: expected three numbers x,y,z") from None
    if vals.shape != (3,) or not np.all(np.isfinite(vals)) or np.linalg.norm(vals) < 1e-6:
        raise UsageError(f"--up {text!r}: expected a finite non-zero vector x,y,z")
    return vals / np.linalg.norm(vals)


def read_depth(path: Path, height: int, width: int, scale: float) -> np.ndarray:
    """(H, W) float32 metres from a 16/32-bit integer image (times ``scale``) or a float
    .npy/.tiff (metres); UsageError naming the file when it is not a depth map of this size."""
    import cv2

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"{path}: not a readable .npy depth map ({exc})") from None
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise UsageError(f"{path}: not a readable depth image")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise UsageError(f"{path}: a depth map has one channel, this has shape {depth.shape}")
    if depth.dtype == np.uint8:
        raise UsageError(f"{path}: an 8-bit image cannot hold depth (expected 16-bit millimetres "
                         "or float metres)")
    if depth.shape != (height, width):
        raise UsageError(f"{path}: depth is {depth.shape[1]}x{depth.shape[0]} but its image is "
                         f"{width}x{height} (only depth registered to the colour image works)")
    if np.issubdtype(depth.dtype, np.integer):
        return depth.astype(np.float32) * np.float32(scale)
    if not np.issubdtype(depth.dtype, np.floating):
        raise UsageError(f"{path}: unsupported depth type {depth.dtype}")
    return depth.astype(np.float32)


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
    up = parse_up(args.up) if args.up is not None else None
    if args.camera_height is not None:
        if up is None:
            raise UsageError("--camera-height (the ground-plane prior) needs --up as well")
        if args.no_retrieval:
            raise UsageError("--camera-height needs retrieval (the CAD models' heights); drop --no-retrieval")
        if not (np.isfinite(args.camera_height) and args.camera_height > 0):
            raise UsageError(f"--camera-height {args.camera_height}: must be a positive number of metres")
    depth_paths: "list[Path | None]" = [None] * len(paths)
    if args.depth is not None:
        if len(args.depth) != len(paths):
            raise UsageError(f"--depth has {len(args.depth)} file(s) for {len(paths)} image(s): "
                             "give one depth map per image, in the same order")
        if not (np.isfinite(args.depth_scale) and args.depth_scale > 0):
            raise UsageError(f"--depth-scale {args.depth_scale}: must be a positive number")
        depth_paths = [Path(d) for d in args.depth]
    # Check every input before loading the model: fail fast, naming the file.
    for p, dp in zip(paths, depth_paths):
        img = read_image(p)
        image_intrinsics(args, p, *img.shape[:2])
        if dp is not None:
            read_depth(dp, *img.shape[:2], args.depth_scale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(args.checkpoint, cad_database=False if args.no_retrieval else args.cad_db,
                          device=args.device, score_threshold=args.score_threshold)
    for p, dp, stem in tqdm(list(zip(paths, depth_paths, _output_stems(paths))), desc="roca-predict",
                            unit="img"):
        img = read_image(p)
        K = image_intrinsics(args, p, *img.shape[:2])
        depth = None if dp is None else read_depth(dp, *img.shape[:2], args.depth_scale)
        dets = predictor.predict(img, K, depth=depth, up=up, camera_height=args.camera_height)
        record = {
            "image": str(p), "height": int(img.shape[0]), "width": int(img.shape[1]),
            "K": K.tolist(), "class_names": list(predictor.class_names),
            "depth": None if dp is None else str(dp), "up": None if up is None else up.tolist(),
            "camera_height": args.camera_height,
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
