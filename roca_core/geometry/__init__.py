"""Geometry of roca: rotations, cameras, Procrustes and voxelisation."""

from roca_core.geometry.procrustes import weighted_procrustes  # noqa: E402,F401
