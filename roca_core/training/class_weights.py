"""Per-class loss weights from training-set class frequencies (ROCA, Sec. 4).

The paper weights detection, mask and alignment losses by ``1 / log(frequency)``,
normalised so the largest weight is 1 (rare classes get 1, frequent ones less); retrieval
losses stay unweighted. ``log`` of a count of 0 or 1 is not usable (division by zero or a
negative weight), so counts are clamped to at least 2 first: every class seen at most twice
-- including classes absent from the training split -- gets the largest weight, 1.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from roca_core.classes import CLASS_NAMES

MIN_COUNT = 2


def class_weights_from_counts(counts: "Sequence[int] | np.ndarray") -> np.ndarray:
    """(C,) float32 weights ``1 / log(max(count, 2))`` divided by their maximum."""
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got shape {arr.shape}")
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"class counts must be finite and >= 0, got {arr.tolist()}")
    weights = 1.0 / np.log(np.maximum(arr, MIN_COUNT))
    return (weights / weights.max()).astype(np.float32)


def count_classes(labels_per_image: Iterable[Sequence[int]], num_classes: int = len(CLASS_NAMES)
                  ) -> np.ndarray:
    """(C,) int64 instance counts from torchvision-style labels (class_index + 1)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for labels in labels_per_image:
        for label in np.asarray(labels, dtype=np.int64).reshape(-1):
            index = int(label) - 1
            if not 0 <= index < num_classes:
                raise ValueError(f"label {int(label)} outside 1..{num_classes} "
                                 "(labels are class_index + 1)")
            counts[index] += 1
    return counts


def dataset_class_counts(dataset, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Instance counts of a dataset's split.

    ``dataset.class_counts()`` when it has one (RocaDataset counts from its annotations,
    without reading images), else one pass over the samples' ``labels``.
    """
    fast = getattr(dataset, "class_counts", None)
    if callable(fast):
        counts = np.asarray(fast(), dtype=np.int64).reshape(-1)
        if counts.shape != (num_classes,):
            raise ValueError(f"dataset.class_counts() returned shape {counts.shape}, "
                             f"expected ({num_classes},)")
        return counts
    labels = (dataset[i][1]["labels"] for i in tqdm(range(len(dataset)), desc="class counts",
                                                      leave=False))
    return count_classes(labels, num_classes)


def apply_class_weights(model: torch.nn.Module, weights: "np.ndarray | torch.Tensor") -> bool:
    """Hand the weights to the model; False when it offers no ``class_weights`` hook.

    Prefers a ``set_class_weights(tensor)`` method, then an existing ``class_weights``
    buffer/attribute (copied in place so its device and registration are kept).
    """
    tensor = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    setter = getattr(model, "set_class_weights", None)
    if callable(setter):
        setter(tensor)
        return True
    current = getattr(model, "class_weights", None)
    if isinstance(current, torch.Tensor):
        if current.shape != tensor.shape:
            raise ValueError(f"model.class_weights has shape {tuple(current.shape)}, "
                             f"weights have {tuple(tensor.shape)}")
        with torch.no_grad():
            current.copy_(tensor.to(current.device, current.dtype))
        return True
    return False


def format_class_weights(weights: np.ndarray, counts: np.ndarray,
                         class_names: Sequence[str] = CLASS_NAMES) -> str:
    """One line per class for the log: name, count, weight."""
    return "\n".join(f"  {name:<10} n={int(n):>7d}  w={float(w):.3f}"
                     for name, n, w in zip(class_names, counts, weights))


__all__ = ["class_weights_from_counts", "count_classes", "dataset_class_counts",
           "apply_class_weights", "format_class_weights", "MIN_COUNT"]
