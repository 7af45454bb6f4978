"""Fit a preset's training schedule to the minutes a GPU machine is lent for.

The preset's recipe (optimiser, learning rate, batch, warm-up and decay points as fractions
of the run) is kept; only its length changes: ``max_iter`` becomes what the measured step
time allows, and ``warmup_iters`` and ``lr_steps`` scale with it, so the learning rate still
decays before the end instead of the run being cut at full rate.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from roca_core.config_io import ConfigError


def model_with_overrides(model_cfg: Any, overrides: dict[str, Any]) -> Any:
    """``ModelConfig`` with some fields replaced (the dry run's tiny input size)."""
    if not overrides:
        return model_cfg
    known = {f.name for f in dataclasses.fields(model_cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"model_overrides: unknown ModelConfig field(s) {unknown}")
    return dataclasses.replace(model_cfg, **overrides)


def base_experiment(job: Any, preset: "str | Path") -> Any:
    """The preset as the job trains it: job overrides applied, schedule not yet fitted."""
    from roca_core.training.config import load_experiment_config

    exp = load_experiment_config(preset)
    exp.model = model_with_overrides(exp.model, job.model_overrides)
    # The job trains on its own render: a preset's other local data sets are not on the GPU machine.
    exp.data.extra_train_roots = []
    t = job.train
    exp.train = dataclasses.replace(
        exp.train, amp=t.amp, device=job.device, num_workers=t.num_workers, eval_period=0,
        ims_per_batch=t.ims_per_batch or exp.train.ims_per_batch, base_lr=t.base_lr or exp.train.base_lr)
    exp.train.validate()
    return exp


def fit_schedule(exp: Any, seconds: float, step_s: float, tj: Any) -> tuple[Any, dict[str, Any]]:
    """-> (experiment with the schedule scaled to ``seconds``, the plan as a dict).

    ``step_s``: benchmarked seconds per step, multiplied by ``tj.step_time_margin``.
    """
    if not (step_s > 0 and math.isfinite(step_s)):
        raise ValueError(f"step time must be a positive number, got {step_s}")
    t = exp.train
    planned_step = step_s * tj.step_time_margin
    iters = max(tj.min_iterations, int(seconds / planned_step))
    if tj.max_iterations:
        iters = min(iters, tj.max_iterations)
    scale = iters / t.max_iter
    steps = tuple(sorted({max(1, min(iters - 1, round(s * scale))) for s in t.lr_steps if s < t.max_iter}))
    warmup = min(round(t.warmup_iters * scale), max(0, iters - 1))
    period = max(1, iters // max(1, tj.checkpoints))
    exp.train = dataclasses.replace(t, max_iter=iters, lr_steps=steps, warmup_iters=warmup,
                                    checkpoint_period=period)
    exp.train.validate()
    plan = {"seconds": round(seconds, 1), "benchmarked_step_s": round(step_s, 4),
            "planned_step_s": round(planned_step, 4), "iterations": iters,
            "preset_iterations": t.max_iter, "schedule_scale": round(scale, 4),
            "warmup_iters": warmup, "lr_steps": list(steps), "checkpoint_period": period,
            "images_seen": iters * t.ims_per_batch}
    return exp, plan


def train_step_rows(rows: list[dict[str, Any]], amp: "str | None" = None) -> list[dict[str, Any]]:
    """The benchmark's measured training-step rows of the trained preset (at ``amp`` if given)."""
    return [r for r in rows if r.get("section") == "train_step" and r.get("preset") == "train"
            and r.get("ms") and (amp is None or r.get("amp") == amp)]


def pick_batch(rows: list[dict[str, Any]], amp: str) -> "tuple[int, float] | None":
    """(images per step, seconds per step) of the trained preset's benchmarked training step
    with the most images per second at ``amp`` (the smaller batch on a tie); None when no
    such row was measured."""
    steps = train_step_rows(rows, amp)
    if not steps:
        return None
    best = max(steps, key=lambda r: (r["images_per_s"], -r["batch"]))
    return int(best["batch"]), best["ms"] / 1000.0


def with_batch(exp: Any, batch: int) -> Any:
    """The experiment at ``batch`` images per step, its learning rate scaled by the square root
    of the batch ratio (linear scaling is much for a warm start; the recipe's 4 -> 16 step
    doubled it)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    t = exp.train
    lr = t.base_lr * math.sqrt(batch / t.ims_per_batch)
    exp.train = dataclasses.replace(t, ims_per_batch=batch, base_lr=lr)
    exp.train.validate()
    return exp
