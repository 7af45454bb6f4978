"""Procedural CAD library and user CAD folders."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import trimesh

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.data.cad_folder import CadFolderWarning, load_cad_folder
from roca_core.data.cad_library import build_library, load_library, write_library
from roca_core.data.voxelize_mesh import points_to_grid, sample_surface_points, voxelize_surface
from roca_core.geometry.rotations import rotation_about_y_np


@pytest.fixture(scope="module")
def library():
    return build_library(seed=0)


def test_every_class_has_six_variants_in_the_canonical_box(library):
    by_class = {c: [m for m in library if m.class_name == c] for c in CLASS_NAMES}
    for cls, models in by_class.items():
        assert len(models) >= 6, cls
        assert len({m.variant for m in models}) >= 6, f"{cls}: variants must be different styles"
    ids = [m.id for m in library]
    assert len(set(ids)) == len(ids)
    assert "chair_003" in ids
    for m in library:
        lo, hi = m.mesh.bounds
        assert np.all(lo >= -0.5 - 1e-6) and np.all(hi <= 0.5 + 1e-6), m.id
        assert abs(m.mesh.extents.max() - 1.0) < 1e-6, m.id
        assert np.allclose((lo + hi) / 2, 0.0, atol=1e-6), m.id
        assert 0.2 < m.default_scale[0] < 3.0, f"{m.id}: implausible metric size {m.default_scale}"


def test_variants_of_a_class_are_clearly_different(library):
    for cls in CLASS_NAMES:
        grids = [voxelize_surface(m.mesh) for m in library if m.class_name == cls]
        for i in range(len(grids)):
            for j in range(i + 1, len(grids)):
                iou = (grids[i] & grids[j]).sum() / (grids[i] | grids[j]).sum()
                assert iou < 0.85, f"{cls} variants {i} and {j} are nearly the same (IoU {iou:.2f})"


def test_library_is_deterministic_for_a_seed(library):
    again = build_library(seed=0)
    other = build_library(seed=1)
    assert [m.id for m in again] == [m.id for m in library]
    assert all(np.array_equal(a.mesh.vertices, b.mesh.vertices) for a, b in zip(again, library))
    assert any(not np.allclose(a.mesh.extents, b.mesh.extents) for a, b in zip(other, library))


def test_symmetry_tags_match_the_geometry(library):
    tags = {m.variant: m.symmetry for m in library if m.class_name in ("table", "bin")}
    assert tags["round_pedestal"] == Symmetry.ROTATE_UP_INF
    assert tags["square"] == Symmetry.ROTATE_UP_4
    assert tags["rectangular"] == Symmetry.ROTATE_UP_2
    assert tags["round_open"] == Symmetry.ROTATE_UP_INF
    chair = next(m for m in library if m.variant == "plain")
    assert chair.symmetry == Symmetry.NONE
    for m in library:
        pts = sample_surface_points(m.mesh)
        grid = points_to_grid(pts)
        angles = {Symmetry.ROTATE_UP_2: [np.pi], Symmetry.ROTATE_UP_4: [np.pi / 2, np.pi],
                  Symmetry.ROTATE_UP_INF: [0.3, 1.1, np.pi / 2]}.get(m.symmetry, [])
        for a in angles:
            rotated = points_to_grid(pts @ rotation_about_y_np(a).T)
            iou = (grid & rotated).sum() / (grid | rotated).sum()
            assert iou > 0.75, f"{m.id} tagged {m.symmetry.tag} but rotating by {a:.2f} gives IoU {iou:.2f}"
    asym = [m for m in library if m.symmetry == Symmetry.NONE and m.class_name == "chair"]
    pts = sample_surface_points(asym[0].mesh)
    g0, g1 = points_to_grid(pts), points_to_grid(pts @ rotation_about_y_np(np.pi).T)
    assert (g0 & g1).sum() / (g0 | g1).sum() < 0.75


def test_written_library_round_trips(tmp_path, library):
    subset = [m for m in library if m.class_name in ("bin", "table")]
    write_library(subset, tmp_path, seed=0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {e["id"] for e in manifest["models"]} == {m.id for m in subset}
    loaded = load_library(tmp_path)
    for a, b in zip(subset, loaded):
        assert (a.id, a.class_name, a.symmetry) == (b.id, b.class_name, b.symmetry)
        assert np.allclose(a.mesh.bounds, b.mesh.bounds, atol=1e-5)
        assert np.allclose(a.default_scale, b.default_scale, atol=1e-5)
        assert trimesh.load(b.mesh_path, force="mesh").faces.shape[0] > 0


def _write_user_folder(folder):
    box = trimesh.creation.box(extents=(2.0, 4.0, 1.0))
    box.apply_translation((10.0, 5.0, -3.0))  # far from the origin and not unit sized
    box.export(folder / "tall_cabinet.obj")
    trimesh.creation.cylinder(radius=0.3, height=0.5).export(folder / "round_bin.ply")
    trimesh.creation.box(extents=(1.0, 0.5, 0.5)).export(folder / "desk.stl")
    trimesh.creation.icosphere().export(folder / "blob.glb")
    (folder / "empty.obj").write_text("# nothing here\n")
    (folder / "garbage.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01\x02")
    # all vertices on one line: zero area
    (folder / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    entries = [
        {"file": "tall_cabinet.obj", "class": "cabinet", "id": "cab_a", "symmetry": "none"},
        {"file": "round_bin.ply", "class": "bin", "symmetry": "inf"},
        {"file": "desk.stl", "class": "table", "id": "desk_1", "symmetry": "__SYM_ROTATE_UP_2"},
        {"file": "blob.glb", "class": "bin", "id": "blob", "symmetry": 4},
        {"file": "empty.obj", "class": "chair"},
        {"file": "garbage.ply", "class": "chair"},
        {"file": "flat.obj", "class": "chair"},
        {"file": "missing.obj", "class": "chair"},
        {"file": "desk.stl", "class": "spaceship"},
    ]
    (folder / "manifest.json").write_text(json.dumps({"models": entries}))


def test_user_folder_normalises_good_meshes_and_skips_bad_ones(tmp_path):
    _write_user_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_cad_folder(tmp_path)
    assert [m.id for m in result.models] == ["cab_a", "round_bin", "desk_1", "blob"]
    assert [m.symmetry for m in result.models] == [Symmetry.NONE, Symmetry.ROTATE_UP_INF,
                                                   Symmetry.ROTATE_UP_2, Symmetry.ROTATE_UP_4]
    for m in result.models:
        lo, hi = m.mesh.bounds
        assert np.allclose((lo + hi) / 2, 0, atol=1e-6) and abs(m.mesh.extents.max() - 1) < 1e-6
    assert np.allclose(result.models[0].mesh.extents, [0.5, 1.0, 0.25], atol=1e-6)
    skipped = dict(result.skipped)
    assert set(skipped) == {"empty.obj", "garbage.ply", "flat.obj", "missing.obj", "desk.stl"}
    assert "not found" in skipped["missing.obj"]
    assert "spaceship" in skipped["desk.stl"]
    assert "area" in skipped["flat.obj"] or "empty" in skipped["flat.obj"]
    messages = [str(w.message) for w in caught if issubclass(w.category, CadFolderWarning)]
    assert len(messages) == 5
    assert any("garbage.ply" in msg for msg in messages)


def test_user_folder_yaml_manifest_and_class_subfolders(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    trimesh.creation.box(extents=(1, 1, 1)).export(a / "c.obj")
    (a / "manifest.yaml").write_text("models:\n  - {file: c.obj, class: chair, id: yaml_chair, symmetry: '4'}\n")
    res = load_cad_folder(a)
    assert [(m.id, m.symmetry) for m in res.models] == [("yaml_chair", Symmetry.ROTATE_UP_4)]
    b = tmp_path / "b"
    (b / "sofa").mkdir(parents=True)
    trimesh.creation.box(extents=(2, 1, 1)).export(b / "sofa" / "s1.obj")
    res = load_cad_folder(b)
    assert [(m.id, m.class_name) for m in res.models] == [("s1", "sofa")]
    with pytest.raises(ValueError, match="no manifest"):
        load_cad_folder(tmp_path / "a" / "..")  # neither manifest nor class folders at top level
