"""The embedded procedural CAD library: the default CAD database when the user has none.

Models come from :mod:`roca_core.data.shape_builders`, are normalised to the canonical frame
(y up, front +z, bounding box centred, largest extent 1, so inside [-0.5, 0.5]^3) and written
as OBJ files plus ``manifest.json``::

    {"format": "roca-cad-library", "version": 1, "seed": 0,
     "models": [{"id": "chair_003", "class": "chair", "symmetry": "__SYM_NONE",
                 "file": "chair/chair_003.obj", "variant": "stool",
                 "catid_cad": "03001627", "default_scale": [0.65, 0.65, 0.65],
                 "default_size": [0.4, 0.65, 0.4]}, ...]}

``default_scale`` is the pose scale ``s`` that gives the model its typical metric size
(``default_size`` = canonical extents * s); the scene sampler jitters it. The same manifest
format (fields ``id``, ``class``, ``symmetry``, ``file``; the rest optional) is read for user
folders by :mod:`roca_core.data.cad_folder`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.data.primitives import concat, normalise_to_unit_box
from roca_core.data.shape_builders import BUILDERS
from roca_core.paths import data_home

LIBRARY_FORMAT = "roca-cad-library"
# Bump when the builders change (shapes or symmetry tags) so cached libraries are regenerated.
LIBRARY_VERSION = 2

# ShapeNet synset ids of the 9 classes (Scan2CAD's ``catid_cad``); used in annotations.
SHAPENET_SYNSETS: dict[str, str] = {
    "bathtub": "02808440", "bed": "02818832", "bin": "02747177", "bookcase": "02871439",
    "cabinet": "02933112", "chair": "03001627", "display": "03211117", "sofa": "04256520",
    "table": "04379243",
}


@dataclass
class CadModel:
    """One canonical CAD model and its metadata."""

    id: str
    class_name: str
    symmetry: Symmetry
    mesh: trimesh.Trimesh  # canonical frame
    variant: str = ""
    default_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    catid_cad: str = ""
    mesh_path: str = ""

    @property
    def default_size(self) -> np.ndarray:
        return self.mesh.extents * np.asarray(self.default_scale)


def build_library(seed: int = 0, variants_per_class: int = 6) -> list[CadModel]:
    """All procedural models, deterministic for ``seed``.

    Each class gets all of its styles (6 or 7) and at least ``variants_per_class`` models:
    extra models repeat the styles with other proportions (ids stay stable: ``<class>_<NNN>``).
    """
    if variants_per_class < 1:
        raise ValueError(f"variants_per_class must be >= 1, got {variants_per_class}")
    models = []
    for ci, cls in enumerate(CLASS_NAMES):
        styles = BUILDERS[cls]
        n = max(variants_per_class, len(styles))
        for vi in range(n):
            name, builder = styles[vi % len(styles)]
            rng = np.random.default_rng([seed, ci, vi])
            parts, sym = builder(rng)
            metric = concat(parts)
            canonical, extent = normalise_to_unit_box(metric)
            models.append(CadModel(
                id=f"{cls}_{vi:03d}", class_name=cls, symmetry=sym, mesh=canonical, variant=name,
                default_scale=(extent, extent, extent), catid_cad=SHAPENET_SYNSETS[cls]))
    return models


def write_library(models: list[CadModel], out_dir: str | Path, seed: int | None = None) -> Path:
    """Write OBJ files and ``manifest.json`` into ``out_dir``; fills ``mesh_path``."""
    out_dir = Path(out_dir)
    entries = []
    for m in models:
        rel = f"{m.class_name}/{m.id}.obj"
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        m.mesh.export(path, file_type="obj", include_normals=False)
        m.mesh_path = str(path.resolve())
        entries.append({
            "id": m.id, "class": m.class_name, "symmetry": m.symmetry.tag, "file": rel,
            "variant": m.variant, "catid_cad": m.catid_cad,
            "default_scale": [round(float(x), 6) for x in m.default_scale],
            "default_size": [round(float(x), 6) for x in m.default_size],
        })
    manifest = {"format": LIBRARY_FORMAT, "version": LIBRARY_VERSION, "seed": seed, "models": entries}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out_dir


def read_manifest(library_dir: str | Path) -> list[dict]:
    """The ``models`` list of a library's manifest.json (clear error when missing)."""
    path = Path(library_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in CAD library folder {library_dir}")
    data = json.loads(path.read_text())
    models = data.get("models") if isinstance(data, dict) else data
    if not isinstance(models, list):
        raise ValueError(f"{path}: expected a 'models' list")
    return models


def load_library(library_dir: str | Path) -> list[CadModel]:
    """Load a written library (mesh files + manifest) back into :class:`CadModel` objects."""
    library_dir = Path(library_dir)
    out = []
    for e in read_manifest(library_dir):
        path = (library_dir / e["file"]).resolve()
        mesh = trimesh.load(path, force="mesh", process=False)
        out.append(CadModel(
            id=e["id"], class_name=e["class"], symmetry=Symmetry.from_tag(e.get("symmetry", "none")),
            mesh=mesh, variant=e.get("variant", ""),
            default_scale=tuple(e.get("default_scale", (1.0, 1.0, 1.0))),
            catid_cad=e.get("catid_cad", SHAPENET_SYNSETS.get(e["class"], "")), mesh_path=str(path)))
    return out


def _cache_dir(seed: int, variants_per_class: int) -> Path:
    return data_home() / "cad_library" / f"v{LIBRARY_VERSION}_seed{seed}_n{variants_per_class}"


def embedded_cad_library_dir(seed: int = 0, variants_per_class: int = 6) -> Path:
    """Folder of the embedded library (meshes + manifest.json), generated once and cached.

    Generation goes to a temporary folder renamed into place, so concurrent processes
    (dataset workers) never see a half-written library.
    """
    target = _cache_dir(seed, variants_per_class)
    if (target / "manifest.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # left half-written by an older, interrupted version: start over
        shutil.rmtree(target, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_lib_", dir=target.parent))
    try:
        write_library(build_library(seed, variants_per_class), tmp, seed=seed)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            if not (target / "manifest.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_cad_database(seed: int = 0, variants_per_class: int = 6):
    """CadDatabase of the embedded library (voxel grids, no embeddings); cached on disk."""
    from roca_core.data.cad_database import CadDatabase, build_database_from_models

    lib = embedded_cad_library_dir(seed, variants_per_class)
    db_path = lib / "cad_db"
    if (db_path / "header.json").is_file():
        try:
            return CadDatabase.load(db_path)
        except Exception:  # stale or broken cache: rebuild below
            shutil.rmtree(db_path, ignore_errors=True)
    db = build_database_from_models(load_library(lib), progress=False)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_db_", dir=lib))
    try:
        db.save(tmp)
        try:
            os.rename(tmp, db_path)
        except OSError:
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return db
