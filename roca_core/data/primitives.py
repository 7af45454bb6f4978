"""Mesh primitives for the procedural CAD library, in metres (y up, front +z, floor y = 0).

Each helper returns a closed trimesh part; models are unions (concatenations) of parts, which
is "watertight enough" for rendering, voxelisation and surface sampling.
"""
from __future__ import annotations

import numpy as np
import trimesh


def box(center: tuple[float, float, float], size: tuple[float, float, float],
        yaw: float = 0.0) -> trimesh.Trimesh:
    """Axis-aligned box (optionally turned about y) with its centre at ``center``."""
    tf = np.eye(4)
    if yaw:
        c, s = np.cos(yaw), np.sin(yaw)
        tf[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    tf[:3, 3] = center
    return trimesh.creation.box(extents=size, transform=tf)


def cylinder(center: tuple[float, float, float], radius: float, height: float,
             axis: str = "y", sections: int = 32, top_scale: float = 1.0) -> trimesh.Trimesh:
    """Cylinder along ``axis``; ``top_scale`` != 1 tapers it into a frustum (top end)."""
    m = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    if top_scale != 1.0:  # trimesh builds it along z; taper the +z end
        v = m.vertices.copy()
        top = v[:, 2] > 0
        v[top, :2] *= top_scale
        m = trimesh.Trimesh(v, m.faces, process=False)
    rot = {"z": np.eye(3),
           "y": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float),  # z -> y
           "x": np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)}[axis]
    tf = np.eye(4)
    tf[:3, :3] = rot
    tf[:3, 3] = center
    m.apply_transform(tf)
    return m


def ring(center: tuple[float, float, float], r_outer: float, r_inner: float, height: float,
         sections: int = 32, top_scale: float = 1.0, squash_z: float = 1.0) -> trimesh.Trimesh:
    """Vertical tube wall (annulus extruded along y), optionally tapered and elliptical."""
    m = trimesh.creation.annulus(r_min=r_inner, r_max=r_outer, height=height, sections=sections)
    v = m.vertices.copy()
    if top_scale != 1.0:
        top = v[:, 2] > 0
        v[top, :2] *= top_scale
    v[:, 1] *= squash_z  # before rotating: trimesh's y becomes our z
    m = trimesh.Trimesh(v, m.faces, process=False)
    tf = np.eye(4)
    tf[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
    tf[:3, 3] = center
    m.apply_transform(tf)
    return m


def concat(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """One mesh from parts (no boolean union: cheap and deterministic)."""
    mesh = trimesh.util.concatenate(parts)
    mesh.merge_vertices()
    return mesh


def normalise_to_unit_box(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, float]:
    """Centre the bounding box at 0 and scale the largest extent to 1.

    Returns the canonical mesh and the factor that maps it back to its original size.
    """
    lo, hi = mesh.bounds
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("mesh has zero or non-finite extent")
    out = mesh.copy()
    out.apply_translation(-(lo + hi) / 2.0)
    out.apply_scale(1.0 / extent)
    return out, extent
