"""Evaluation report: a Markdown table for people and a JSON file for tools.

The report is the plain dict made by :func:`build_report` (numbers in percent, ``None``
where undefined), so both writers and the trainer's logs read the same structure.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from roca_core.atomic_io import atomic_write_text
from roca_core.evaluation.alignment_metric import AlignmentResult
from roca_core.evaluation.depth_metric import DepthResult
from roca_core.evaluation.detection_metric import DetectionResult
from roca_core.evaluation.retrieval_metric import format_retrieval_line


def build_report(frame: AlignmentResult, scene: "AlignmentResult | None" = None,
                 detection: "DetectionResult | None" = None, depth: "DepthResult | None" = None,
                 **extra: Any) -> dict[str, Any]:
    """Top-level ``alignment`` / ``retrieval_aware`` are the scene-mode results when there
    are any (the paper's protocol), else the per-frame ones; both modes are kept under
    ``frame_mode`` / ``scene_mode``."""
    primary = scene if scene is not None else frame
    primary_d = primary.to_dict()
    report: dict[str, Any] = {
        "alignment": primary_d["alignment"],
        "retrieval_aware": primary_d["retrieval_aware"],
        "mode": primary.mode,
        "classes": list(primary.classes),
        "frame_mode": frame.to_dict(),
    }
    if scene is not None:
        report["scene_mode"] = scene.to_dict()
    if detection is not None:
        report["detection"] = detection.to_dict()
    if depth is not None:
        report["depth"] = depth.to_dict()
    report.update(extra)
    return report


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def _row(name: str, per_class: Mapping[str, Any], classes: Sequence[str], class_mean: Any,
         instance_mean: Any) -> str:
    cells = [_fmt(per_class.get(c)) for c in classes]
    return "| " + " | ".join([name, *cells, _fmt(class_mean), _fmt(instance_mean)]) + " |"


def format_markdown(report: Mapping[str, Any], title: str = "ROCA evaluation") -> str:
    """One table: rows = metrics, columns = classes, class mean, instance mean (percent)."""
    classes = list(report.get("classes") or report["alignment"]["per_class"].keys())
    lines = [f"## {title}", ""]
    info = [f"images: {report['num_images']}" if "num_images" in report else None,
            f"primary mode: {report.get('mode', 'frame')}",
            "3D heads on the ground-truth boxes and classes (no box AP)" if report.get("gt_boxes") else None,
            "ground-truth depth" if report.get("gt_depth") else None,
            "sensor depth" if report.get("depth_source") == "sensor" else None,
            "upright prior (camera up given)" if report.get("upright") else None,
            (f"refined against depth ({report['refinement']['accepted']} of "
             f"{report['refinement']['objects']} fits accepted, "
             f"{report['refinement']['ms_per_object']:.1f} ms per object)")
            if report.get("refinement") else None]
    lines += [", ".join(i for i in info if i), ""]
    header = ["metric (%)", *classes, "class mean", "instance mean"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + [":-:"] * (len(header) - 1)) + "|")
    for mode_key, mode_name in (("frame_mode", "per frame"), ("scene_mode", "per scene")):
        block = report.get(mode_key)
        if not block:
            continue
        for key, name in (("alignment", "alignment"), ("retrieval_aware", "retrieval-aware")):
            s = block[key]
            lines.append(_row(f"{name} ({mode_name})", s["per_class"], classes,
                              s["class_mean"], s["instance_mean"]))
    det = report.get("detection")
    if det:
        if not report.get("gt_boxes"):
            lines.append(_row("box AP50", det["per_class_box_ap50"], classes, det["box_ap50"], None))
        lines.append(_row("mask AP50", det["per_class_mask_ap50"], classes, det["mask_ap50"], None))
    counts = report["alignment"].get("num_gt", {})
    if counts:
        lines.append("| " + " | ".join(["# GT objects", *[str(counts.get(c, 0)) for c in classes],
                                         "", str(sum(counts.values()))]) + " |")
    pe = report.get("pose_errors")
    if pe and pe.get("num_with_prediction"):
        lines += ["", f"Pose errors of the closest same-class prediction ({pe['num_with_prediction']} of "
                      f"{pe['num_gt']} GT objects have one): translation median "
                      f"{_fmt(pe['median_translation_m'], 3)} m ({_fmt(pe['within_translation'])} % within "
                      f"threshold), rotation median {_fmt(pe['median_rotation_deg'])} deg "
                      f"({_fmt(pe['within_rotation'])} %), scale error median "
                      f"{_fmt(100 * pe['median_scale_error'])} % ({_fmt(pe['within_scale'])} %); "
                      f"all three {_fmt(pe['within_all'])} %"]
        per_class = report.get("pose_errors_per_class") or {}
        if per_class:
            lines += ["", *pose_error_table(per_class, pe, classes)]
    retrieval = report.get("retrieval")
    line = format_retrieval_line(retrieval) if retrieval else None
    if line:
        lines += ["", line]
    depth = report.get("depth")
    if depth and depth.get("num_pixels"):
        lines += ["", f"Depth: abs rel {_fmt(depth['abs_rel'], 3)}, RMSE {_fmt(depth['rmse_m'], 3)} m, "
                      f"MAE {_fmt(depth['mae_m'], 3)} m, delta<1.25 {_fmt(depth['delta_1_25'])} % "
                      f"over {depth['num_pixels']} pixels"]
    return "\n".join(lines) + "\n"


POSE_ERROR_ROWS = (  # (row label, key, scale, digits)
    ("objects with a same-class prediction", "num_with_prediction", 1, 0),
    ("translation median (m)", "median_translation_m", 1, 3),
    ("translation within threshold (%)", "within_translation", 1, 1),
    ("rotation median (deg)", "median_rotation_deg", 1, 1),
    ("rotation within threshold (%)", "within_rotation", 1, 1),
    ("rotation turned round, > 160 deg (%)", "flipped", 1, 1),
    ("scale error median (%)", "median_scale_error", 100, 1),
    ("scale within threshold (%)", "within_scale", 1, 1),
    ("all three within (%)", "within_all", 1, 1),
)


def pose_error_table(per_class: Mapping[str, Mapping[str, Any]], overall: Mapping[str, Any],
                     classes: Sequence[str]) -> list[str]:
    """Markdown lines: the closest same-class prediction's errors per class (columns) and over
    all objects, so a weak class shows which part of its poses fails."""
    lines = ["| pose errors of the closest same-class prediction | " + " | ".join(classes) + " | all |",
             "|---|" + ":-:|" * (len(classes) + 1)]
    for label, key, scale, digits in POSE_ERROR_ROWS:
        values = [(per_class.get(c) or {}).get(key) for c in classes] + [overall.get(key)]
        cells = [_fmt(None if v is None else float(v) * scale, digits) for v in values]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def summary_metrics(report: Mapping[str, Any]) -> dict[str, "float | None"]:
    """The numbers to watch during training, flat (one CSV row): alignment and
    retrieval-aware accuracy (class mean, %), box AP50 (%), same-CAD retrieval top-1/top-5
    from predicted and ground-truth NOCs (%), the medians of the closest same-class
    prediction's errors and the share of GT objects that have one (%)."""
    def get(*path: str) -> "float | None":
        node: Any = report
        for key in path:
            if not isinstance(node, Mapping) or node.get(key) is None:
                return None
            node = node[key]
        return float(node)

    pe = report.get("pose_errors") or {}
    with_pred = (100.0 * pe["num_with_prediction"] / pe["num_gt"]) if pe.get("num_gt") else None
    return {
        "alignment_class_mean": get("alignment", "class_mean"),
        "alignment_instance_mean": get("alignment", "instance_mean"),
        "retrieval_aware_class_mean": get("retrieval_aware", "class_mean"),
        "box_ap50": get("detection", "box_ap50"),
        "retrieval_top1_pred_noc": get("retrieval", "pred_noc", "top1"),
        "retrieval_top5_pred_noc": get("retrieval", "pred_noc", "top5"),
        "retrieval_top1_gt_noc": get("retrieval", "gt_noc", "top1"),
        "retrieval_top1_chance": get("retrieval", "pred_noc", "chance_top1"),
        "gt_with_prediction": with_pred,
        "median_rotation_deg": get("pose_errors", "median_rotation_deg"),
        "median_translation_m": get("pose_errors", "median_translation_m"),
        "median_scale_error": get("pose_errors", "median_scale_error"),
        "depth_abs_rel": get("depth", "abs_rel"),
    }


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _json_safe(x.item())
    return x


def write_json(report: Mapping[str, Any], path: "str | Path") -> Path:
    """Strict JSON (no NaN: undefined numbers are null)."""
    return atomic_write_text(path, json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")


def write_markdown(report: Mapping[str, Any], path: "str | Path", title: str = "ROCA evaluation") -> Path:
    return atomic_write_text(path, format_markdown(report, title))
