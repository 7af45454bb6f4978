"""Inference checkpoints: one ``.safetensors`` file with the weights, the full ModelConfig
(JSON in the metadata) and a format version. Loading never unpickles anything."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from roca_core.config_io import ConfigError
from roca_core.model.config import ModelConfig

FORMAT = "roca-checkpoint"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not a roca checkpoint, or does not fit."""


def save_checkpoint(path: "str | Path", model: torch.nn.Module, cfg: ModelConfig,
                    extra: "dict[str, Any] | None" = None) -> Path:
    """Write ``model``'s state dict (float tensors as they are) with ``cfg`` and JSON ``extra``."""
    from safetensors.torch import save_file

    path = Path(path)
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as exc:
        raise ValueError(f"checkpoint extra must be JSON-serialisable: {exc}") from exc
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "model_config": json.dumps(cfg.to_dict()), "extra": extra_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def read_checkpoint(path: "str | Path") -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, Any]]:
    """-> (state dict, config, extra) without building a model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint "
                              f"(truncated or corrupted?): {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a roca checkpoint (no '{FORMAT}' metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')!r}, "
                              f"this roca reads version {FORMAT_VERSION}")
    try:
        stored = json.loads(meta["model_config"])
        if "arch_version" not in stored:  # written before arch_version existed: tell by weights
            stored["arch_version"] = 2 if "alignment_head.pool_norm.weight" in state else 1
        cfg = ModelConfig.from_dict(stored)
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError, ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: the stored model config is unusable: {exc}") from exc
    return state, cfg, extra


def load_checkpoint(path: "str | Path", device: "str | torch.device" = "cpu"
                    ) -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Build a RocaModel from the stored config, load the weights strictly, eval mode."""
    from roca_core.model.roca import RocaModel

    state, cfg, extra = read_checkpoint(path)
    model = RocaModel(cfg)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with a different shape (e.g. {k}: file {tuple(state[k].shape)} "
                         f"vs model {tuple(own[k].shape)})")
        raise CheckpointError(f"{path}: weights do not fit the stored config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model, cfg, extra
