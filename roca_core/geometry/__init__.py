"""Geometry of roca: rotations, cameras, Procrustes and voxelisation."""
