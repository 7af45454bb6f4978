"""roca_core: ROCA (CVPR 2022) single-image 9-DoF CAD alignment and retrieval, without ROS.

Heavy submodules load lazily, so ``import roca_core`` stays cheap:
``roca_core.Predictor`` and ``roca_core.Detection`` import the model on first use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Predictor": "roca_core.predictor",
    "Detection": "roca_core.predictor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'roca_core' has no attribute {name!r}")
