"""Load a folder of the user's own CAD meshes as a roca CAD library.

Supported mesh files: anything trimesh reads (OBJ, PLY, STL, GLB/GLTF, OFF); scenes with several
parts are merged into one mesh. Each mesh is normalised to the canonical frame used by roca:
bounding box centred at the origin and the largest extent scaled to 1 (inside [-0.5, 0.5]^3).
The mesh must already be y-up with its front facing +z (ShapeNet ``model_normalized``
convention); roca does not guess orientations.

Manifest: ``manifest.json``, ``manifest.yaml`` or ``manifest.yml`` in the folder::

    models:                       # (a bare list of entries works too)
      - file: chairs/ikea_a.obj   # path relative to the folder (required)
        class: chair              # one of the class list (required)
        id: ikea_a                # optional, default: the file name without extension
        symmetry: none            # optional: none / 2 / 4 / inf or __SYM_* tags (default none)
        default_size: [0.5, 0.9, 0.5]  # optional typical metric size (m), for scene sampling

Without a manifest, meshes in sub-folders named after a class (``chair/x.obj``) are taken
with that class, the file stem as id and no symmetry.

Bad entries (missing or unreadable file, empty or degenerate mesh, unknown class, duplicate
id) are skipped with a :class:`CadFolderWarning` naming the file and the reason; the
loader returns them in ``skipped`` and carries on.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh
import yaml

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.data.cad_library import SHAPENET_SYNSETS, CadModel, load_library
from roca_core.data.primitives import normalise_to_unit_box

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".gltf", ".off")
MANIFEST_NAMES = ("manifest.json", "manifest.yaml", "manifest.yml")


class CadFolderWarning(UserWarning):
    """A user mesh was skipped."""


@dataclass
class CadFolderResult:
    models: list[CadModel] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def _read_manifest(folder: Path) -> list[dict] | None:
    for name in MANIFEST_NAMES:
        path = folder / name
        if path.is_file():
            text = path.read_text()
            try:
                data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
            except (json.JSONDecodeError, yaml.YAMLError) as exc:
                raise ValueError(f"{path}: cannot parse manifest: {exc}") from exc
            entries = data.get("models") if isinstance(data, dict) else data
            if not isinstance(entries, list):
                raise ValueError(f"{path}: expected a 'models' list of entries")
            return entries
    return None


def _entries_from_class_folders(folder: Path, class_names: tuple[str, ...]) -> list[dict]:
    entries = []
    for cls in class_names:
        sub = folder / cls
        if sub.is_dir():
            for f in sorted(sub.rglob("*")):
                if f.suffix.lower() in MESH_SUFFIXES:
                    entries.append({"file": str(f.relative_to(folder)), "class": cls})
    return entries


def load_mesh_canonical(path: str | Path) -> trimesh.Trimesh:
    """Read a mesh file and normalise it; ValueError with the reason when unusable."""
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many types for broken files
        raise ValueError(f"cannot read mesh ({type(exc).__name__}: {exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ValueError("mesh is empty (no faces)")
    if not np.all(np.isfinite(mesh.vertices)):
        raise ValueError("mesh has NaN or infinite vertices")
    if float(mesh.area) <= 0:
        raise ValueError("mesh has zero surface area")
    try:
        canonical, _ = normalise_to_unit_box(mesh)
    except ValueError as exc:
        raise ValueError(str(exc)) from exc
    return canonical


def load_cad_folder(folder: str | Path, class_names: tuple[str, ...] = CLASS_NAMES) -> CadFolderResult:
    """Read a user's mesh folder (format in the module docstring); skips bad meshes with warnings.

    A folder written by :func:`roca_core.data.cad_library.write_library` (the embedded library)
    is recognised by its manifest format and loaded as is (already canonical).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CAD folder not found: {folder}")
    manifest_json = folder / "manifest.json"
    if manifest_json.is_file():
        try:
            if json.loads(manifest_json.read_text()).get("format") == "roca-cad-library":
                return CadFolderResult(models=load_library(folder))
        except (json.JSONDecodeError, AttributeError):
            pass
    entries = _read_manifest(folder)
    if entries is None:
        entries = _entries_from_class_folders(folder, class_names)
        if not entries:
            raise ValueError(f"{folder}: no manifest ({' / '.join(MANIFEST_NAMES)}) and no class "
                             f"sub-folders ({', '.join(class_names)}) with meshes")
    result = CadFolderResult()
    seen: set[str] = set()

    def skip(file: str, reason: str) -> None:
        warnings.warn(f"skipping CAD mesh {file}: {reason}", CadFolderWarning, stacklevel=3)
        result.skipped.append((file, reason))

    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "file" not in e:
            skip(f"<manifest entry {i}>", "entry has no 'file' field")
            continue
        file = str(e["file"])
        path = (folder / file).resolve()
        cls = e.get("class")
        if cls not in class_names:
            skip(file, f"unknown or missing class {cls!r} (known: {', '.join(class_names)})")
            continue
        if not path.is_file():
            skip(file, "file not found")
            continue
        cad_id = str(e.get("id") or Path(file).stem)
        if cad_id in seen:
            skip(file, f"duplicate id {cad_id!r}")
            continue
        try:
            sym = Symmetry.from_tag(e.get("symmetry", "none"))
            mesh = load_mesh_canonical(path)
        except ValueError as exc:
            skip(file, str(exc))
            continue
        size = e.get("default_size")
        scale = (float(np.max(size)),) * 3 if size is not None else (1.0, 1.0, 1.0)
        seen.add(cad_id)
        result.models.append(CadModel(id=cad_id, class_name=cls, symmetry=sym, mesh=mesh,
                                      variant=str(e.get("variant", "")), default_scale=scale,
                                      catid_cad=str(e.get("catid_cad", SHAPENET_SYNSETS.get(cls, ""))),
                                      mesh_path=str(path)))
    return result


def export_canonical_meshes(models: list[CadModel], out_dir: str | Path) -> None:
    """Write each model's canonical mesh as OBJ under ``out_dir`` and point ``mesh_path`` there.

    User meshes are normalised in memory; the database must reference meshes in the canonical
    frame so that ``T R diag(s)`` places them correctly in RViz and other viewers.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in m.id)
        path = out_dir / f"{safe}.obj"
        m.mesh.export(path, file_type="obj", include_normals=False)
        m.mesh_path = str(path.resolve())
