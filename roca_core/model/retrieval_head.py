"""Retrieval: joint embedding of voxelised predicted NOCs (+ shape code) and CAD occupancy
grids, with a completion decoder (paper Sec. 3.4)."""
from __future__ import annotations

import torch
from torch import nn

from roca_core.geometry.voxelize import voxelize_points
from roca_core.model.config import ModelConfig

GRID = 32


class VoxelEncoder(nn.Module):
    """(M, 32, 32, 32) -> (M, D): three stride-2 3D convs (32 -> 16 -> 8 -> 4) and a linear.

    Every conv is normalised: without a norm after the first one, its few ReLUs died within
    ~100 steps on sparse occupancy grids and all CADs embedded to the same point."""

    def __init__(self, channels: tuple[int, ...], dim: int, first_norm: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = channels
        first = [nn.GroupNorm(min(8, c1), c1)] if first_norm else []  # False: arch_version 1
        self.convs = nn.Sequential(
            nn.Conv3d(1, c1, 4, stride=2, padding=1), *first, nn.ReLU(inplace=True),
            nn.Conv3d(c1, c2, 4, stride=2, padding=1), nn.GroupNorm(min(8, c2), c2), nn.ReLU(inplace=True),
            nn.Conv3d(c2, c3, 4, stride=2, padding=1), nn.GroupNorm(min(8, c3), c3), nn.ReLU(inplace=True))
        self.fc = nn.Linear(c3 * 4 ** 3, dim)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(voxels[:, None]).flatten(1))


class VoxelDecoder(nn.Module):
    """(M, D) -> (M, 32, 32, 32) occupancy logits, mirroring the encoder.

    Normalised like the encoder (``norm``): without it the default init shrinks the signal
    at every layer, the logits start flat and the gradient reaching the decoder is ~1e-2,
    so completion never got past a constant guess."""

    def __init__(self, channels: tuple[int, ...], dim: int, norm: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.c3 = c3
        gn = (lambda c: [nn.GroupNorm(min(8, c), c)]) if norm else (lambda c: [])  # noqa: E731
        self.fc = nn.Sequential(nn.Linear(dim, c3 * 4 ** 3), nn.ReLU(inplace=True))
        self.deconvs = nn.Sequential(
            nn.ConvTranspose3d(c3, c2, 4, stride=2, padding=1), *gn(c2), nn.ReLU(inplace=True),
            nn.ConvTranspose3d(c2, c1, 4, stride=2, padding=1), *gn(c1), nn.ReLU(inplace=True),
            nn.ConvTranspose3d(c1, 1, 4, stride=2, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.fc(z).view(-1, self.c3, 4, 4, 4))[:, 0]


class RetrievalHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.backend = cfg.voxelize_backend
        first_norm = cfg.arch_version >= 2
        self.noc_encoder = VoxelEncoder(cfg.voxel_channels, d, first_norm)
        self.cad_encoder = VoxelEncoder(cfg.voxel_channels, d, first_norm)  # separate weights
        self.shape_mlp = nn.Sequential(nn.Linear(cfg.shape_code_dim, cfg.retrieval_mlp_hidden),
                                       nn.ReLU(inplace=True), nn.Linear(cfg.retrieval_mlp_hidden, d),
                                       nn.ReLU(inplace=True))
        self.decoder = VoxelDecoder(cfg.voxel_channels, d, first_norm)

    def voxelize(self, noc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """noc (R, N, 3), weights (R, N) -> (R, 32, 32, 32) density in [0, 1]."""
        return voxelize_points(noc, weights, GRID, backend=self.backend)

    def embed_noc(self, noc: torch.Tensor, weights: torch.Tensor,
                  shape_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> query embeddings z (R, D) and the NOC grids (R, 32, 32, 32).

        NOCs and shape code enter detached: retrieval learns to read them but does not push
        the alignment head or the trunk (its random early objective would, with the largest
        gradient of all heads)."""
        grid = self.voxelize(noc.detach(), weights.detach()).to(shape_code.dtype)
        return self.noc_encoder(grid) + self.shape_mlp(shape_code.detach()), grid

    def embed_cad(self, voxels: torch.Tensor) -> torch.Tensor:
        return self.cad_encoder(voxels)
