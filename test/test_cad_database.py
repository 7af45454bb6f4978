"""CAD database: voxel convention, on-disk round trip, per-class lookup, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from roca_core.classes import Symmetry
from roca_core.cli import cad_db as cad_db_cli
from roca_core.data.cad_database import CadDatabase, CadDatabaseError, build_database_from_models
from roca_core.data.cad_library import build_library, write_library
from roca_core.data.voxelize_mesh import grid_cell_centers, voxelize_surface


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    lib_dir = tmp_path_factory.mktemp("lib")
    models = build_library(seed=0)
    write_library(models, lib_dir, seed=0)
    return build_database_from_models(models, progress=False)


def _projection(db: CadDatabase, dim: int = 64) -> np.ndarray:
    """Fake embedding: a fixed random projection of the flattened grids."""
    proj = np.random.default_rng(0).standard_normal((32 ** 3, dim)).astype(np.float32)
    return db.voxels.reshape(len(db), -1).astype(np.float32) @ proj


def test_voxel_grid_convention_is_x_y_z_surface_occupancy():
    # A slab at x in [0.3, 0.5]; a 0.9 cube has its faces at +-0.45 (cells 1 and 30): only high ix cells; index i is centred at -0.5 + (i + 0.5) / 32.
    slab = trimesh.creation.box(extents=(0.2, 1.0, 1.0))
    slab.apply_translation((0.4, 0.0, 0.0))
    g = voxelize_surface(slab)
    ix = np.nonzero(g.any(axis=(1, 2)))[0]
    centers = grid_cell_centers()
    assert centers[ix].min() > 0.25 and ix.max() == 31
    assert g.any(axis=(0, 2)).all() and g.any(axis=(0, 1)).all()  # spans y and z
    cube = voxelize_surface(trimesh.creation.box(extents=(0.9, 0.9, 0.9)))
    assert cube[1, 16, 16] and cube[30, 16, 16] and not cube[16, 16, 16], "occupancy must be the surface, not the volume"


def test_database_round_trips_on_disk(tmp_path, db):
    db.set_embeddings(_projection(db), source="fake-checkpoint")
    db.save(tmp_path / "db")
    back = CadDatabase.load(tmp_path / "db")
    assert back.ids == db.ids and back.model_classes == db.model_classes
    assert back.symmetries == db.symmetries
    assert all(isinstance(s, Symmetry) for s in back.symmetries)
    assert back.mesh_paths == db.mesh_paths
    assert np.array_equal(back.voxels, db.voxels) and back.voxels.dtype == bool
    assert np.array_equal(back.embeddings, db.embeddings)
    assert back.embedding_source == "fake-checkpoint"
    assert np.allclose(back.default_scales, db.default_scales)
    header = json.loads((tmp_path / "db" / "header.json").read_text())
    assert header["version"] == CadDatabase.FORMAT_VERSION
    assert set(header["symmetries"]) <= {s.tag for s in Symmetry}


def test_lookup_finds_each_model_itself_within_its_class(db):
    db.set_embeddings(_projection(db), source="fake")
    for i, cid in enumerate(db.ids):
        cls = db.model_classes[i]
        ids, dist = db.lookup(cls, db.embeddings[i:i + 1], k=3)
        assert ids[0][0] == cid
        assert dist[0, 0] == pytest.approx(0.0, abs=1e-3)
        assert np.all(np.diff(dist[0]) >= 0)
        assert all(db.model_classes[db.index_of(c)] == cls for c in ids[0])
    # A chair query searched among tables returns tables only
    chair = db.index_of("chair_000")
    ids, _ = db.lookup("table", db.embeddings[chair:chair + 1], k=2)
    assert all(c.startswith("table_") for c in ids[0])
    ids, dist = db.lookup("bin", db.embeddings[:2], k=100)
    assert dist.shape == (2, len(db.indices_of_class("bin")))


def test_lookup_errors_are_clear(db):
    fresh = CadDatabase(db.ids, db.model_classes, db.symmetries, db.mesh_paths, db.voxels)
    with pytest.raises(RuntimeError, match="no embeddings"):
        fresh.lookup("chair", np.zeros((1, 8)))
    fresh.set_embeddings(np.zeros((len(db), 8)), "x")
    with pytest.raises(ValueError, match="unknown class"):
        fresh.lookup("piano", np.zeros((1, 8)))
    with pytest.raises(ValueError, match="shape"):
        fresh.lookup("chair", np.zeros((1, 9)))
    with pytest.raises(ValueError):
        fresh.set_embeddings(np.zeros((len(db) - 1, 8)), "x")
    with pytest.raises(KeyError, match="nope"):
        fresh.index_of("nope")


def test_unknown_versions_and_truncated_files_are_refused(tmp_path, db):
    path = db.save(tmp_path / "db")
    header = json.loads((path / "header.json").read_text())
    (path / "header.json").write_text(json.dumps(dict(header, version="99")))
    with pytest.raises(CadDatabaseError, match="version '99'"):
        CadDatabase.load(path)
    (path / "header.json").write_text(json.dumps(header))
    data = (path / "voxels.npy").read_bytes()
    (path / "voxels.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(CadDatabaseError, match="truncated"):
        CadDatabase.load(path)
    with pytest.raises(CadDatabaseError, match="no header"):
        CadDatabase.load(tmp_path / "elsewhere")


def test_subset_keeps_rows_aligned(db):
    sub = db.subset(["table_001", "bin_000"])
    assert sub.ids == ["table_001", "bin_000"]
    assert np.array_equal(sub.voxels[1], db.voxels[db.index_of("bin_000")])
    assert sub.symmetries == [Symmetry.ROTATE_UP_4, Symmetry.ROTATE_UP_INF]


def test_cli_builds_from_a_user_folder_without_retraining(tmp_path, capsys):
    folder = tmp_path / "meshes"
    folder.mkdir()
    trimesh.creation.box(extents=(1, 2, 1)).export(folder / "a.obj")
    trimesh.creation.cylinder(radius=0.5, height=1).export(folder / "b.ply")
    (folder / "bad.obj").write_text("")
    (folder / "manifest.json").write_text(json.dumps([
        {"file": "a.obj", "class": "cabinet", "id": "cab"},
        {"file": "b.ply", "class": "bin", "id": "bin_round", "symmetry": "inf"},
        {"file": "bad.obj", "class": "chair"}]))
    out = tmp_path / "db"
    with pytest.warns(UserWarning, match="bad.obj"):
        assert cad_db_cli.main(["build", "--meshes", str(folder), "--out", str(out)]) == 0
    db = CadDatabase.load(out)
    assert db.ids == ["cab", "bin_round"] and db.symmetries[1] == Symmetry.ROTATE_UP_INF
    # meshes are stored normalised, so the database can be shown with T R diag(s) directly
    mesh = trimesh.load(db.mesh_paths[0], force="mesh")
    assert abs(mesh.extents.max() - 1.0) < 1e-5
    assert "bad.obj" in capsys.readouterr().err
    assert cad_db_cli.main(["info", str(out)]) == 0
    assert "cabinet" in capsys.readouterr().out
    assert cad_db_cli.main(["info", str(tmp_path / "nothing")]) == 2


def test_embedded_library_database_is_generated_once_and_cached(tmp_path, monkeypatch, capsys):
    from roca_core.data.cad_library import embedded_cad_database, embedded_cad_library_dir

    monkeypatch.setenv("ROCA_HOME", str(tmp_path / "home"))
    lib = embedded_cad_library_dir()
    assert (lib / "manifest.json").is_file() and str(lib).startswith(str(tmp_path))
    db = embedded_cad_database()
    assert len(db) >= 54 and db.embeddings is None
    assert all(n >= 6 for n in db.class_counts().values()) and len(db.class_counts()) == 9
    assert all(trimesh.load(p, force="mesh").faces.size for p in db.mesh_paths[:3])
    mtime = (lib / "cad_db" / "header.json").stat().st_mtime
    again = embedded_cad_database()
    assert (lib / "cad_db" / "header.json").stat().st_mtime == mtime
    assert np.array_equal(again.voxels, db.voxels) and again.ids == db.ids
    out = tmp_path / "emb_db"
    assert cad_db_cli.main(["build", "--meshes", "embedded", "--out", str(out)]) == 0
    built = CadDatabase.load(out)
    assert built.ids == db.ids and np.array_equal(built.voxels, db.voxels)


def test_cli_embeds_with_a_checkpoint_and_lookup_finds_each_model(tmp_path):
    import torch

    from roca_core.checkpoint import save_checkpoint
    from roca_core.data.cad_database import checkpoint_fingerprint
    from roca_core.model import RocaModel, load_preset

    torch.set_num_threads(2)
    cfg = load_preset("small")
    torch.manual_seed(0)
    ckpt = tmp_path / "small.safetensors"
    save_checkpoint(ckpt, RocaModel(cfg), cfg)
    folder = tmp_path / "meshes"
    for i, (cls, mesh) in enumerate([("table", trimesh.creation.box(extents=(2, 0.1, 1))),
                                     ("table", trimesh.creation.cylinder(radius=1, height=0.1)),
                                     ("chair", trimesh.creation.box(extents=(1, 2, 1)))]):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        mesh.export(folder / cls / f"m{i}.obj")
    out = tmp_path / "db"
    assert cad_db_cli.main(["build", "--meshes", str(folder), "--out", str(out), "--checkpoint", str(ckpt)]) == 0
    db = CadDatabase.load(out)
    assert db.embeddings is not None and db.embeddings.shape[0] == 3
    assert db.embedding_source == checkpoint_fingerprint(ckpt)
    for i, cid in enumerate(db.ids):
        ids, _ = db.lookup(db.model_classes[i], db.embeddings[i:i + 1], k=1)
        assert ids[0][0] == cid
