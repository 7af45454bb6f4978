"""Pose refinement against the retrieved CAD model: fit its surface to the object's depth points.

ROCA's pose (rotation R, translation t, anisotropic scale s; ``x = R diag(s) m + t`` for a
canonical CAD point m) is refined by robust point-to-plane ICP, batched over objects:

* Correspondences go from each observed depth point to the CAD surface (the depth shows only
  the visible side, so every observed point should lie on the model, not the other way round).
  The nearest surface sample is looked up in a precomputed canonical grid of candidate
  samples (:class:`CadSurface`), so one iteration costs O(points), not O(points x samples).
* Levenberg-Marquardt steps over 9 parameters: rotation about the object's centre,
  translation and log-scale per object axis, with Tukey weights whose scale anneals from
  ``robust_scale_start_m`` down to the sensor noise, a gate on the point-to-point distance,
  and a weak prior keeping the scale near ROCA's where the depth cannot tell (e.g. the depth
  of a cabinet seen from the front).
* Yaw hypotheses: ROCA's rotation errors are mostly about the up axis, so the fit also starts
  from the given rotation turned about the CAD's up axis (``yaw_hypotheses`` over the full
  turn: every 45 deg by default, since one fit converges from about 20 deg off). The CAD's
  symmetry removes the turns that map the model onto itself (2-fold: only turns below 180 deg,
  4-fold: below 90 deg, infinite: none), so symmetric flips are neither tried twice nor
  penalised: the residual of a symmetric model is the same for all of them.
  Every yaw is fitted briefly to a subsample; the best other yaw, where it fits clearly better,
  is then fitted fully beside the given one and kept only where the given yaw's fit leaves
  many depth points off the model (``keep_given_inliers``) and the other still fits
  ``hypothesis_margin`` better (a nearly symmetric model's flip fits about as well).
* Acceptance: the same robust residual (truncated quadratic of the point-to-plane distance,
  scale growing with the depth's squared distance like stereo noise) is computed for ROCA's
  pose and for the refined one; the refined pose is kept only where it is lower and enough
  depth points lie on the fitted model (``min_inlier_fraction``); otherwise ROCA's pose stays.

Use: ``surfaces = CadSurfaceCache(db)`` once, then per image
``refine_poses(R, t, s, [surfaces(cad_id) ...], [masked_depth_points(depth, K, mask) ...])``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from roca_core.classes import Symmetry


@dataclass
class RefinementConfig:
    """Iteration budget, robust scales and acceptance rule of :func:`refine_poses`."""

    iterations: int = 6                  # LM iterations of the kept hypothesis
    hypothesis_iterations: int = 3       # LM iterations every yaw hypothesis gets first
    yaw_hypotheses: int = 8              # starting yaws over a full turn (1: only the given rotation)
    hypothesis_margin: float = 0.15      # another yaw must lower the residual by this fraction ...
    keep_given_inliers: float = 0.9      # ... and is not even considered where the given yaw's fit has this inlier share
    max_depth_points: int = 300          # depth points per object (a seeded subsample)
    hypothesis_points: int = 64          # of those, the ones the yaw hypotheses are fitted to
    min_depth_points: int = 30           # fewer: the object is left as it is
    robust_scale_start_m: float = 0.25   # Tukey scale of the first iteration
    robust_scale_end_m: float = 0.02     # ... annealed geometrically to this (per point at least the residual scale)
    gate_factor: float = 2.0             # correspondences farther than gate_factor x Tukey scale are ignored
    residual_scale_m: float = 0.02       # acceptance residual scale at zero distance ...
    residual_scale_per_m2: float = 0.008  # ... plus this times z^2 (about 2 sigma of a D435)
    min_inlier_fraction: float = 0.5     # share of depth points within the residual scale of the fit
    max_scale_change: float = 1.5        # refined s / ROCA's s per axis lies in [1/x, x]
    scale_prior_m2: float = 1e-3         # weight of |log(s / s_roca)|^2, per unit robust weight
    damping: float = 3e-2                # LM damping relative to the diagonal of J^T W J (and its mean)
    max_step_rad: float = 0.25           # per-iteration limits of the rotation ...
    max_step_m: float = 0.15             # ... and translation steps
    seed: int = 0                        # of the depth point subsample
    # torch intra-op threads during the call (None: leave torch's setting). The tensors are
    # small, so one thread beats two, by far when the cores are busy with other work; the
    # setting is process-wide while the call runs, and restored afterwards.
    threads: int | None = 1


@dataclass
class CadSurface:
    """Surface samples of one CAD model in its canonical frame, with a nearest-sample grid.

    ``candidates[ix, iy, iz]`` holds the indices of the samples nearest to that cell's centre
    (cell ``i`` covers ``origin + pitch * [i, i + 1)``); points outside the grid use the
    nearest border cell.
    """

    points: torch.Tensor      # (M, 3) float32 canonical
    normals: torch.Tensor     # (M, 3) float32 unit (sign arbitrary: point-to-plane ignores it)
    candidates: torch.Tensor  # (G, G, G, C) int16 (int32 beyond 32767 samples) indices into points
    origin: torch.Tensor      # (3,) float32 corner of the grid
    pitch: float
    symmetry: Symmetry = Symmetry.NONE

    @property
    def grid_size(self) -> int:
        return int(self.candidates.shape[0])


def cad_surface_from_mesh(mesh, symmetry: "Symmetry | str | int" = Symmetry.NONE, num_points: int = 8192,
                          grid_size: int = 32, num_candidates: int = 6, seed: int = 0) -> CadSurface:
    """Area-uniform samples (seeded) of a trimesh mesh in its canonical frame and their grid."""
    from scipy.spatial import cKDTree

    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    tri = vertices[faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if len(faces) == 0 or area.sum() <= 0:
        raise ValueError("CAD mesh has no surface to sample")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(faces), size=num_points, p=area / area.sum())
    a, b = rng.random((2, num_points, 1))
    flip = (a + b) > 1
    a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
    points = tri[face, 0] + a * (tri[face, 1] - tri[face, 0]) + b * (tri[face, 2] - tri[face, 0])
    normals = cross[face] / np.maximum(area[face, None], 1e-30)

    lo, hi = points.min(0), points.max(0)
    pad = 0.25 * float((hi - lo).max())
    origin = lo - pad
    pitch = float((hi - lo).max() + 2 * pad) / grid_size
    centres = origin + pitch * (np.stack(np.meshgrid(*[np.arange(grid_size)] * 3, indexing="ij"), -1) + 0.5)
    k = min(num_candidates, num_points)
    _, idx = cKDTree(points).query(centres.reshape(-1, 3), k=k)
    index_type = np.int16 if num_points <= np.iinfo(np.int16).max else np.int32  # small tables concatenate fast
    return CadSurface(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(normals.astype(np.float32)),
                      torch.from_numpy(np.asarray(idx, index_type).reshape(grid_size, grid_size, grid_size, k)),
                      torch.from_numpy(origin.astype(np.float32)), pitch, Symmetry.from_tag(symmetry))


class CadSurfaceCache:
    """``cache(cad_id) -> CadSurface`` for the models of a CadDatabase, built on first use
    (mesh file from ``db.mesh_paths``, symmetry from ``db.symmetries``; ~50 ms CPU per model
    plus loading the mesh, ~0.6 MB each)."""

    def __init__(self, db, num_points: int = 8192, grid_size: int = 32, num_candidates: int = 6):
        self.db = db
        self.options = dict(num_points=num_points, grid_size=grid_size, num_candidates=num_candidates)
        self._surfaces: dict[str, CadSurface] = {}

    def __call__(self, cad_id: str) -> CadSurface:
        if cad_id not in self._surfaces:
            import trimesh

            i = self.db.index_of(cad_id)
            mesh = trimesh.load(self.db.mesh_paths[i], force="mesh", process=False)
            self._surfaces[cad_id] = cad_surface_from_mesh(mesh, self.db.symmetries[i], **self.options)
        return self._surfaces[cad_id]


def masked_depth_points(depth: np.ndarray, K: np.ndarray, mask: np.ndarray, erode_px: int = 0) -> np.ndarray:
    """(P, 3) float32 camera-frame points of the mask's pixels with valid depth (finite, > 0).

    depth: (H, W) metres; K: (3, 3); mask: (H, W) bool. ``erode_px`` shrinks the mask first:
    predicted masks bleed onto the background, whose depth then pulls the fit (1 to 2 pixels
    help there; exact masks lose edge points for nothing)."""
    depth = np.asarray(depth)
    mask = np.asarray(mask, bool)
    if depth.shape != mask.shape:
        raise ValueError(f"depth {depth.shape} and mask {mask.shape} differ in size")
    if erode_px > 0:
        import cv2

        kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
        mask = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    ok = np.isfinite(z) & (z > 0)
    u, v, z = u[ok], v[ok], z[ok]
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1).astype(np.float32)


@dataclass
class RefinementResult:
    """Per object (N of them); poses are the refined ones where ``accepted``, else the input."""

    rotations: np.ndarray      # (N, 3, 3)
    translations: np.ndarray   # (N, 3)
    scales: np.ndarray         # (N, 3)
    accepted: np.ndarray       # (N,) bool
    residual_before: np.ndarray  # (N,) robust residual of the input pose in [0, 1] (NaN: too few points)
    residual_after: np.ndarray   # (N,) of the fitted pose (even where it was not accepted)
    inlier_fraction: np.ndarray  # (N,) of the fitted pose
    num_points: np.ndarray     # (N,) depth points used
    yaw_offset_deg: np.ndarray  # (N,) the starting yaw (about the CAD's up axis) of the fit


@dataclass
class _Batch:
    """Rows = (object, hypothesis) pairs; everything padded to P depth points."""

    points: torch.Tensor     # (B, P, 3) depth points, camera frame
    valid: torch.Tensor      # (B, P) bool
    noise_scale: torch.Tensor  # (B, P) acceptance residual scale of each point
    grid_origin: torch.Tensor  # (B, 1, 3) of the row's CAD surface grid
    grid_inv_pitch: torch.Tensor  # (B, 1, 1)
    grid_last: torch.Tensor  # (B, 1, 1) int64: G - 1
    grid_strides: torch.Tensor  # (B, 1, 3) int64: (G^2, G, 1)
    grid_offset: torch.Tensor  # (B, 1) int64: first cell of the row's surface in the tables
    point_offset: torch.Tensor  # (B, 1, 1) int64: first sample of the row's surface in the tables
    R: torch.Tensor          # (B, 3, 3)
    t: torch.Tensor          # (B, 3)
    s: torch.Tensor          # (B, 3)
    s0: torch.Tensor         # (B, 3) ROCA's scale (prior and bounds)

    def rows(self, index: torch.Tensor) -> "_Batch":
        return _Batch(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


class _SurfaceTables:
    """Surfaces concatenated so that rows of one batch can gather from any of them."""

    def __init__(self, surfaces: list[CadSurface]):
        self.surfaces = surfaces  # holding them keeps their ids valid for the lookup below
        self.index_of = {id(s): j for j, s in enumerate(surfaces)}
        self.points = torch.cat([s.points for s in surfaces])                     # (sum M, 3)
        self.normals = torch.cat([s.normals for s in surfaces])
        self.point_offset = torch.tensor(np.cumsum([0] + [len(s.points) for s in surfaces])[:-1], dtype=torch.int64)
        c = max(s.candidates.shape[-1] for s in surfaces)
        wide = any(s.candidates.dtype != torch.int16 for s in surfaces)
        cand = []
        for s in surfaces:  # indices stay local to their surface: point_offset is added per row
            flat = s.candidates.reshape(-1, s.candidates.shape[-1])
            if flat.shape[1] < c:
                flat = torch.cat([flat, flat[:, :1].expand(-1, c - flat.shape[1])], 1)  # pad by repeating
            cand.append(flat.to(torch.int32) if wide else flat)
        cell_offsets = np.cumsum([0] + [s.grid_size ** 3 for s in surfaces])[:-1]
        self.candidates = torch.cat(cand)                                       # (sum G^3, C)
        self.cell_offset = torch.tensor(cell_offsets, dtype=torch.int64)         # (U,)
        self.grid_size = torch.tensor([s.grid_size for s in surfaces], dtype=torch.int64)
        self.origin = torch.stack([s.origin for s in surfaces])                   # (U, 3)
        self.pitch = torch.tensor([s.pitch for s in surfaces], dtype=torch.float32)


_MAX_TABLE_SURFACES = 32
_LAST_TABLES: list[_SurfaceTables] = []  # the most recent one, grown over the calls of a stream


def _surface_tables(surfaces: list[CadSurface]) -> _SurfaceTables:
    """Tables holding (at least) these surfaces. Concatenating costs ~2 ms per surface, so the
    last tables are reused while they hold every surface of a call, and a miss builds the union
    with the last tables' surfaces (up to 32): in a video stream the recurring CADs end up in
    one table and misses become rare."""
    last = _LAST_TABLES[0] if _LAST_TABLES else None
    new = [s for s in surfaces if last is None or id(s) not in last.index_of]
    if last is not None and not new:
        return last
    union = (last.surfaces if last is not None else []) + new
    if len(union) > _MAX_TABLE_SURFACES:
        union = surfaces
    _LAST_TABLES[:] = [_SurfaceTables(union)]
    return _LAST_TABLES[0]


def _correspondences(b: _Batch, tab: _SurfaceTables) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest candidate sample of each depth point, all (B, P, 3): the scaled model point
    ``diag(s) m`` (canonical axes), its offset ``a = R diag(s) m`` from t in the camera frame,
    and the camera-frame unit normal n there."""
    q = torch.bmm(b.points - b.t[:, None], b.R) / b.s[:, None]  # canonical coordinates (B, P, 3)
    cell = ((q - b.grid_origin) * b.grid_inv_pitch).long()  # truncation: negatives clamp to 0 below
    cell = torch.minimum(cell.clamp_min(0), b.grid_last)
    nb, npts = q.shape[:2]
    flat = (b.grid_offset + (cell * b.grid_strides).sum(-1)).view(-1)
    cand = tab.candidates.index_select(0, flat).view(nb, npts, -1).long() + b.point_offset  # (B, P, C)
    # metric distance |R diag(s) (m - q)| = |diag(s) (m - q)|: no rotation needed
    m = tab.points.index_select(0, cand.view(-1)).view(nb, npts, -1, 3)              # (B, P, C, 3)
    d2 = ((m - q[:, :, None]) * b.s[:, None, None]).square().sum(-1)                 # (B, P, C)
    nearest = cand.gather(2, d2.argmin(-1, keepdim=True)).view(-1)                   # (B * P,)
    sm = tab.points.index_select(0, nearest).view(nb, npts, 3) * b.s[:, None]
    rt = b.R.transpose(1, 2)
    normal = tab.normals.index_select(0, nearest).view(nb, npts, 3)
    n = torch.nn.functional.normalize(torch.bmm(normal / b.s[:, None], rt), dim=-1)
    return sm, torch.bmm(sm, rt), n


def _fit_residual(b: _Batch, tab: _SurfaceTables) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust residual in [0, 1] (mean truncated quadratic of the point-to-plane distance over
    the per-point noise scale; points farther than twice that scale from their sample count
    fully) and the inlier fraction; both (B,)."""
    _, a, n = _correspondences(b, tab)
    c = b.noise_scale
    diff = b.points - b.t[:, None] - a
    r = (diff * n).sum(-1)
    near = diff.square().sum(-1) <= (2 * c).square()
    cost = torch.where(near & b.valid, (r / c).square().clamp(max=1.0), b.valid.float())
    count = b.valid.sum(1).clamp_min(1)
    inlier = near & (r.abs() < c) & b.valid
    return cost.sum(1) / count, inlier.sum(1) / count


def _rotation_from_vector(w: torch.Tensor) -> torch.Tensor:
    """(B, 3) rotation vectors -> (B, 3, 3) (Rodrigues; a zero vector gives the identity)."""
    angle = w.norm(dim=1).clamp_min(1e-12)[:, None, None]   # (B, 1, 1)
    z = torch.zeros_like(w[:, 0])
    k = torch.stack([z, -w[:, 2], w[:, 1], w[:, 2], z, -w[:, 0], -w[:, 1], w[:, 0], z], 1).view(-1, 3, 3) / angle
    return _EYE3 + torch.sin(angle) * k + (1 - torch.cos(angle)) * torch.bmm(k, k)


_EYE3 = torch.eye(3)
_EYE9 = torch.eye(9)
_SCALE_DIMS = torch.tensor([0.0] * 6 + [1.0] * 3)


def _lm_step(b: _Batch, tab: _SurfaceTables, robust_scale: float, cfg: RefinementConfig) -> None:
    """One Levenberg-Marquardt step of the robust point-to-plane fit, in place on b.R, b.t, b.s.

    Residual r = n . (p - x) with x = exp([w]) R diag(s e^sigma) m + t + dt; its Jacobian with
    respect to (w, dt, sigma) is -(a x n, n, (R^T n) * diag(s) m), a = R diag(s) m."""
    sm, a, n = _correspondences(b, tab)
    c = b.noise_scale.clamp_min(robust_scale)                  # (B, P) Tukey scale
    diff = b.points - b.t[:, None] - a
    r = (diff * n).sum(-1)                                      # (B, P)
    keep = b.valid & (diff.square().sum(-1) < (cfg.gate_factor * c).square())
    w = torch.where(keep, (1 - (r / c).square()).clamp_min(0).square(), 0.0)  # Tukey weights
    J = torch.cat([torch.linalg.cross(a, n), n, torch.bmm(n, b.R) * sm], -1)  # (B, P, 9) = -Jacobian
    jw_t = (J * w[..., None]).transpose(1, 2)
    H = torch.bmm(jw_t, J)                                      # (B, 9, 9)
    w_sum = w.sum(1, keepdim=True)                              # (B, 1)
    log_dev = torch.log(b.s / b.s0)
    prior = cfg.scale_prior_m2 * w_sum * _SCALE_DIMS            # (B, 9): scale axes only
    grad = torch.cat([torch.zeros_like(log_dev), torch.zeros_like(log_dev), log_dev], 1) * prior \
        - torch.bmm(jw_t, r[..., None])[..., 0]                 # (B, 9)
    diag = H.diagonal(dim1=1, dim2=2)
    damp = cfg.damping * (diag + diag.mean(1, keepdim=True)) + prior + 1e-9
    delta = -torch.linalg.solve_ex(H + damp[:, :, None] * _EYE9, grad)[0]  # non-finite results are dropped below
    delta = torch.where((w_sum > 0) & torch.isfinite(delta).all(1, keepdim=True), delta, 0.0)
    shrink = torch.minimum(cfg.max_step_rad / delta[:, :3].norm(dim=1, keepdim=True).clamp_min(1e-12),
                           cfg.max_step_m / delta[:, 3:6].norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    delta = delta * shrink
    b.R = torch.bmm(_rotation_from_vector(delta[:, :3]), b.R)
    b.t = b.t + delta[:, 3:6]
    bound = math.log(cfg.max_scale_change)
    b.s = b.s0 * torch.exp((log_dev + delta[:, 6:]).clamp(-bound, bound))


def _yaw_offsets(symmetry: Symmetry, count: int) -> list[float]:
    """Starting yaws (radians) over a full turn that the symmetry does not make redundant."""
    period = 0.0 if symmetry == Symmetry.ROTATE_UP_INF else 2 * math.pi / max(symmetry.num_rotations, 1)
    return [2 * math.pi * j / count for j in range(max(count, 1)) if 2 * math.pi * j / count < period - 1e-6] or [0.0]


def _yaw_matrix(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _as_tensor(x, shape_tail: tuple[int, ...], name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.dim() != 1 + len(shape_tail) or t.shape[1:] != shape_tail:
        raise ValueError(f"{name} must be (N, {', '.join(map(str, shape_tail))}), got {tuple(t.shape)}")
    return t


def _subsampled_clouds(depth_points: Sequence, cfg: RefinementConfig) -> list[torch.Tensor]:
    """Finite points with z > 0, at most ``max_depth_points`` of them, in a seeded random order
    (so that any prefix is a subsample too)."""
    rng = np.random.default_rng(cfg.seed)
    clouds = []
    for pts in depth_points:
        p = np.asarray(pts, dtype=np.float32).reshape(-1, 3)
        ok = np.isfinite(p).all(1) & (p[:, 2] > 0)
        if not ok.all():
            p = p[ok]
        pick = rng.choice(len(p), min(len(p), cfg.max_depth_points), replace=False)  # shuffled
        clouds.append(torch.from_numpy(p[pick]))
    return clouds


def _object_batch(R0, t0, s0, clouds: list[torch.Tensor], surfaces: list[CadSurface],
                  cfg: RefinementConfig) -> tuple[_Batch, _SurfaceTables]:
    """One row per object, depth points padded to the largest cloud."""
    tab = _surface_tables(list({id(s): s for s in surfaces}.values()))
    p_max = max(len(c) for c in clouds)
    points = torch.zeros(len(clouds), p_max, 3)
    valid = torch.zeros(len(clouds), p_max, dtype=torch.bool)
    for k, c in enumerate(clouds):
        points[k, :len(c)] = c
        valid[k, :len(c)] = True
    noise = cfg.residual_scale_m + cfg.residual_scale_per_m2 * points[..., 2].square()
    u = torch.tensor([tab.index_of[id(s)] for s in surfaces])
    g = tab.grid_size[u].view(-1, 1, 1)
    batch = _Batch(points, valid, noise, tab.origin[u][:, None], (1.0 / tab.pitch[u]).view(-1, 1, 1), g - 1,
                   torch.cat([g * g, g, torch.ones_like(g)], -1), tab.cell_offset[u][:, None],
                   tab.point_offset[u].view(-1, 1, 1), R0, t0, s0, s0)
    return batch, tab


@contextlib.contextmanager
def _torch_threads(count: int | None):
    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def refine_poses(rotations, translations, scales, surfaces: Sequence[CadSurface],
                 depth_points: Sequence, cfg: RefinementConfig | None = None) -> RefinementResult:
    """Fit each object's CAD surface to its depth points, starting from the given pose.

    rotations: (N, 3, 3), translations: (N, 3) metres, scales: (N, 3) (numpy or torch; the
    convention ``x = R diag(s) m + t`` of the CAD's canonical points m); surfaces: N
    :class:`CadSurface` (the retrieved CAD of each object; the same object may repeat);
    depth_points: N arrays (P_i, 3) of the object's depth points in the camera frame
    (metres, unknown pixels excluded, e.g. :func:`masked_depth_points`).
    Objects with fewer than ``cfg.min_depth_points`` points keep their pose (not accepted).
    """
    cfg = cfg or RefinementConfig()
    with _torch_threads(cfg.threads), torch.inference_mode():
        return _refine_poses(rotations, translations, scales, surfaces, depth_points, cfg)


def _refine_poses(rotations, translations, scales, surfaces: Sequence[CadSurface], depth_points: Sequence,
                  cfg: RefinementConfig) -> RefinementResult:
    R0 = _as_tensor(rotations, (3, 3), "rotations")
    n_obj = R0.shape[0]
    t0 = _as_tensor(translations, (3,), "translations")
    s0 = _as_tensor(scales, (3,), "scales")
    if len(t0) != n_obj or len(s0) != n_obj or len(surfaces) != n_obj or len(depth_points) != n_obj:
        raise ValueError(f"need one pose, surface and depth point set per object: {n_obj} rotations, "
                         f"{len(t0)} translations, {len(s0)} scales, {len(surfaces)} surfaces, "
                         f"{len(depth_points)} depth point sets")
    if not (torch.isfinite(s0).all() and (s0 > 0).all()):
        raise ValueError("scales must be finite and > 0")
    result = RefinementResult(  # the input poses, exactly, until a fit is accepted
        np.array(rotations, dtype=np.float64).reshape(n_obj, 3, 3),
        np.array(translations, dtype=np.float64).reshape(n_obj, 3),
        np.array(scales, dtype=np.float64).reshape(n_obj, 3),
        np.zeros(n_obj, bool), np.full(n_obj, np.nan), np.full(n_obj, np.nan), np.full(n_obj, np.nan),
        np.zeros(n_obj, np.int64), np.zeros(n_obj))
    clouds = _subsampled_clouds(depth_points, cfg)
    result.num_points[:] = [len(c) for c in clouds]
    finite = (torch.isfinite(R0).flatten(1).all(1) & torch.isfinite(t0).all(1)).tolist()
    todo = [i for i in range(n_obj) if len(clouds[i]) >= cfg.min_depth_points and finite[i]]
    if not todo:
        return result

    objects, tab = _object_batch(R0[todo], t0[todo], s0[todo], [clouds[i] for i in todo],
                                 [surfaces[i] for i in todo], cfg)
    residual_before = _fit_residual(objects, tab)[0].tolist()
    schedule = np.geomspace(cfg.robust_scale_start_m, cfg.robust_scale_end_m,
                            cfg.hypothesis_iterations + cfg.iterations).tolist()

    # Every yaw hypothesis: a short fit on the first hypothesis_points depth points.
    row_object, row_yaw = [], []
    for k, i in enumerate(todo):
        for yaw in _yaw_offsets(surfaces[i].symmetry, cfg.yaw_hypotheses):
            row_object.append(k)
            row_yaw.append(yaw)
    batch = objects.rows(torch.tensor(row_object))
    batch.R = torch.bmm(batch.R, torch.stack([_yaw_matrix(a) for a in row_yaw]))
    full = (batch.points, batch.valid, batch.noise_scale)
    few = max(cfg.hypothesis_points, cfg.min_depth_points)
    batch.points, batch.valid, batch.noise_scale = (x[:, :few] for x in full)
    for scale in schedule[:cfg.hypothesis_iterations]:
        _lm_step(batch, tab, scale, cfg)

    # The given yaw always goes on; the best other yaw too where it fits clearly better so far
    # (short fits on few points can favour the flip of a nearly symmetric model: decide later).
    hyp_residual = _fit_residual(batch, tab)[0].tolist()
    final_rows, given_row, other_row = [], [], {}
    first = 0
    for k in range(len(todo)):
        rows = range(first, first + row_object.count(k))
        first += len(rows)
        best = min(rows, key=lambda j: hyp_residual[j])
        given_row.append(len(final_rows))
        final_rows.append(rows[0])
        if best != rows[0] and hyp_residual[best] < (1 - cfg.hypothesis_margin) * hyp_residual[rows[0]]:
            other_row[k] = len(final_rows)
            final_rows.append(best)
    batch.points, batch.valid, batch.noise_scale = full
    batch = batch.rows(torch.tensor(final_rows))
    for scale in schedule[cfg.hypothesis_iterations:]:
        _lm_step(batch, tab, scale, cfg)

    # Keep the other yaw only where the given one fits badly and the other clearly better;
    # accept a fit that beats the input.
    residual, inliers = (x.tolist() for x in _fit_residual(batch, tab))
    for k, i in enumerate(todo):
        row = given_row[k]
        if k in other_row and inliers[row] < cfg.keep_given_inliers \
                and residual[other_row[k]] < (1 - cfg.hypothesis_margin) * residual[row]:
            row = other_row[k]
        result.residual_before[i] = residual_before[k]
        result.residual_after[i] = residual[row]
        result.inlier_fraction[i] = inliers[row]
        result.yaw_offset_deg[i] = math.degrees(row_yaw[final_rows[row]])
        if residual[row] < residual_before[k] and inliers[row] >= cfg.min_inlier_fraction:
            result.accepted[i] = True
            result.rotations[i] = batch.R[row].double().numpy()
            result.translations[i] = batch.t[row].double().numpy()
            result.scales[i] = batch.s[row].double().numpy()
    return result
