"""The ROCA network: Mask R-CNN + depth + alignment (weighted Procrustes) + retrieval."""
from __future__ import annotations

from typing import Any

from roca_core.model.config import LossWeights, ModelConfig, load_preset

__all__ = ["RocaModel", "ModelConfig", "LossWeights", "load_preset"]


def __getattr__(name: str) -> Any:
    # RocaModel pulls in torchvision; load it on first use so configs stay cheap to import.
    if name == "RocaModel":
        from roca_core.model.roca import RocaModel
        return RocaModel
    raise AttributeError(f"module 'roca_core.model' has no attribute {name!r}")
