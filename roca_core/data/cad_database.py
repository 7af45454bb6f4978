"""The CAD database: what retrieval searches and what the node shows.

One database holds, per model: id, class, symmetry, canonical mesh path, 32^3 surface
occupancy (grid convention in :mod:`roca_core.data.voxelize_mesh`) and, once a checkpoint's
CAD encoder has embedded the grids, its embedding. Embeddings are searched with one exact L2
index per class (faiss' ``IndexFlatL2``, or numpy where faiss is not installed; built on load),
so lookup stays within the predicted class.
Adding meshes only needs a rebuild (voxelise + embed with the same encoder), no retraining.

On-disk format (a directory, ``FORMAT_VERSION`` "1")::

    DB/header.json      {"format": "roca-cad-db", "version": "1", "class_names": [...],
                         "ids": [...], "model_classes": [...], "symmetries": ["__SYM_NONE", ...],
                         "mesh_paths": [...absolute...], "catid_cads": [...],
                         "default_scales": [[sx, sy, sz], ...], "num_models": M,
                         "grid_resolution": 32, "embedding_dim": D | null,
                         "embedding_source": "<checkpoint fingerprint>" | null}
    DB/voxels.npy       uint8 (M, 4096): np.packbits of the (M, 32, 32, 32) bool grids (C order)
    DB/embeddings.npy   float32 (M, D), only when embedded

Loading refuses other formats and versions with a clear :class:`CadDatabaseError`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.data.voxelize_mesh import GRID_RES, voxelize_surface

DB_FORMAT = "roca-cad-db"


class CadDatabaseError(ValueError):
    """A CAD database on disk is missing, truncated, of another version or inconsistent."""


class CadDatabase:
    """Models of a CAD library with occupancy grids and optional retrieval embeddings."""

    FORMAT_VERSION: str = "1"

    def __init__(self, ids: list[str], model_classes: list[str], symmetries: list[Symmetry],
                 mesh_paths: list[str], voxels: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES,
                 catid_cads: list[str] | None = None, default_scales: np.ndarray | None = None,
                 embeddings: np.ndarray | None = None, embedding_source: str | None = None):
        m = len(ids)
        voxels = np.asarray(voxels).astype(bool, copy=False)
        if voxels.shape != (m, GRID_RES, GRID_RES, GRID_RES):
            raise CadDatabaseError(f"voxels must have shape ({m}, 32, 32, 32), got {voxels.shape}")
        for name, seq in (("model_classes", model_classes), ("symmetries", symmetries), ("mesh_paths", mesh_paths)):
            if len(seq) != m:
                raise CadDatabaseError(f"{name} has {len(seq)} entries for {m} ids")
        if len(set(ids)) != m:
            dup = sorted({i for i in ids if list(ids).count(i) > 1})
            raise CadDatabaseError(f"duplicate CAD ids: {dup}")
        self.class_names = tuple(class_names)
        unknown = sorted(set(model_classes) - set(self.class_names))
        if unknown:
            raise CadDatabaseError(f"models of unknown classes {unknown}; class list: {list(self.class_names)}")
        self.ids = list(ids)
        self.model_classes = list(model_classes)
        self.symmetries = [Symmetry.from_tag(s) for s in symmetries]
        self.mesh_paths = [str(p) for p in mesh_paths]
        self.voxels = voxels
        self.catid_cads = list(catid_cads) if catid_cads is not None else [""] * m
        self.default_scales = (np.ones((m, 3), np.float32) if default_scales is None
                               else np.asarray(default_scales, np.float32).reshape(m, 3))
        self._id_to_index = {cid: i for i, cid in enumerate(self.ids)}
        self.embeddings: np.ndarray | None = None
        self.embedding_source: str | None = None
        self._indices: dict[str, tuple[object, np.ndarray]] = {}
        if embeddings is not None:
            self.set_embeddings(embeddings, embedding_source or "unknown")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        emb = "none" if self.embeddings is None else f"{self.embeddings.shape[1]}-d from {self.embedding_source}"
        return f"CadDatabase({len(self)} models, classes={self.class_counts()}, embeddings={emb})"

    def index_of(self, cad_id: str) -> int:
        try:
            return self._id_to_index[cad_id]
        except KeyError:
            raise KeyError(f"CAD id {cad_id!r} is not in the database ({len(self)} models)") from None

    def class_counts(self) -> dict[str, int]:
        return {c: self.model_classes.count(c) for c in self.class_names if c in self.model_classes}

    def indices_of_class(self, class_name: str) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.model_classes) if c == class_name], dtype=np.int64)

    # ------------------------------------------------------------------ retrieval
    def set_embeddings(self, embeddings: np.ndarray, source: str) -> None:
        """Attach (M, D) embeddings made by the checkpoint ``source`` and build per-class indices."""
        from roca_core.data.flat_l2_index import flat_l2_index  # faiss, or numpy without it

        emb = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if emb.ndim != 2 or emb.shape[0] != len(self):
            raise ValueError(f"embeddings must have shape ({len(self)}, D), got {emb.shape}")
        if not np.all(np.isfinite(emb)):
            raise ValueError("embeddings contain NaN or infinite values")
        self.embeddings = emb
        self.embedding_source = str(source)
        self._indices = {}
        for cls in set(self.model_classes):
            rows = self.indices_of_class(cls)
            index = flat_l2_index(emb.shape[1])
            index.add(emb[rows])
            self._indices[cls] = (index, rows)

    def lookup(self, class_name: str, queries: np.ndarray, k: int = 1) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` nearest CAD ids of ``class_name`` for each query and their L2 distances.

        queries: (Q, D). Returns ids (Q lists) and distances (Q, k'), where k' = min(k, number
        of models of the class): a class with no model gives empty lists and shape (Q, 0).
        """
        if self.embeddings is None:
            raise RuntimeError("CAD database has no embeddings; build it with a checkpoint "
                               "(roca-cad-db build --checkpoint C) or call set_embeddings()")
        if class_name not in self.class_names:
            raise ValueError(f"unknown class {class_name!r}; known: {list(self.class_names)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"queries must have shape (Q, {self.embeddings.shape[1]}), got {q.shape}")
        if class_name not in self._indices or len(q) == 0:
            return [[] for _ in range(len(q))], np.zeros((len(q), 0), np.float32)
        index, rows = self._indices[class_name]
        k = min(k, len(rows))
        d2, local = index.search(q, k)
        ids = [[self.ids[rows[j]] for j in row] for row in local]
        return ids, np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)

    # ------------------------------------------------------------------ subsets
    def subset(self, cad_ids: Iterable[str]) -> "CadDatabase":
        """A database with only ``cad_ids`` (in that order), e.g. the models a dataset used."""
        rows = [self.index_of(c) for c in cad_ids]
        return CadDatabase(
            [self.ids[i] for i in rows], [self.model_classes[i] for i in rows],
            [self.symmetries[i] for i in rows], [self.mesh_paths[i] for i in rows], self.voxels[rows],
            self.class_names, [self.catid_cads[i] for i in rows], self.default_scales[rows],
            None if self.embeddings is None else self.embeddings[rows], self.embedding_source)

    # ------------------------------------------------------------------ disk
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        header = {
            "format": DB_FORMAT, "version": self.FORMAT_VERSION, "class_names": list(self.class_names),
            "num_models": len(self), "grid_resolution": GRID_RES, "ids": self.ids,
            "model_classes": self.model_classes, "symmetries": [s.tag for s in self.symmetries],
            "mesh_paths": self.mesh_paths, "catid_cads": self.catid_cads,
            "default_scales": [[round(float(x), 6) for x in r] for r in self.default_scales],
            "embedding_dim": None if self.embeddings is None else int(self.embeddings.shape[1]),
            "embedding_source": self.embedding_source,
        }
        packed = np.packbits(self.voxels.reshape(len(self), -1), axis=1)
        np.save(path / "voxels.npy", packed)
        emb_path = path / "embeddings.npy"
        if self.embeddings is not None:
            np.save(emb_path, self.embeddings)
        elif emb_path.exists():
            emb_path.unlink()
        (path / "header.json").write_text(json.dumps(header, indent=1))  # last: marks completion
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CadDatabase":
        path = Path(path)
        header_path = path / "header.json"
        if not header_path.is_file():
            raise CadDatabaseError(f"not a CAD database (no header.json): {path}")
        try:
            header = json.loads(header_path.read_text())
        except json.JSONDecodeError as exc:
            raise CadDatabaseError(f"{header_path}: broken JSON ({exc})") from exc
        if header.get("format") != DB_FORMAT:
            raise CadDatabaseError(f"{path}: not a roca CAD database (format {header.get('format')!r})")
        if str(header.get("version")) != cls.FORMAT_VERSION:
            raise CadDatabaseError(f"{path}: CAD database version {header.get('version')!r} is not "
                                   f"supported (this roca reads version {cls.FORMAT_VERSION}); rebuild it "
                                   "with roca-cad-db build")
        m = int(header["num_models"])
        try:
            packed = np.load(path / "voxels.npy")
            voxels = np.unpackbits(packed, axis=1, count=GRID_RES ** 3).astype(bool)
            voxels = voxels.reshape(m, GRID_RES, GRID_RES, GRID_RES)
        except (OSError, ValueError) as exc:
            raise CadDatabaseError(f"{path}/voxels.npy is missing or truncated: {exc}") from exc
        embeddings = None
        if header.get("embedding_dim") is not None:
            try:
                embeddings = np.load(path / "embeddings.npy")
            except (OSError, ValueError) as exc:
                raise CadDatabaseError(f"{path}/embeddings.npy is missing or truncated: {exc}") from exc
            if embeddings.shape != (m, int(header["embedding_dim"])):
                raise CadDatabaseError(f"{path}: embeddings shape {embeddings.shape} does not match "
                                       f"({m}, {header['embedding_dim']})")
        return cls(header["ids"], header["model_classes"], header["symmetries"], header["mesh_paths"], voxels,
                   tuple(header.get("class_names", CLASS_NAMES)), header.get("catid_cads"),
                   header.get("default_scales"), embeddings, header.get("embedding_source"))


def build_database_from_models(models: list, class_names: tuple[str, ...] = CLASS_NAMES,
                               progress: bool = True) -> CadDatabase:
    """Voxelise :class:`roca_core.data.cad_library.CadModel` objects (canonical meshes)."""
    grids = np.zeros((len(models), GRID_RES, GRID_RES, GRID_RES), dtype=bool)
    for i, m in enumerate(tqdm(models, desc="voxelising CADs", disable=not progress)):
        grids[i] = voxelize_surface(m.mesh)
    return CadDatabase(
        [m.id for m in models], [m.class_name for m in models], [m.symmetry for m in models],
        [m.mesh_path for m in models], grids, class_names, [m.catid_cad for m in models],
        np.array([m.default_scale for m in models], np.float32).reshape(len(models), 3))


def checkpoint_fingerprint(path: str | Path) -> str:
    """Content hash (16 hex chars) naming the checkpoint whose encoder made embeddings."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def embed_database(db: CadDatabase, checkpoint: str | Path, batch_size: int = 32, device: str = "cpu") -> str:
    """Embed ``db``'s grids with a trained checkpoint's CAD encoder; returns the fingerprint."""
    import torch

    from roca_core.checkpoint import load_checkpoint  # lazy: the model is heavy

    model, _cfg, _extra = load_checkpoint(checkpoint, device=device)
    model.eval()
    fingerprint = checkpoint_fingerprint(checkpoint)
    out = []
    with torch.no_grad():
        for s in tqdm(range(0, len(db), batch_size), desc="embedding CADs"):
            vox = torch.from_numpy(db.voxels[s:s + batch_size].astype(np.float32)).to(device)
            out.append(model.embed_cad(vox).float().cpu().numpy())
    emb = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    db.set_embeddings(emb, fingerprint)
    return fingerprint
