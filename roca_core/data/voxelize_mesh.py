"""32^3 surface occupancy of canonical meshes (the CAD side of retrieval).

Grid convention (shared by the whole project): ``grid[ix, iy, iz]`` along canonical x, y, z,
cell size 1/32, covering [-0.5, 0.5]^3; index i has its centre at ``-0.5 + (i + 0.5) / 32``.
A cell is occupied when the mesh surface passes through it. The surface is sampled densely
(about 12 samples per cell face area, plus all vertices and edge points) with a fixed seed, so
the result is deterministic and thin parts (chair legs, shelves) are not missed.
"""
from __future__ import annotations

import numpy as np
import trimesh

GRID_RES = 32


def points_to_grid(points: np.ndarray, res: int = GRID_RES) -> np.ndarray:
    """Mark the cells containing ``points`` (N, 3) in a (res, res, res) bool grid."""
    grid = np.zeros((res, res, res), dtype=bool)
    if len(points) == 0:
        return grid
    idx = np.floor((np.asarray(points, dtype=np.float64) + 0.5) * res).astype(np.int64)
    idx = np.clip(idx, 0, res - 1)
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return grid


def sample_surface_points(mesh: trimesh.Trimesh, density: float = 12.0, res: int = GRID_RES,
                          seed: int = 0, max_points: int = 2_000_000) -> np.ndarray:
    """Area-weighted surface samples (plus vertices and edge samples), deterministic for ``seed``."""
    tri = np.asarray(mesh.triangles, dtype=np.float64)  # (F, 3, 3)
    if len(tri) == 0:
        return np.zeros((0, 3))
    area = np.asarray(mesh.area_faces, dtype=np.float64)
    total = float(area.sum())
    count = int(min(max_points, max(20_000, total * density * res * res)))
    rng = np.random.default_rng(seed)
    pts = [np.asarray(mesh.vertices, dtype=np.float64)]
    if total > 0:
        face = rng.choice(len(tri), size=count, p=area / total)
        r1, r2 = rng.random(count), rng.random(count)
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        t = tri[face]
        pts.append(t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0]))
    # Edges: a few points per cell length so slivers of zero area still mark their cells.
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    steps = np.linspace(0.0, 1.0, 2 * res + 1)
    lengths = np.linalg.norm(edges[:, 1] - edges[:, 0], axis=1)
    long_edges = edges[lengths > 0.5 / res]
    if len(long_edges):
        pts.append((long_edges[:, :1] + steps[None, :, None] * (long_edges[:, 1:] - long_edges[:, :1])).reshape(-1, 3))
    return np.concatenate(pts)


def voxelize_surface(mesh: trimesh.Trimesh, res: int = GRID_RES, seed: int = 0) -> np.ndarray:
    """(res, res, res) bool surface occupancy of a canonical mesh."""
    return points_to_grid(sample_surface_points(mesh, res=res, seed=seed), res)


def grid_cell_centers(res: int = GRID_RES) -> np.ndarray:
    """(res,) centres of the cells along one axis."""
    return -0.5 + (np.arange(res) + 0.5) / res
