"""Batched, differentiable weighted Procrustes (rotation + translation, no scale), in full or
about a known up direction (the upright prior).

The SVD runs in float64: the cross-covariance of NOC/depth correspondences is often badly
conditioned and float32 SVD gradients blow up there. Degenerate problems (all weights zero,
fewer than two independent directions, non-finite input) get the identity rotation, a
translation from the (weighted, else plain) centroids, and zero gradient instead of NaN.
"""
from __future__ import annotations

import torch

# Rank test on the covariance: s2 / s1 below this -> points (nearly) collinear or coincident.
_RANK_TOL = 1e-9


def weighted_procrustes(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor,
                        eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``sum_k w_k |R src_k + t - dst_k|^2`` over proper rotations R and t.

    src, dst: (B, N, 3); weights: (B, N) >= 0 (negative values are treated as 0).
    Returns R (B, 3, 3) with det +1 and t (B, 3) in the input dtype.
    """
    if src.dim() != 3 or src.shape[-1] != 3:
        raise ValueError(f"src must be (B, N, 3), got {tuple(src.shape)}")
    if dst.shape != src.shape:
        raise ValueError(f"dst must match src {tuple(src.shape)}, got {tuple(dst.shape)}")
    if weights.shape != src.shape[:2]:
        raise ValueError(f"weights must be (B, N) = {tuple(src.shape[:2])}, got {tuple(weights.shape)}")
    out_dtype = src.dtype if src.is_floating_point() else torch.float32
    s = src.double()
    d = dst.double()
    w = weights.double().clamp_min(0.0)
    b, n, _ = s.shape

    w_sum = w.sum(dim=1, keepdim=True)  # (B, 1)
    has_weight = (w_sum[:, 0] > eps) & torch.isfinite(w_sum[:, 0])
    # Zero-weight problems fall back to uniform weights for the centroids.
    uniform = torch.full_like(w, 1.0 / max(n, 1))
    w_norm = torch.where(has_weight[:, None], w / w_sum.clamp_min(eps), uniform)
    mu_s = (w_norm.unsqueeze(-1) * s).sum(dim=1)  # (B, 3)
    mu_d = (w_norm.unsqueeze(-1) * d).sum(dim=1)
    sc = s - mu_s.unsqueeze(1)
    dc = d - mu_d.unsqueeze(1)
    cov = torch.einsum("bn,bni,bnj->bij", w_norm, dc, sc)  # (B, 3, 3): dst x src^T

    finite = torch.isfinite(cov).flatten(1).all(dim=1) & torch.isfinite(mu_s).all(1) & torch.isfinite(mu_d).all(1)
    sv = torch.linalg.svdvals(torch.where(finite[:, None, None], cov, torch.zeros_like(cov)).detach())
    rank_ok = sv[:, 1] > _RANK_TOL * sv[:, 0].clamp_min(1e-300)
    ok = has_weight & finite & rank_ok & (sv[:, 0] > 1e-300)
    # Degenerate entries get a well-separated stand-in so the SVD backward stays finite.
    safe = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=cov.dtype, device=cov.device)).expand(b, 3, 3)
    cov_ok = torch.where(ok[:, None, None], cov, safe)
    u, _, vh = torch.linalg.svd(cov_ok)
    det = torch.linalg.det(u @ vh)
    fix = torch.ones(b, 3, dtype=cov.dtype, device=cov.device)
    fix = torch.cat([fix[:, :2], torch.sign(det).unsqueeze(1) + (det == 0).double().unsqueeze(1)], dim=1)
    rot = u @ torch.diag_embed(fix) @ vh
    eye = torch.eye(3, dtype=cov.dtype, device=cov.device).expand(b, 3, 3)
    rot = torch.where(ok[:, None, None], rot, eye)
    mu_s = torch.where(torch.isfinite(mu_s), mu_s, torch.zeros_like(mu_s))
    mu_d = torch.where(torch.isfinite(mu_d), mu_d, torch.zeros_like(mu_d))
    t = mu_d - (rot @ mu_s.unsqueeze(-1)).squeeze(-1)
    return rot.to(out_dtype), t.to(out_dtype)


def weighted_translation(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor,
                         rot: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The least-squares translation for a given rotation: ``mu_dst - R mu_src`` with the
    weighted centroids (uniform where the weights sum to zero), as ``weighted_procrustes``
    computes it. src, dst: (B, N, 3); weights: (B, N); rot: (B, 3, 3) -> t (B, 3)."""
    w = weights.to(src.dtype).clamp_min(0.0)
    w_sum = w.sum(dim=1, keepdim=True)
    w_norm = torch.where(w_sum > eps, w / w_sum.clamp_min(eps), torch.full_like(w, 1.0 / max(w.shape[1], 1)))
    mu_s = (w_norm.unsqueeze(-1) * src).sum(dim=1)
    mu_d = (w_norm.unsqueeze(-1) * dst).sum(dim=1)
    return mu_d - (rot.to(src.dtype) @ mu_s.unsqueeze(-1)).squeeze(-1)


def procrustes_valid(weights: torch.Tensor, min_points: int, threshold: float = 0.0) -> torch.Tensor:
    """(B,) True where at least ``min_points`` weights exceed ``threshold`` (the caller's rule)."""
    return (weights > threshold).sum(dim=1) >= min_points


def rotation_y_to(up: torch.Tensor) -> torch.Tensor:
    """(B, 3) unit vectors -> (B, 3, 3) proper rotations whose second column is ``up``: they
    carry the canonical frame's y axis (CAD up) onto ``up`` and keep x as close to the
    camera's x as possible (any choice works; the yaw solved afterwards absorbs it)."""
    u = up / up.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ex = torch.zeros_like(u)
    ex[:, 0] = 1.0
    ez = torch.zeros_like(u)
    ez[:, 2] = 1.0
    # x axis: camera x minus its part along up (camera z where up is along camera x)
    ref = torch.where((u[:, :1].abs() > 0.9), ez, ex)
    x = ref - (ref * u).sum(-1, keepdim=True) * u
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    z = torch.cross(x, u, dim=-1)
    return torch.stack([x, u, z], dim=-1)


def weighted_procrustes_upright(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor,
                                up: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Procrustes with a known up direction (the upright prior): the rotation maps
    the canonical y axis onto ``up`` and only the yaw about it is solved, in closed form.

    Furniture stands upright, so once gravity in the camera frame is known (IMU, robot TF, or
    the data set's camera pose) two of the three rotation angles are given and noisy NOCs
    can only err in yaw. src, dst: (B, N, 3); weights: (B, N) >= 0; up: (B, 3) camera-frame
    up (need not be unit length). -> R (B, 3, 3), t (B, 3) minimising
    ``sum_k w_k |R src_k + t - dst_k|^2`` over R = A(up) R_y(yaw); problems without weight or
    spread get yaw 0 and zero gradient instead of NaN.
    """
    if src.dim() != 3 or src.shape[-1] != 3 or dst.shape != src.shape:
        raise ValueError(f"src and dst must both be (B, N, 3), got {tuple(src.shape)} and {tuple(dst.shape)}")
    if weights.shape != src.shape[:2]:
        raise ValueError(f"weights must be (B, N) = {tuple(src.shape[:2])}, got {tuple(weights.shape)}")
    if up.shape != (src.shape[0], 3):
        raise ValueError(f"up must be (B, 3) = ({src.shape[0]}, 3), got {tuple(up.shape)}")
    out_dtype = src.dtype if src.is_floating_point() else torch.float32
    s, d, w = src.double(), dst.double(), weights.double().clamp_min(0.0)
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
    b, n, _ = s.shape
    w_sum = w.sum(dim=1, keepdim=True)
    has_weight = w_sum[:, 0] > eps
    uniform = torch.full_like(w, 1.0 / max(n, 1))
    w_norm = torch.where(has_weight[:, None], w / w_sum.clamp_min(eps), uniform)
    align = rotation_y_to(up.double())  # (B, 3, 3): canonical -> camera, yaw 0
    d_up = d @ align  # rows (A^T d)^T: dst in the yaw-free frame
    mu_s = (w_norm[..., None] * s).sum(dim=1)  # (B, 3)
    mu_d = (w_norm[..., None] * d_up).sum(dim=1)
    a, c = d_up - mu_d[:, None], s - mu_s[:, None]
    cos_term = (w_norm * (a[..., 0] * c[..., 0] + a[..., 2] * c[..., 2])).sum(1)  # (B,)
    sin_term = (w_norm * (a[..., 0] * c[..., 2] - a[..., 2] * c[..., 0])).sum(1)
    norm2 = cos_term ** 2 + sin_term ** 2
    ok = has_weight & (norm2 > 1e-24) & torch.isfinite(norm2)
    safe_c = torch.where(ok, cos_term, torch.ones_like(cos_term))
    safe_s = torch.where(ok, sin_term, torch.zeros_like(sin_term))
    length = torch.sqrt(safe_c ** 2 + safe_s ** 2)
    cy, sy = safe_c / length, safe_s / length
    one, zero = torch.ones_like(cy), torch.zeros_like(cy)
    yaw = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], dim=-1).view(b, 3, 3)
    rot = align @ yaw
    mu_s = torch.where(torch.isfinite(mu_s), mu_s, torch.zeros_like(mu_s))
    mu_cam = (w_norm[..., None] * d).sum(dim=1)
    mu_cam = torch.where(torch.isfinite(mu_cam), mu_cam, torch.zeros_like(mu_cam))
    t = mu_cam - (rot @ mu_s[..., None])[..., 0]
    return rot.to(out_dtype), t.to(out_dtype)
