"""Gradient clipping per head: each top-level module of the model is clipped on its own.

With one global clip, whichever head has the largest gradient sets the step size of all
others; at initialisation that is the retrieval encoders (about 130 of a total norm of 150 on
the small preset), so the detector and the alignment head trained at 6-10 % of their step.
"""
from __future__ import annotations

import math

import torch


def head_parameters(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable parameters grouped by top-level child module (DDP's ``module`` unwrapped)."""
    model = getattr(model, "module", model)
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(name.split(".", 1)[0], []).append(param)
    return groups


def grad_norms(groups: dict[str, list[torch.nn.Parameter]]) -> dict[str, float]:
    """L2 norm of the current gradient of each group (0 for a group without gradients)."""
    out = {}
    for name, params in groups.items():
        grads = [p.grad.detach() for p in params if p.grad is not None]
        out[name] = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0
    return out


def clip_gradients(groups: dict[str, list[torch.nn.Parameter]], max_norm: float,
                   per_head: bool) -> tuple[float, dict[str, float]]:
    """Clip in place; -> (total norm before clipping, per-group norms before clipping)."""
    norms = grad_norms(groups)
    total = math.sqrt(sum(n * n for n in norms.values()))
    if max_norm <= 0:
        return total, norms
    if per_head:
        for name, params in groups.items():
            _scale(params, max_norm / (norms[name] + 1e-6))
    else:
        _scale([p for ps in groups.values() for p in ps], max_norm / (total + 1e-6))
    return total, norms


def _scale(params: list[torch.nn.Parameter], factor: float) -> None:
    if factor < 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.detach().mul_(factor)
