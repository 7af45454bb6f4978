"""The prepared GPU job (``scripts/gpu_run.sh``) and what it needs from roca_core on the GPU
image: retrieval without faiss, and a CPU dry run of the whole job."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from roca_core.data.flat_l2_index import NumpyFlatL2, flat_l2_index


def test_numpy_flat_l2_matches_brute_force_and_faiss():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(57, 16)).astype(np.float32)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    index = NumpyFlatL2(16)
    index.add(data[:30])
    index.add(data[30:])
    d2, idx = index.search(queries, 4)
    ref = ((queries[:, None] - data[None]) ** 2).sum(-1)
    assert idx.shape == (9, 4) and index.ntotal == 57
    np.testing.assert_array_equal(idx, np.argsort(ref, axis=1)[:, :4])
    np.testing.assert_allclose(d2, np.sort(ref, axis=1)[:, :4], rtol=1e-5)
    faiss = pytest.importorskip("faiss")
    f = faiss.IndexFlatL2(16)
    f.add(data)
    fd2, fidx = f.search(queries, 4)
    np.testing.assert_array_equal(idx, fidx)
    np.testing.assert_allclose(d2, fd2, rtol=1e-4, atol=1e-5)


def test_cad_database_retrieval_without_faiss(monkeypatch):
    from roca_core.data.cad_database import CadDatabase

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert isinstance(flat_l2_index(8), NumpyFlatL2)
    rng = np.random.default_rng(1)
    n = 6
    db = CadDatabase([f"m{i}" for i in range(n)], ["chair"] * 3 + ["table"] * 3,
                     ["__SYM_NONE"] * n, [f"/m{i}.obj" for i in range(n)],
                     np.zeros((n, 32, 32, 32), bool))
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    db.set_embeddings(emb, "test")
    ids, dist = db.lookup("table", emb[4] + 1e-3, k=2)
    assert ids[0][0] == "m4" and dist.shape == (1, 2) and dist[0, 0] < 0.01 < dist[0, 1]
