"""Evaluation of ROCA: Scan2CAD alignment accuracy, detection/mask AP50, depth error,
same-CAD retrieval accuracy.

The metrics are plain numpy on plain dataclasses; :mod:`roca_core.evaluation.evaluator`
runs a Predictor or an in-memory model over a dataset and builds the report.
"""
from __future__ import annotations

from typing import Any

from roca_core.evaluation.alignment_metric import (AccuracySummary, AlignmentResult,
                                                   AlignmentThresholds, GtObject, PredObject,
                                                   evaluate_alignment, rotation_error_deg)
from roca_core.evaluation.depth_metric import DepthErrorAccumulator, DepthResult
from roca_core.evaluation.detection_metric import (DetectionAPAccumulator, DetectionResult,
                                                   average_precision)
from roca_core.evaluation.report import (build_report, format_markdown, summary_metrics, write_json,
                                         write_markdown)
from roca_core.evaluation.retrieval_metric import (RetrievalAccumulator, RetrievedObject,
                                                   SameClassRanker)

_LAZY = {"evaluate_predictor", "evaluate_model", "evaluate_frames", "FrameOutput"}

__all__ = [
    "AccuracySummary", "AlignmentResult", "AlignmentThresholds", "GtObject", "PredObject",
    "evaluate_alignment", "rotation_error_deg", "DepthErrorAccumulator", "DepthResult",
    "DetectionAPAccumulator", "DetectionResult", "average_precision", "build_report",
    "format_markdown", "write_json", "write_markdown", "summary_metrics", "RetrievalAccumulator",
    "RetrievedObject", "SameClassRanker", *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from roca_core.evaluation import evaluator
        return getattr(evaluator, name)
    raise AttributeError(f"module 'roca_core.evaluation' has no attribute {name!r}")
