"""Per-sample random streams: augmentation as a pure function of (seed, sample position).

The dataset draws its random choices (colour jitter, the negative CAD of the triplet loss)
from torch's global RNG. Left alone, those draws depend on which DataLoader worker loads a
sample and on when the loader was (re)created, so a resumed run or a different worker count
would see other augmentations. Wrapping the dataset so that every sample is loaded under
its own seed, derived from the run seed and the sample's position in the training stream,
makes the data stream identical for any ``num_workers`` and across ``--resume``; the
caller's RNG state is restored afterwards, so the training stream is not disturbed either.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

_MASK63 = (1 << 63) - 1


def sample_seed(run_seed: int, position: int) -> int:
    """A well-mixed 63-bit seed for sample ``position`` of the stream (splitmix64 step)."""
    z = (int(run_seed) * 0x9E3779B97F4A7C15 + int(position) + 0x632BE59BD9B4E019) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK63


class SeededSamples(Dataset):
    """``dataset[(position, index)]`` = ``base[index]`` loaded under ``sample_seed(seed, position)``."""

    def __init__(self, base: Dataset, seed: int):
        self.base = base
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: "tuple[int, int]") -> Any:
        position, index = key
        seed = sample_seed(self.seed, position)
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(seed)
            np.random.seed(seed % (2 ** 32))
            torch.manual_seed(seed)
            return self.base[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)

    def __getattr__(self, name: str) -> Any:
        # Dataset attributes (class_names, images, ...) stay reachable through the wrapper.
        if name in ("base", "seed"):
            raise AttributeError(name)
        return getattr(self.base, name)
