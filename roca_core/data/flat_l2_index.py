"""Exact L2 nearest-neighbour index: faiss' ``IndexFlatL2`` when installed, else numpy.

Both are brute force over a class's few hundred CAD embeddings, so they return the same
neighbours; the numpy one lets retrieval run where faiss is not installed (the GPU image).
"""
from __future__ import annotations

from typing import Any

import numpy as np


class NumpyFlatL2:
    """The part of ``faiss.IndexFlatL2`` the CAD database uses: ``add`` and ``search``."""

    def __init__(self, dim: int) -> None:
        self.d = int(dim)
        self._data = np.zeros((0, self.d), np.float32)

    @property
    def ntotal(self) -> int:
        return len(self._data)

    def add(self, x: np.ndarray) -> None:
        self._data = np.concatenate([self._data, np.asarray(x, np.float32).reshape(-1, self.d)])

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (squared distances (Q, k), row indices (Q, k)), nearest first, like faiss."""
        q = np.asarray(q, np.float32).reshape(-1, self.d)
        d2 = ((q[:, None, :] - self._data[None, :, :]) ** 2).sum(-1)
        idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d2, idx, axis=1).astype(np.float32), idx.astype(np.int64)


def flat_l2_index(dim: int) -> Any:
    """A new empty exact L2 index of dimension ``dim`` (faiss when importable)."""
    try:
        import faiss  # lazy: heavy, and optional
    except ImportError:
        return NumpyFlatL2(dim)
    return faiss.IndexFlatL2(dim)
