"""Start a training run from another run's weights (a curriculum's next stage)."""
from __future__ import annotations

from pathlib import Path

import torch


def load_matching_weights(model: torch.nn.Module, path: "str | Path") -> tuple[list[str], list[str]]:
    """Copy every tensor of the inference checkpoint ``path`` whose name and shape match.

    -> (names of the model left at their initialisation, names of the file not used).
    Shapes that differ (a resized head) count as both.
    """
    from roca_core.checkpoint import read_checkpoint

    state, _cfg, _extra = read_checkpoint(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    unused = sorted(set(state) - set(usable))
    return missing, unused
