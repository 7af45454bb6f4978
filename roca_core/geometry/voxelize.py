"""Differentiable trilinear voxelisation of (NOC) point clouds into 32^3 density grids.

Grid convention (shared with CAD occupancy grids): ``grid[ix, iy, iz]`` along x, y, z of the
canonical frame, cell size 1/G over [-0.5, 0.5]^3, the centre of index i at
``-0.5 + (i + 0.5) / G``. Each point splats its weight onto its 8 neighbouring cell centres;
corners that fall outside the grid are dropped (points outside [-0.5, 0.5]^3 therefore lose
mass or vanish). The result is divided by its maximum so every grid lies in [0, 1].

Two backends give the same grid: pytorch3d's compiled ``points_to_volumes`` op (used when
importable) and a pure-torch scatter. pytorch3d's trilinear splat does not drop out-of-range
corners: for a point within half a cell of the border (or outside the grid) it casts votes
with *negative* weights (e.g. -0.117 for a point at x = -0.499). We therefore send only
interior points (all 8 corners inside) to pytorch3d and splat the border points with the
exact torch path; ``test/test_voxelize.py`` checks both against a brute-force reference.
"""
from __future__ import annotations

import warnings

import torch

GRID_SIZE = 32
_P3D_FAILED_DEVICES: set[str] = set()

try:  # pragma: no cover - depends on the install
    from pytorch3d.ops.points_to_volumes import add_points_features_to_volume_densities_features as _p3d_splat
    HAVE_PYTORCH3D = True
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _p3d_splat = None
    HAVE_PYTORCH3D = False


def _check(points: torch.Tensor, weights: torch.Tensor) -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if weights.shape != points.shape[:2]:
        raise ValueError(f"weights must be (B, N) = {tuple(points.shape[:2])}, got {tuple(weights.shape)}")


def _normalise(grid: torch.Tensor) -> torch.Tensor:
    """Divide each grid by its maximum (empty grids stay zero)."""
    peak = grid.flatten(1).amax(dim=1).clamp_min(1e-12)
    return grid / peak.view(-1, 1, 1, 1)


def voxelize_points_torch(points: torch.Tensor, weights: torch.Tensor,
                          grid_size: int = GRID_SIZE, normalize: bool = True) -> torch.Tensor:
    """Pure-torch trilinear splat; differentiable wrt points and weights. -> (B, G, G, G)."""
    _check(points, weights)
    # One dtype for index_add, at least float32: autocast hands in float16/bfloat16 NOCs next
    # to float32 weights, and half-precision sums of many small votes lose them.
    dtype = torch.promote_types(torch.promote_types(points.dtype, weights.dtype), torch.float32)
    points, weights = points.to(dtype), weights.to(dtype)
    b, n, _ = points.shape
    g = grid_size
    coords = (points + 0.5) * g - 0.5  # continuous cell index; cell centre i at i
    base = torch.floor(coords.detach())
    frac = coords - base  # (B, N, 3), carries the gradient wrt points
    base = base.long()
    out = points.new_zeros(b * g * g * g)
    batch_offset = (torch.arange(b, device=points.device) * g ** 3).view(b, 1)
    for corner in range(8):
        offs = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=points.device)
        idx = base + offs  # (B, N, 3)
        w_axes = torch.where(offs.bool(), frac, 1.0 - frac)
        vote = weights * w_axes.prod(dim=-1)  # (B, N)
        inside = ((idx >= 0) & (idx < g)).all(dim=-1)
        flat = (idx[..., 0] * g + idx[..., 1]) * g + idx[..., 2]
        flat = torch.where(inside, flat, torch.zeros_like(flat)) + batch_offset
        vote = torch.where(inside, vote, torch.zeros_like(vote))
        out = out.index_add(0, flat.reshape(-1), vote.reshape(-1))
    grid = out.view(b, g, g, g)
    return _normalise(grid) if normalize else grid


def _voxelize_pytorch3d(points: torch.Tensor, weights: torch.Tensor,
                        grid_size: int, normalize: bool) -> torch.Tensor:
    """pytorch3d's compiled splat (float32), converted to our axis order and border rule."""
    _check(points, weights)
    b, n, _ = points.shape
    g = grid_size
    p32 = points.float()
    w32 = weights.float()
    # pytorch3d votes onto out-of-range corners with weights of the wrong sign; keep it for
    # interior points only and splat border points with the exact torch path.
    coords = (p32 + 0.5) * g - 0.5
    interior = ((coords >= 0) & (coords <= g - 1)).all(dim=-1)
    densities = p32.new_zeros(b, 1, g, g, g)
    features = p32.new_zeros(b, 1, g, g, g)
    local = (p32 * 2.0).contiguous()  # [-0.5, 0.5] -> [-1, 1] with align_corners=False
    feats, _ = _p3d_splat(points_3d=local, points_features=(w32 * interior).unsqueeze(-1).contiguous(),
                          volume_densities=densities, volume_features=features, mode="trilinear",
                          mask=interior.float(), rescale_features=False, align_corners=False)
    grid = feats[:, 0].permute(0, 3, 2, 1)  # (B, D=z, H=y, W=x) -> (B, x, y, z)
    border_w = w32 * (~interior)
    if bool((border_w != 0).any()):
        grid = grid + voxelize_points_torch(p32, border_w, g, normalize=False)
    grid = grid.to(points.dtype)
    return _normalise(grid) if normalize else grid


def voxelize_points(points: torch.Tensor, weights: torch.Tensor, grid_size: int = GRID_SIZE,
                    backend: str = "auto", normalize: bool = True) -> torch.Tensor:
    """Trilinear splat of weighted points in [-0.5, 0.5]^3 -> (B, G, G, G) density in [0, 1].

    points: (B, N, 3); weights: (B, N) >= 0 (e.g. mask probabilities, 0 drops a point).
    backend: "auto" (pytorch3d when importable, else torch), "pytorch3d" or "torch".
    """
    if backend not in ("auto", "pytorch3d", "torch"):
        raise ValueError(f"unknown voxelize backend {backend!r}; expected auto, pytorch3d or torch")
    if backend == "pytorch3d" and not HAVE_PYTORCH3D:
        raise ValueError("voxelize backend 'pytorch3d' requested but pytorch3d is not importable")
    if backend == "torch" or not HAVE_PYTORCH3D or points.shape[1] == 0 or \
            (backend == "auto" and points.device.type in _P3D_FAILED_DEVICES):
        return voxelize_points_torch(points, weights, grid_size, normalize)
    if backend == "pytorch3d":
        return _voxelize_pytorch3d(points, weights, grid_size, normalize)
    try:
        return _voxelize_pytorch3d(points, weights, grid_size, normalize)
    except RuntimeError as exc:  # e.g. a pytorch3d build without kernels for this device
        _P3D_FAILED_DEVICES.add(points.device.type)
        warnings.warn(f"pytorch3d voxelisation failed on {points.device.type} ({exc}); "
                      "using the pure-torch path from now on", RuntimeWarning, stacklevel=2)
        return voxelize_points_torch(points, weights, grid_size, normalize)
