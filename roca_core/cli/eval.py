"""roca-eval: Scan2CAD alignment accuracy, AP50, retrieval and depth error of a checkpoint on a dataset.

    roca-eval --checkpoint models/roca_demo.safetensors --data DIR --split val \
        --out eval.json --md eval.md

Diagnosis: ``--gt-depth`` and ``--gt-boxes`` (combinable) feed ground-truth depth resp. boxes
and classes to the 3D heads, so the report shows what depth and detection errors cost.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Sequence

from roca_core.classes import BENCHMARK_CLASSES


def _parse_classes(text: "str | None") -> "tuple[str, ...] | None":
    if text is None or text == "all":
        return None
    if text == "benchmark":
        return BENCHMARK_CLASSES
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"--classes: no class names in {text!r}")
    return names


def _parse_mirror_heads(text: str) -> "tuple[str, ...]":
    """``none`` or a comma list of crop heads for mirror test-time augmentation."""
    from roca_core.config_io import ConfigError
    from roca_core.model.config import validate_mirror_heads

    heads = () if text.strip() == "none" else tuple(h.strip() for h in text.split(",") if h.strip())
    try:
        return validate_mirror_heads(heads)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or 'none')") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roca-eval", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="model checkpoint (default: the shipped demo model)")
    p.add_argument("--data", required=True, help="dataset root (RocaDataset layout)")
    p.add_argument("--split", default=None,
                   help="annotation split to evaluate (default: val; a data set without one "
                        "falls back to its only split, with a warning that it is not held out)")
    p.add_argument("--cad-db", default=None,
                   help="CAD database folder (default: DATA/cad_db, the CADs the data set was "
                        "built from, when present; else the embedded CAD library)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--md", default=None, help="write the Markdown table here")
    p.add_argument("--max-images", type=int, default=None,
                   help="evaluate this many images, spread evenly over the split (all rooms)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--classes", default="all",
                   help="classes the alignment metric counts: all (with ground truth), "
                        "benchmark (the 8 without bed) or a comma-separated list")
    p.add_argument("--mode", choices=("auto", "frame", "scene"), default="auto",
                   help="auto adds the per-scene merge when every frame has a camera pose")
    p.add_argument("--det-threshold", type=float, default=0.05,
                   help="detection score threshold of the predictor (AP uses all of them; "
                        "the alignment metric keeps score > 0.5)")
    p.add_argument("--depth-source", choices=("predicted", "sensor", "gt"), default="predicted",
                   help="depth the 3D heads use: the network's prediction, the data set's "
                        "simulated depth camera (roca-make-dataset --sensor-depth; holes filled "
                        "by the prediction), or its true depth (an upper bound showing how much "
                        "depth errors cost)")
    p.add_argument("--gt-depth", action="store_true", help="the same as --depth-source gt")
    p.add_argument("--refine", choices=("auto", "on", "off"), default="auto",
                   help="fit each retrieved CAD to the object's depth points after ROCA's pose; "
                        "auto: with measured (sensor or gt) depth only; on: also with predicted depth")
    p.add_argument("--upright", action="store_true",
                   help="upright prior: give the predictor the camera's up direction (from the "
                        "frame's ground-truth objects, which all stand upright: what an IMU or "
                        "the robot's TF gives), so only each object's yaw is solved")
    p.add_argument("--floor", action="store_true",
                   help="ground-plane prior: give the predictor the camera's up direction and its "
                        "height above the floor (both from the frame's ground-truth objects, which "
                        "stand on the floor: what a robot's calibrated camera mount gives), so each "
                        "object is scaled about the camera until it stands on the floor; implies --upright")
    p.add_argument("--floor-weight", type=float, default=None, metavar="W",
                   help="share of the floor's scale in log space, in [0, 1] (default: the "
                        "predictor's, GroundPlaneConfig.weight)")
    p.add_argument("--floor-bottom-weight", type=float, default=None, metavar="W",
                   help="with --floor: share of the slide along the floor onto the box's bottom edge, "
                        "in [0, 1] (0: off; default: the predictor's, GroundPlaneConfig.bottom_edge_weight)")
    p.add_argument("--gt-boxes", action="store_true",
                   help="diagnosis: run the depth, alignment and retrieval heads on the "
                        "ground-truth boxes and classes (alignment without detection errors; "
                        "no box AP)")
    p.add_argument("--no-yaw-head", action="store_true",
                   help="keep the Procrustes yaw although the network has a yaw head "
                        "(model.yaw_bins > 0), to measure what the head adds")
    p.add_argument("--no-centre-head", action="store_true",
                   help="keep ROCA's translation from the depth although the network has a "
                        "centre head (model.centre_width > 0), to measure what the head adds")
    p.add_argument("--no-up-head", action="store_true",
                   help="solve the full rotation although the network has an up head "
                        "(model.up_width > 0), to measure what its predicted upright prior adds")
    p.add_argument("--no-class-head", action="store_true",
                   help="rank and threshold detections by the detector's score alone, although the "
                        "network has a class head (to measure what the head adds)")
    p.add_argument("--no-shape-head", action="store_true",
                   help="retrieve with the NOC embedding although the network has a shape head "
                        "(model.shape_width > 0), to measure what the crop's embedding adds")
    p.add_argument("--mirror-heads", type=_parse_mirror_heads, default=None, metavar="LIST",
                   help="crop heads that also read each crop's mirror image (model.mirror_heads), e.g. "
                        "'none' or 'yaw,centre'; default: the checkpoint's setting")
    p.add_argument("--no-progress", action="store_true")
    return p


def available_splits(root: Path) -> list[str]:
    """Splits with an annotation file in ``root`` (synthetic or reference layout)."""
    names = set()
    for pattern, regex in (("annotations_*.json", r"annotations_(.+)\.json"),
                           ("scan2cad_instances_*.json", r"scan2cad_instances_(.+)\.json"),
                           ("Dataset/scan2cad_instances_*.json", r"scan2cad_instances_(.+)\.json")):
        for path in root.glob(pattern):
            m = re.fullmatch(regex, path.name)
            if m:
                names.add(m.group(1))
    return sorted(names)


def choose_split(root: Path, requested: "str | None") -> tuple[str, "str | None"]:
    """(split, warning): the requested split, else val, else the data set's only split.

    Raises ValueError naming the splits that exist when the choice is impossible."""
    splits = available_splits(root)
    if requested is not None:
        if splits and requested not in splits:
            raise ValueError(f"no annotations for split {requested!r} in {root}; it has "
                             f"{', '.join(map(repr, splits))}")
        return requested, None
    if "val" in splits or not splits:
        return "val", None
    if len(splits) == 1:
        return splits[0], (f"{root} has no val split, evaluating its {splits[0]!r} split: these "
                           f"numbers are not held out (roca-make-dataset writes a val split by "
                           f"default; --split chooses one)")
    raise ValueError(f"{root} has no val split; choose one of {', '.join(map(repr, splits))} "
                     "with --split")


def main(argv: "Sequence[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        classes = _parse_classes(args.classes)
    except argparse.ArgumentTypeError as exc:
        print(f"roca-eval: {exc}", file=sys.stderr)
        return 2
    if args.gt_depth and args.depth_source not in ("predicted", "gt"):
        print(f"roca-eval: --gt-depth contradicts --depth-source {args.depth_source}", file=sys.stderr)
        return 2
    depth_source = "gt" if args.gt_depth else args.depth_source
    if not Path(args.data).is_dir():
        print(f"roca-eval: --data {args.data!r} is not a directory", file=sys.stderr)
        return 2
    # Heavy imports only now, so --help stays fast.
    from roca_core.data.loader import RocaDataset
    from roca_core.evaluation.evaluator import evaluate_predictor
    from roca_core.evaluation.report import format_markdown, write_json, write_markdown
    from roca_core.predictor import Predictor
    try:
        from roca_core.checkpoint import CheckpointError
    except ImportError:  # pragma: no cover - the checkpoint module ships with the model
        CheckpointError = ValueError  # type: ignore[assignment,misc]

    cad_db = args.cad_db
    if cad_db is None and (Path(args.data) / "cad_db" / "header.json").is_file():
        cad_db = str(Path(args.data) / "cad_db")
    try:
        split, warning = choose_split(Path(args.data), args.split)
        if warning:
            print(f"roca-eval: WARNING: {warning}", file=sys.stderr)
        dataset = RocaDataset(args.data, split=split, augment=False)
        predictor = Predictor(checkpoint=args.checkpoint, cad_database=cad_db,
                              device=args.device, score_threshold=args.det_threshold,
                              refine={"auto": None, "on": True, "off": False}[args.refine])
        if args.floor_weight is not None:
            predictor.ground_plane = dataclasses.replace(predictor.ground_plane, weight=args.floor_weight)
        if args.floor_bottom_weight is not None:
            predictor.ground_plane = dataclasses.replace(predictor.ground_plane,
                                                         bottom_edge_weight=args.floor_bottom_weight)
        has_yaw_head = getattr(predictor.model, "yaw_head", None) is not None
        if args.no_yaw_head:
            predictor.model.use_yaw_head = False
        has_centre_head = getattr(predictor.model, "centre_head", None) is not None
        if args.no_centre_head:
            predictor.model.use_centre_head = False
        has_up_head = getattr(predictor.model, "up_head", None) is not None
        if args.no_up_head:
            predictor.model.use_up_head = False
        has_class_head = getattr(predictor.model, "class_head", None) is not None
        if args.no_class_head:
            predictor.model.use_class_head = False
        has_shape_head = getattr(predictor.model, "shape_head", None) is not None
        if args.no_shape_head:
            predictor.model.use_shape_head = False
        if args.mirror_heads is not None:
            predictor.model.cfg.mirror_heads = args.mirror_heads
        report = evaluate_predictor(predictor, dataset, classes=classes, mode=args.mode,
                                    max_images=args.max_images, progress=not args.no_progress,
                                    depth_source=depth_source, upright=args.upright,
                                    gt_boxes=args.gt_boxes, floor=args.floor)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:  # bad input, not a bug
        print(f"roca-eval: {exc}", file=sys.stderr)
        return 1
    report.update(checkpoint=args.checkpoint or "demo", data=str(args.data), split=split,
                  cad_database=cad_db or "embedded", gt_boxes=args.gt_boxes, refine=args.refine,
                  floor_weight=predictor.ground_plane.weight if args.floor else None,
                  floor_bottom_weight=predictor.ground_plane.bottom_edge_weight if args.floor else None,
                  yaw_head=("off" if args.no_yaw_head else "on") if has_yaw_head else "none",
                  centre_head=("off" if args.no_centre_head else "on") if has_centre_head else "none",
                  up_head=("off" if args.no_up_head else "on") if has_up_head else "none",
                  class_head=("off" if args.no_class_head else "on") if has_class_head else "none",
                  shape_head=("off" if args.no_shape_head else "on") if has_shape_head else "none",
                  mirror_heads=list(predictor.model.cfg.mirror_heads))
    oracle = " and ".join(x for x, on in (("ground-truth depth", depth_source == "gt"),
                                          ("sensor depth", depth_source == "sensor"),
                                          ("the upright prior", args.upright and not args.floor),
                                          ("the ground-plane prior", args.floor),
                                          ("refinement against depth", args.refine == "on" or (
                                              args.refine == "auto" and depth_source != "predicted")),
                                          ("ground-truth boxes", args.gt_boxes),
                                          ("the yaw head", has_yaw_head and not args.no_yaw_head),
                                          ("the centre head", has_centre_head and not args.no_centre_head),
                                          ("the up head", has_up_head and not args.no_up_head
                                           and not (args.upright or args.floor)),
                                          ("the class head", has_class_head and not args.no_class_head
                                           and not args.gt_boxes),
                                          ("the shape head", has_shape_head and not args.no_shape_head))
                      if on)
    oracle = f" with {oracle}" if oracle else ""
    print(format_markdown(report, title=f"ROCA evaluation: {split} split of {args.data}{oracle}"))
    if args.out:
        print(f"wrote {write_json(report, args.out)}")
    if args.md:
        print(f"wrote {write_markdown(report, args.md, title=f'ROCA evaluation: {split}{oracle}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
