"""Several rendered data sets as one training set (``data.extra_train_roots``).

Why: the image-only heads stopped improving on one set of 8000 images and learned further on
sets rendered with other seeds; the detector trains on several at once when they are joined.
The joined set answers what the trainer asks of one ``RocaDataset``: its length, its samples in
order (the first set's, then the next), its class names and its per-class object counts (for
the class weights), without reading an image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch.utils.data import ConcatDataset


class ConcatRocaDataset(ConcatDataset):
    """``RocaDataset``s of the same classes, one after the other."""

    def __init__(self, datasets: Sequence) -> None:
        datasets = list(datasets)
        if not datasets:
            raise ValueError("ConcatRocaDataset needs at least one data set")
        names = [tuple(getattr(d, "class_names", ())) for d in datasets]
        if any(n != names[0] for n in names[1:]):
            raise ValueError(f"the data sets have different classes: {sorted(set(names))}")
        super().__init__(datasets)
        self.class_names = names[0]

    def class_counts(self) -> np.ndarray:
        """(len(class_names),) int64 annotated objects per class over all the sets."""
        return np.sum([np.asarray(d.class_counts(), dtype=np.int64) for d in self.datasets], axis=0)
