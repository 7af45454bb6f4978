"""Mesh URIs for RViz on other machines, and TRIANGLE_LIST markers that carry the mesh itself."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("visualization_msgs.msg")
trimesh = pytest.importorskip("trimesh")
from visualization_msgs.msg import Marker  # noqa: E402

from roca_ros.markers import MAX_MARKER_TRIANGLES, build_marker_array  # noqa: E402
from roca_ros.mesh_uris import MeshUriError, MeshUris, package_uri, parse_prefix  # noqa: E402


def meshes(tmp_path: Path) -> list[str]:
    paths = []
    for name in ("chair/chair_000.obj", "table/table 001.obj"):
        path = tmp_path / "library" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        trimesh.creation.box().export(path)
        paths.append(str(path))
    return paths


def test_prefix_maps_paths_relative_to_the_meshes_folder(tmp_path):
    paths = meshes(tmp_path)
    uris = MeshUris("package://roca_cad/meshes/", paths)
    assert uris(paths[0]) == "package://roca_cad/meshes/chair/chair_000.obj"
    assert uris(paths[1]) == "package://roca_cad/meshes/table/table%20001.obj"
    assert uris("") == "" and uris(None) == ""
    explicit = MeshUris(f"{tmp_path}=http://robot:8000/cad", paths)
    assert explicit(paths[0]) == "http://robot:8000/cad/library/chair/chair_000.obj"
    outside = tmp_path.parent / "elsewhere.obj"
    assert explicit(str(outside)) == outside.resolve().as_uri()  # not under LOCAL_DIR: file://
    assert MeshUris()(paths[0]) == Path(paths[0]).as_uri()


@pytest.mark.parametrize("value,reason", [
    ("roca_cad/meshes", "needs a URI prefix with a scheme"),
    ("relative/dir=package://x/y", "must be absolute"),
])
def test_bad_prefixes_are_refused(value, reason):
    with pytest.raises(MeshUriError, match=reason):
        parse_prefix(value)


def test_meshes_in_an_installed_share_directory_become_package_uris(tmp_path, monkeypatch):
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "roca_cad_test").touch()
    mesh = prefix / "share" / "roca_cad_test" / "meshes" / "chair_000.obj"
    mesh.parent.mkdir(parents=True)
    trimesh.creation.box().export(mesh)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    package_uri.cache_clear()
    try:
        assert MeshUris()(str(mesh)) == "package://roca_cad_test/meshes/chair_000.obj"
        stray = tmp_path / "share" / "not_a_package" / "m.obj"
        assert package_uri(str(stray)) is None
    finally:
        package_uri.cache_clear()


def detection(mesh_path: str):
    return SimpleNamespace(class_name="chair", class_index=1, score=0.9, rotation=np.eye(3),
                           quaternion=np.array([1.0, 0, 0, 0]), translation=np.array([0, 0, 2.0]),
                           scale=np.array([0.5, 0.9, 0.5]), mesh_path=mesh_path)


def test_triangle_markers_carry_small_meshes_and_big_ones_stay_resources(tmp_path):
    small = tmp_path / "small.obj"
    trimesh.creation.box().export(small)
    big = tmp_path / "big.obj"
    sphere = trimesh.creation.icosphere(subdivisions=5)
    assert len(sphere.faces) > MAX_MARKER_TRIANGLES
    sphere.export(big)
    uris = MeshUris("package://roca_cad/meshes", [str(small), str(big)])
    array = build_marker_array([detection(str(small)), detection(str(big))], SimpleNamespace(),
                               uri_of=uris, mesh_mode="triangles")
    body_small, body_big = array.markers[1], array.markers[3]
    assert body_small.type == Marker.TRIANGLE_LIST
    loaded = trimesh.load(small, force="mesh", process=False)
    expected = np.asarray(loaded.vertices)[np.asarray(loaded.faces).reshape(-1)]
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in body_small.points], expected)
    assert (body_small.scale.x, body_small.scale.y) == (0.5, 0.9)  # anisotropic scale as for meshes
    assert body_big.type == Marker.MESH_RESOURCE and body_big.mesh_resource == "package://roca_cad/meshes/big.obj"
    resource = build_marker_array([detection(str(small))], SimpleNamespace(), uri_of=uris)
    assert resource.markers[1].type == Marker.MESH_RESOURCE and not resource.markers[1].points
