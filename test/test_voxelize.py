"""Trilinear voxelisation: torch path == brute-force reference == pytorch3d path."""
from __future__ import annotations

import pytest
import torch

from roca_core.geometry.voxelize import HAVE_PYTORCH3D, voxelize_points, voxelize_points_torch

torch.set_num_threads(2)
G = 32


def _brute_force(points: torch.Tensor, weights: torch.Tensor, g: int = G) -> torch.Tensor:
    """Loop over points and their 8 corners; drop corners outside the grid; max-normalise."""
    out = torch.zeros(points.shape[0], g, g, g, dtype=torch.float64)
    for b in range(points.shape[0]):
        for p, w in zip(points[b].tolist(), weights[b].tolist()):
            c = [(x + 0.5) * g - 0.5 for x in p]
            lo = [int(torch.floor(torch.tensor(x))) for x in c]
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        idx = (lo[0] + dx, lo[1] + dy, lo[2] + dz)
                        if not all(0 <= i < g for i in idx):
                            continue
                        tri = 1.0
                        for axis, d in enumerate((dx, dy, dz)):
                            f = c[axis] - lo[axis]
                            tri *= f if d else 1.0 - f
                        out[b, idx[0], idx[1], idx[2]] += w * tri
        peak = out[b].max()
        if peak > 0:
            out[b] /= peak
    return out


def _cloud(seed: int, n: int = 300, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pts = (torch.rand(2, n, 3, generator=gen) - 0.5) * spread
    # points in the border half-cell and exactly on / outside the faces
    pts[:, :20, 0] = torch.linspace(-0.5, -0.5 + 1.0 / G, 20)
    pts[:, 20:30, 1] = torch.linspace(0.49, 0.6, 10)
    return pts, torch.rand(2, n, generator=gen)


def test_torch_matches_brute_force():
    pts, w = _cloud(0)
    got = voxelize_points_torch(pts.double(), w.double())
    torch.testing.assert_close(got, _brute_force(pts.double(), w.double()), atol=1e-12, rtol=0)
    assert got.min() >= 0 and got.max() == 1


def test_axis_order_and_cell_centres():
    # a point exactly on a cell centre fills one cell, at grid[ix, iy, iz]
    ix, iy, iz = 3, 17, 30
    p = torch.tensor([[[-0.5 + (i + 0.5) / G for i in (ix, iy, iz)]]])
    grid = voxelize_points(p, torch.ones(1, 1), backend="torch")
    assert grid[0, ix, iy, iz] == 1 and grid.sum() == 1
    if HAVE_PYTORCH3D:
        torch.testing.assert_close(voxelize_points(p, torch.ones(1, 1), backend="pytorch3d"), grid)


@pytest.mark.skipif(not HAVE_PYTORCH3D, reason="pytorch3d not installed")
def test_pytorch3d_matches_torch_including_border_points():
    pts, w = _cloud(1, spread=1.1)
    a = voxelize_points(pts, w, backend="torch")
    b = voxelize_points(pts, w, backend="pytorch3d")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert b.min() >= 0  # raw pytorch3d would give negative votes here


@pytest.mark.skipif(not HAVE_PYTORCH3D, reason="pytorch3d not installed")
def test_raw_pytorch3d_border_votes_are_negative():
    """Documents why the border points bypass pytorch3d (if this starts failing, the
    upstream op was fixed and the workaround can go)."""
    from pytorch3d.ops.points_to_volumes import add_points_features_to_volume_densities_features as splat
    p = torch.tensor([[[-0.499, 0.0, 0.0]]]) * 2
    vol = splat(points_3d=p, points_features=torch.ones(1, 1, 1),
                volume_densities=torch.zeros(1, 1, G, G, G), volume_features=torch.zeros(1, 1, G, G, G),
                mode="trilinear", rescale_features=False, align_corners=False)[0]
    assert vol.min() < 0


@pytest.mark.parametrize("backend", ["torch"] + (["pytorch3d"] if HAVE_PYTORCH3D else []))
def test_gradients_wrt_points_and_weights(backend):
    pts, w = _cloud(2, n=50, spread=0.9)
    pts.requires_grad_()
    w.requires_grad_()
    grid = voxelize_points(pts, w, backend=backend, normalize=False)
    target = torch.rand_like(grid)
    (grid * target).sum().backward()
    assert torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    # weight gradient equals the target sampled at the point's corners: check one by finite difference
    with torch.no_grad():
        w2 = w.detach().clone()
        w2[0, 40] += 1e-3
        g2 = voxelize_points(pts.detach(), w2, backend=backend, normalize=False)
        fd = ((g2 - grid.detach()) * target).sum() / 1e-3
    assert abs(fd.item() - w.grad[0, 40].item()) < 1e-2


def test_empty_and_zero_weight_grids_are_zero():
    assert voxelize_points(torch.zeros(2, 0, 3), torch.zeros(2, 0)).abs().sum() == 0
    assert voxelize_points(torch.zeros(1, 5, 3), torch.zeros(1, 5)).abs().sum() == 0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="weights"):
        voxelize_points(torch.zeros(1, 5, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="backend"):
        voxelize_points(torch.zeros(1, 5, 3), torch.zeros(1, 5), backend="cuda-magic")
