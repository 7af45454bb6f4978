"""weighted_procrustes: recovery, agreement with Horn's quaternion method, no reflections,
gradcheck, and finite output on degenerate input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roca_core.geometry import weighted_procrustes
from roca_core.geometry.rotations import quat_to_matrix

torch.set_num_threads(2)


def _random_rotations(b: int, gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(b, 4, generator=gen, dtype=torch.float64)
    return quat_to_matrix(q / q.norm(dim=1, keepdim=True))


def _horn(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horn (1987) closed form: R from the top eigenvector of the 4x4 quaternion matrix."""
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    m = (a * w[:, None]).T @ b  # S_ij = sum w a_i b_j
    sxx, sxy, sxz = m[0]
    syx, syy, syz = m[1]
    szx, szy, szz = m[2]
    n = np.array([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz]])
    vals, vecs = np.linalg.eigh(n)
    qw, qx, qy, qz = vecs[:, np.argmax(vals)]
    r = np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]])
    return r, md - r @ ms


def test_recovers_rotation_and_translation_from_noisy_weighted_points():
    gen = torch.Generator().manual_seed(0)
    b, n = 16, 200
    rot = _random_rotations(b, gen)
    t = torch.randn(b, 3, generator=gen, dtype=torch.float64) * 2
    src = torch.rand(b, n, 3, generator=gen, dtype=torch.float64) - 0.5
    dst = src @ rot.transpose(1, 2) + t[:, None]
    # 30 % outliers with (almost) zero weight, small noise on the rest
    outlier = torch.rand(b, n, generator=gen) < 0.3
    dst = dst + 0.002 * torch.randn(b, n, 3, generator=gen, dtype=torch.float64)
    dst[outlier] += torch.randn(int(outlier.sum()), 3, generator=gen, dtype=torch.float64)
    w = torch.where(outlier, torch.full((b, n), 1e-6, dtype=torch.float64),
                    0.5 + torch.rand(b, n, generator=gen, dtype=torch.float64))
    r_est, t_est = weighted_procrustes(src.float(), dst.float(), w.float())
    assert r_est.dtype == torch.float32
    trace = (r_est.double().transpose(1, 2) @ rot).diagonal(dim1=1, dim2=2).sum(-1)
    ang = torch.arccos(((trace - 1) / 2).clamp(-1, 1))
    assert torch.rad2deg(ang).max() < 1.0
    assert (t_est.double() - t).norm(dim=1).max() < 0.01


def test_matches_horn_closed_form():
    gen = torch.Generator().manual_seed(1)
    b, n = 8, 30
    src = torch.randn(b, n, 3, generator=gen, dtype=torch.float64)
    dst = torch.randn(b, n, 3, generator=gen, dtype=torch.float64)  # unrelated: a real fit
    w = torch.rand(b, n, generator=gen, dtype=torch.float64)
    r_est, t_est = weighted_procrustes(src, dst, w)
    for i in range(b):
        r_h, t_h = _horn(src[i].numpy(), dst[i].numpy(), w[i].numpy())
        np.testing.assert_allclose(r_est[i].numpy(), r_h, atol=1e-8)
        np.testing.assert_allclose(t_est[i].numpy(), t_h, atol=1e-8)


def test_never_returns_a_reflection():
    gen = torch.Generator().manual_seed(2)
    b, n = 10, 40
    src = torch.randn(b, n, 3, generator=gen, dtype=torch.float64)
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    dst = src @ (_random_rotations(b, gen) @ mirror).transpose(1, 2)  # best orthogonal fit is a reflection
    r_est, _ = weighted_procrustes(src, dst, torch.ones(b, n, dtype=torch.float64))
    det = torch.linalg.det(r_est)
    torch.testing.assert_close(det, torch.ones(b, dtype=torch.float64))
    torch.testing.assert_close(r_est @ r_est.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(b, 3, 3))


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    n = 12
    rot = _random_rotations(1, gen)[0]
    src = torch.randn(1, n, 3, generator=gen, dtype=torch.float64)
    dst = src @ rot.T + 0.05 * torch.randn(1, n, 3, generator=gen, dtype=torch.float64) + 0.3
    w = 0.5 + torch.rand(1, n, generator=gen, dtype=torch.float64)
    inputs = tuple(x.clone().requires_grad_() for x in (src, dst, w))
    assert torch.autograd.gradcheck(weighted_procrustes, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", ["zero_weights", "collinear", "single_point", "coincident", "empty"])
def test_degenerate_input_is_finite_with_identity_rotation(case):
    n = 10
    line = torch.linspace(0, 1, n)[:, None] * torch.tensor([1.0, 2.0, 3.0])
    src = torch.randn(2, n, 3)
    w = torch.ones(2, n)
    if case == "zero_weights":
        w = torch.zeros(2, n)
    elif case == "collinear":
        src = line.expand(2, n, 3).clone()
    elif case == "single_point":
        w = torch.zeros(2, n)
        w[:, 3] = 1.0
    elif case == "coincident":
        src = torch.ones(2, n, 3)
    elif case == "empty":
        src, w = torch.zeros(2, 0, 3), torch.zeros(2, 0)
    src.requires_grad_()
    dst = src.detach() + torch.tensor([0.5, -1.0, 2.0])
    r_est, t_est = weighted_procrustes(src, dst, w)
    assert torch.isfinite(r_est).all() and torch.isfinite(t_est).all()
    torch.testing.assert_close(r_est.detach(), torch.eye(3).expand(2, 3, 3))
    if case != "empty":
        torch.testing.assert_close(t_est.detach(), torch.tensor([0.5, -1.0, 2.0]).expand(2, 3))
    (r_est.sum() + t_est.sum()).backward()
    assert torch.isfinite(src.grad).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="weights"):
        weighted_procrustes(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="src"):
        weighted_procrustes(torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5))
