"""Measured depth and the upright prior: the Procrustes solve about a known up direction, the
fusion of sensor depth with the predicted map, and their path through model and Predictor."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from roca_core.geometry.procrustes import rotation_y_to, weighted_procrustes, weighted_procrustes_upright
from roca_core.model.measured_inputs import fuse_measured_depth
from roca_core.predictor import Predictor, validate_depth


def _yaw(theta: torch.Tensor) -> torch.Tensor:
    c, s = theta.cos(), theta.sin()
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, z, s, z, o, z, -s, z, c], dim=-1).view(-1, 3, 3)


def _problem(seed: int, b: int = 6, n: int = 300, noise: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    up = torch.randn(b, 3, generator=g, dtype=torch.float64)
    up = up / up.norm(dim=1, keepdim=True)
    rot = rotation_y_to(up) @ _yaw(torch.rand(b, generator=g, dtype=torch.float64) * 2 * math.pi)
    t = torch.randn(b, 3, generator=g, dtype=torch.float64)
    src = torch.rand(b, n, 3, generator=g, dtype=torch.float64) - 0.5
    dst = src @ rot.transpose(1, 2) + t[:, None] + noise * torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    return up, rot, t, src, dst, torch.rand(b, n, generator=g, dtype=torch.float64)


def test_rotation_y_to_is_a_proper_rotation_with_up_as_its_y_column():
    up, *_ = _problem(0, b=64)
    up[0] = torch.tensor([1.0, 0, 0], dtype=up.dtype)  # the axis where the x reference switches
    up[1] = torch.tensor([0.0, -1, 0], dtype=up.dtype)
    a = rotation_y_to(up * 2.5)  # length does not matter
    assert torch.allclose(a[:, :, 1], up, atol=1e-12)
    assert torch.allclose(a.transpose(1, 2) @ a, torch.eye(3, dtype=a.dtype).expand_as(a), atol=1e-12)
    assert torch.allclose(torch.linalg.det(a), torch.ones(64, dtype=a.dtype), atol=1e-12)


def test_upright_solve_recovers_yaw_and_translation():
    up, rot, t, src, dst, w = _problem(1, noise=0.01)
    r, tt = weighted_procrustes_upright(src, dst, w, up)
    assert (r - rot).abs().max() < 0.01 and (tt - t).abs().max() < 0.01
    assert torch.allclose(r[:, :, 1], up, atol=1e-9)  # stands upright by construction


def test_upright_solve_beats_the_full_solve_on_noisy_correspondences():
    """The prior's point: with NOC-like noise the yaw-only solve errs less than the full one."""
    up, rot, t, src, dst, w = _problem(2, b=64, n=60, noise=0.3)
    def angle(r):
        cos = ((r.transpose(1, 2) @ rot).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
        return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    full, _ = weighted_procrustes(src, dst, w)
    upright, _ = weighted_procrustes_upright(src, dst, w, up)
    assert angle(upright).median() < 0.7 * angle(full).median()


def test_upright_solve_degenerate_inputs_stand_up_with_zero_gradient():
    up, _, _, src, dst, _ = _problem(3, b=2)
    src = src.clone().requires_grad_(True)
    r, t = weighted_procrustes_upright(src, dst, torch.zeros(2, src.shape[1], dtype=src.dtype), up)
    assert torch.allclose(r, rotation_y_to(up)) and torch.isfinite(t).all()
    r.sum().backward()
    assert torch.equal(src.grad, torch.zeros_like(src))
    with pytest.raises(ValueError, match="up must be"):
        weighted_procrustes_upright(src, dst, torch.ones(2, src.shape[1]), up[:1])


def test_upright_solve_gradient_is_finite_and_correct():
    up, _, _, src, dst, w = _problem(4, b=2, n=12, noise=0.05)
    src.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: weighted_procrustes_upright(s, dst, w, up)[0], (src,))


def test_fusion_keeps_measurements_and_fills_holes_with_the_prediction():
    pred = torch.full((2, 4, 6), 2.0)
    meas = torch.full((8, 12), 3.0)  # twice the network size: nearest resize
    meas[:4] = 0.0  # top half unknown
    meas[4:, :2] = float("nan")
    fused = fuse_measured_depth(pred, [meas, None])
    assert torch.equal(fused[1], pred[1])  # no measurement for image 1
    assert torch.all(fused[0, :2] == 2.0) and torch.all(fused[0, 2:, 1:] == 3.0)
    assert torch.all(fused[0, 2:, 0] == 2.0)  # NaN is a hole
    with pytest.raises(ValueError, match="2 images but 1"):
        fuse_measured_depth(pred, [meas])


@pytest.fixture(scope="module")
def predictor(random_small_checkpoint) -> Predictor:
    return Predictor(random_small_checkpoint, cad_database=False, device="cpu", score_threshold=0.0,
                     max_detections=6)


def _scene(h: int = 96, w: int = 128):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    K = np.array([[100.0, 0, (w - 1) / 2], [0, 100.0, (h - 1) / 2], [0, 0, 1]])
    return img, K


def test_predictor_uses_measured_depth_and_the_up_direction(predictor):
    img, K = _scene()
    h, w = img.shape[:2]
    plain = predictor.predict(img, K)
    depth = np.full((h, w), 1.5, np.float32)
    depth[:, : w // 2] = np.nan  # left half unknown: the prediction fills it
    up = np.array([0.0, -0.9, -0.3])
    dets = predictor.predict(img, K, depth=depth, up=up)
    assert len(dets) == len(plain) > 0
    fused = predictor.last_depth
    assert np.allclose(fused[:, w // 2 + 2:], 1.5)  # measured half kept (away from the seam)
    assert not np.allclose(fused[:, : w // 2 - 2], 1.5)
    u = up / np.linalg.norm(up)
    for d in dets:  # every object stands upright: its canonical y axis is the given up
        np.testing.assert_allclose(d.rotation[:, 1], u, atol=1e-4)
    assert any(abs(d.rotation[:, 1] @ u) < 0.999 for d in plain)  # not so without the prior


def test_predictor_rejects_bad_depth_and_up_with_reasons(predictor):
    img, K = _scene()
    with pytest.raises(ValueError, match="registered"):
        predictor.predict(img, K, depth=np.ones((10, 10), np.float32))
    with pytest.raises(ValueError, match="divide by 1000"):
        predictor.predict(img, K, depth=np.full(img.shape[:2], 1500, np.uint16))
    with pytest.raises(ValueError, match="non-zero 3-vector"):
        predictor.predict(img, K, up=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="non-zero 3-vector"):
        predictor.predict(img, K, up=[0.0, np.nan, 1.0])
    with pytest.warns(UserWarning, match="millimetres"):
        predictor.predict(img, K, depth=np.full(img.shape[:2], 1500.0, np.float32))
    d = validate_depth(np.array([[np.inf, -1.0], [np.nan, 2.0]]), 2, 2)
    assert d.dtype == np.float32 and d.tolist() == [[0.0, 0.0], [0.0, 2.0]]


def _zbuffer_depth(mesh_path: str, rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray,
                   K: np.ndarray, h: int, w: int) -> np.ndarray:
    """Depth of one CAD at a pose: dense surface samples splatted into a z-buffer."""
    import trimesh
    mesh = trimesh.load(mesh_path, force="mesh", process=False)
    pts, _ = trimesh.sample.sample_surface(mesh, 150_000, seed=0)
    cam = (np.asarray(pts) * scale) @ rotation.T + translation
    uv = cam @ K.T
    u = np.round(uv[:, 0] / uv[:, 2]).astype(int)
    v = np.round(uv[:, 1] / uv[:, 2]).astype(int)
    keep = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (cam[:, 2] > 0)
    depth = np.full((h, w), np.inf)
    np.minimum.at(depth, (v[keep], u[keep]), cam[keep, 2])
    depth[~np.isfinite(depth)] = 0.0
    return depth.astype(np.float32)


def test_predictor_refinement_moves_a_perturbed_pose_onto_the_depth(random_small_checkpoint):
    """Predictor._refine fits the retrieved CAD to the depth inside the object's mask: a pose
    10 cm / 10 deg / 10 % off comes back close to the truth, and is marked refined."""
    from roca_core.geometry.rotations import rotation_about_y_np
    from roca_core.predictor import Detection, compose_transform
    pred = Predictor(random_small_checkpoint, cad_database=None, device="cpu", refine=True)
    db = pred.cad_database
    cad = next(i for i, c in zip(db.ids, db.model_classes) if c == "chair")
    h, w = 120, 160
    K = np.array([[140.0, 0, 79.5], [0, 140.0, 59.5], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(2.7), -np.sin(2.7)], [0, np.sin(2.7), np.cos(2.7)]])
    R = tilt @ rotation_about_y_np(0.6)  # camera looking down at an upright chair
    t, s = np.array([0.1, 0.2, 2.5]), np.array([0.55, 0.9, 0.55])
    depth = _zbuffer_depth(db.mesh_paths[db.index_of(cad)], R, t, s, K, h, w)
    mask = depth > 0
    R0 = R @ rotation_about_y_np(np.radians(10))
    t0, s0 = t + np.array([0.1, 0.0, 0.0]), s * 1.1
    det = Detection(class_name="chair", class_index=5, score=0.9, box=np.zeros(4), mask=mask,
                    rotation=R0, quaternion=np.zeros(4), translation=t0, scale=s0,
                    transform=compose_transform(R0, t0, s0), cad_id=cad)
    pred._refine([det], depth, K)
    assert det.refined and pred.last_refine_seconds > 0
    angle = np.degrees(np.arccos(np.clip((np.trace(det.rotation.T @ R) - 1) / 2, -1, 1)))
    assert angle < 4.0 and np.linalg.norm(det.translation - t) < 0.04
    assert np.abs(det.scale / s - 1).mean() < 0.07  # from 0.10 (height, seen from above, moves least)
    np.testing.assert_allclose(det.transform, compose_transform(det.rotation, det.translation, det.scale))

    # When predict refines: refine=None only with measured depth, False never, True always.
    calls = []
    pred._refine = lambda dets, d, K_: calls.append(d)
    pred.score_threshold = 0.0
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    for refine, given, expect in ((None, None, 0), (None, depth, 1), (False, depth, 0), (True, None, 1)):
        pred.refine, calls[:] = refine, []
        pred.predict(img, K, depth=given)
        assert len(calls) == expect, (refine, given is not None)
    assert calls[0].shape == (h, w)  # refine=True without a measurement: the predicted depth
