"""Learning-rate schedule of the paper: linear warm-up, then step decay.

The multiplier is a small callable object rather than a closure so that
``LambdaLR.state_dict()`` records its settings and a resumed run can check them.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch


@dataclass
class WarmupMultiStepFactor:
    """lr multiplier at iteration ``it``.

    Warm-up interpolates linearly from ``warmup_factor`` (at it = 0) to 1 (at
    it = warmup_iters); afterwards the multiplier is ``gamma ** (#steps <= it)``.
    """

    warmup_iters: int
    warmup_factor: float
    steps: tuple[int, ...]
    gamma: float

    def __post_init__(self) -> None:
        self.steps = tuple(int(s) for s in self.steps)
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"lr steps must be increasing, got {list(self.steps)}")

    def __call__(self, it: int) -> float:
        decay = self.gamma ** bisect.bisect_right(self.steps, it)
        if it >= self.warmup_iters:
            return decay
        alpha = it / max(self.warmup_iters, 1)
        return decay * (self.warmup_factor * (1.0 - alpha) + alpha)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, warmup_iters: int, warmup_factor: float,
                       steps: "tuple[int, ...] | list[int]", gamma: float = 0.1
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped once per iteration (``scheduler.step()`` after ``optimizer.step()``)."""
    factor = WarmupMultiStepFactor(int(warmup_iters), float(warmup_factor), tuple(steps), float(gamma))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
