"""Predictor: one image + intrinsics in, aligned and retrieved CAD models out.

Any image size and intrinsics: the image is resized to the model's input and K with it
(inside RocaModel); boxes and masks come back in the caller's pixels, poses in the caller's
camera frame (metric, so the resize does not change them). No detection is a normal result.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roca_core.checkpoint import CheckpointError, load_checkpoint
from roca_core.geometry.ground_plane import (GroundPlaneConfig, canonical_half_heights, floor_factors,
                                            floor_shift_to_box_bottom, validate_camera_height)
from roca_core.geometry.rotations import matrix_to_quat_np
from roca_core.paths import REPO_ROOT, share_dir

DEMO_CHECKPOINT = "models/roca_demo.safetensors"
# Surface samples of a CAD model that find its lowest point for the box-bottom slide: the first
# of CadSurfaceCache's 8192 seeded random samples (the number the measurement used).
BOTTOM_EDGE_POINTS = 800


def default_checkpoint() -> Path:
    """The committed demo model (source checkout or installed share dir)."""
    for base in (REPO_ROOT, share_dir()):
        p = Path(base) / DEMO_CHECKPOINT
        if p.is_file():
            return p
    raise CheckpointError(f"the demo model {DEMO_CHECKPOINT} does not exist (yet) in {REPO_ROOT}; "
                          "train one with roca-train or pass a checkpoint explicitly")


def resolve_device(device: "str | torch.device") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the CAD encoder weights: names the encoder that made a database's embeddings."""
    h = hashlib.sha256()
    for k, v in sorted(model.retrieval_head.cad_encoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return "model-" + h.hexdigest()[:16]


@dataclass
class Detection:
    class_name: str
    class_index: int  # 0-based into the model's class list
    score: float
    box: np.ndarray  # (4,) xyxy, caller's pixels
    mask: np.ndarray  # (H, W) bool, caller's image size
    rotation: np.ndarray  # (3, 3)
    quaternion: np.ndarray  # (4,) w, x, y, z
    translation: np.ndarray  # (3,) metres, camera frame (OpenCV)
    scale: np.ndarray  # (3,)
    transform: np.ndarray  # (4, 4) = T(t) R diag(s): CAD canonical -> camera
    cad_id: "str | None" = None
    mesh_path: "str | None" = None
    retrieval_distance: float = float("nan")
    valid: bool = True  # False when Procrustes fell back (too few mask pixels)
    refined: bool = False  # the pose was refined against depth (refine_poses accepted the fit)

    def to_dict(self, include_mask: bool = False) -> dict[str, Any]:
        """JSON-friendly dict; the mask as its pixel count (and as an RLE-free list only if asked)."""
        d: dict[str, Any] = {
            "class_name": self.class_name, "class_index": int(self.class_index), "score": float(self.score),
            "box": [float(x) for x in self.box], "mask_area": int(self.mask.sum()),
            "rotation": self.rotation.tolist(), "quaternion": [float(x) for x in self.quaternion],
            "translation": [float(x) for x in self.translation], "scale": [float(x) for x in self.scale],
            "transform": self.transform.tolist(), "cad_id": self.cad_id, "mesh_path": self.mesh_path,
            "retrieval_distance": None if np.isnan(self.retrieval_distance) else float(self.retrieval_distance),
            "valid": bool(self.valid), "refined": bool(self.refined),
        }
        if include_mask:
            d["mask"] = self.mask.astype(np.uint8).tolist()
        return d


def compose_transform(rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation, np.float64) @ np.diag(np.asarray(scale, np.float64))
    m[:3, 3] = translation
    return m


def validate_intrinsics(K: Any, height: int, width: int) -> np.ndarray:
    """(3, 3) finite K with positive focal lengths and the principal point inside the image."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"intrinsics must be a finite (3, 3) matrix, got shape {K.shape}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal lengths must be > 0, got fx={fx}, fy={fy}")
    if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
        raise ValueError(f"principal point ({cx}, {cy}) lies outside the {width}x{height} image")
    return K


# Median measured depth above this (metres) looks like millimetres passed as metres.
MILLIMETRE_SUSPECT_M = 100.0


def validate_depth(depth: Any, height: int, width: int) -> np.ndarray:
    """A measured depth map for an (height, width) image -> float32 (H, W) metres, unknown = 0.

    NaN, inf and values <= 0 mean "no measurement". Integer maps are refused (a 16UC1 image
    is millimetres: divide by 1000 first); a float map whose median looks like millimetres
    gets a warning, since every pose would come out 1000x too far.
    """
    d = np.asarray(depth)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth must be an (H, W) map, got shape {d.shape}")
    if d.shape != (height, width):
        raise ValueError(f"depth is {d.shape[1]}x{d.shape[0]} but the image is {width}x{height}: "
                         "only depth registered to the colour image is supported")
    if not np.issubdtype(d.dtype, np.floating):
        raise ValueError(f"depth must be float metres, got {d.dtype} (for 16-bit millimetre "
                         "depth images divide by 1000)")
    d = d.astype(np.float32, copy=True)
    valid = np.isfinite(d) & (d > 0)
    d[~valid] = 0.0
    if valid.any() and float(np.median(d[valid])) > MILLIMETRE_SUSPECT_M:
        warnings.warn(f"measured depth has a median of {float(np.median(d[valid])):.0f} m: it looks "
                      "like millimetres; pass metres", stacklevel=3)
    return d


def validate_up(up: Any) -> np.ndarray:
    """Camera-frame up direction (against gravity) -> unit float64 (3,)."""
    u = np.asarray(up, dtype=np.float64).reshape(-1)
    if u.shape != (3,) or not np.all(np.isfinite(u)) or np.linalg.norm(u) < 1e-6:
        raise ValueError(f"up must be a finite non-zero 3-vector in the camera frame, got {np.asarray(up).tolist()}")
    return u / np.linalg.norm(u)


class Predictor:
    """ROCA inference on single RGB images.

    checkpoint: path to a ``.safetensors`` checkpoint, a RocaModel instance, or None for the
    demo model. cad_database: a CadDatabase, a path to one, None for the embedded CAD
    library, or False for no retrieval. A database without embeddings from this checkpoint
    is embedded with its CAD encoder on load.

    refine: fit each retrieved CAD model to the object's depth points after ROCA's pose
    (:mod:`roca_core.geometry.depth_refinement`), keeping ROCA's pose where the fit is not
    better. None (default): only when ``predict`` is given a measured depth map; True: also
    against the predicted depth; False: never. Needs retrieval (a CAD database).
    """

    def __init__(self, checkpoint: "str | Path | torch.nn.Module | None" = None, cad_database: Any = None,
                 device: "str | torch.device" = "auto", score_threshold: float = 0.5,
                 mask_threshold: float = 0.7, max_detections: "int | None" = None,
                 refine: "bool | None" = None) -> None:
        from roca_core.model.roca import RocaModel

        if not 0.0 <= score_threshold <= 1.0 or not 0.0 <= mask_threshold <= 1.0:
            raise ValueError("score_threshold and mask_threshold must lie in [0, 1]")
        if max_detections is not None and max_detections < 0:
            raise ValueError(f"max_detections must be >= 0, got {max_detections}")
        self.device = resolve_device(device)
        if isinstance(checkpoint, RocaModel):
            self.model = checkpoint
            self.fingerprint = model_fingerprint(checkpoint)
            self.checkpoint_path: "Path | None" = None
            self.checkpoint_extra: dict = {}
        else:
            path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
            self.model, _, self.checkpoint_extra = load_checkpoint(path, device="cpu")
            from roca_core.data.cad_database import checkpoint_fingerprint
            self.fingerprint = checkpoint_fingerprint(path)
            self.checkpoint_path = path
        self.cfg = self.model.cfg
        self.cfg.align_mask_threshold = float(mask_threshold)
        self.model.to(self.device).eval()
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_detections = max_detections
        self.db = None
        self.last_depth: "np.ndarray | None" = None  # (H, W) metres of the last predict()
        self.refine = refine
        self.refinement_config = None  # RefinementConfig; None: its defaults
        self.last_refine_seconds = 0.0  # wall time of the last predict()'s refinement
        self._surfaces = None  # CadSurfaceCache of the current database, built on first use
        self.ground_plane = GroundPlaneConfig()  # how far predict(camera_height=...) trusts the floor
        self._half_heights: "np.ndarray | None" = None  # (M,) canonical half heights of the database's models
        self.set_cad_database(cad_database)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.cfg.class_names)

    @property
    def cad_database(self):
        """The CadDatabase retrieval searches (None when retrieval is off)."""
        return self.db

    def set_cad_database(self, db_or_path: Any) -> None:
        """CadDatabase, path, None (embedded library) or False (retrieval off)."""
        from roca_core.data.cad_database import CadDatabase

        if db_or_path is False:
            self.db = None
            self._half_heights = None
            return
        if db_or_path is None:
            from roca_core.data.cad_library import embedded_cad_database
            db = embedded_cad_database()
        elif isinstance(db_or_path, (str, Path)):
            db = CadDatabase.load(db_or_path)
        else:
            db = db_or_path
        dim = self.cfg.embedding_dim
        if (db.embeddings is None or db.embedding_source != self.fingerprint
                or db.embeddings.shape[1] != dim):
            db.set_embeddings(self._embed_voxels(db.voxels), self.fingerprint)
        self.db = db
        self._surfaces = None
        self._half_heights = canonical_half_heights(db.voxels)

    @torch.no_grad()
    def _embed_voxels(self, voxels: np.ndarray, batch: int = 64) -> np.ndarray:
        out = [np.zeros((0, self.cfg.embedding_dim), np.float32)]
        for s in range(0, len(voxels), batch):
            v = torch.from_numpy(np.asarray(voxels[s:s + batch], np.float32)).to(self.device)
            out.append(self.model.embed_cad(v).float().cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def predict(self, image_rgb: np.ndarray, K: np.ndarray, depth: "np.ndarray | None" = None,
                up: "np.ndarray | None" = None, camera_height: "float | None" = None) -> list[Detection]:
        """image_rgb: uint8 (H, W, 3) (float in [0, 1] also accepted); K: (3, 3) of this image.

        depth: optional (H, W) float metres registered to the image (a depth camera; 0, NaN,
        inf, negative = unknown): used wherever valid, the predicted depth fills the holes.
        up: optional camera-frame up direction (3,) (against gravity, e.g. from an IMU or the
        robot's TF; (0, -1, 0) for a level camera): the upright prior, which solves only the
        objects' yaw.
        camera_height: optional height of the camera above the floor in metres (a calibrated
        mount; needs ``up`` and a CAD database): the ground-plane prior, which scales each
        object about the camera until it stands on the floor, then slides it along the floor
        towards where its box's bottom edge puts it (:mod:`roca_core.geometry.ground_plane`,
        weighted by ``self.ground_plane``).
        """
        img = np.asarray(image_rgb)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
        h, w = img.shape[:2]
        if h == 0 or w == 0:
            raise ValueError(f"image is empty ({h}x{w} pixels)")
        K = validate_intrinsics(K, h, w)
        up = None if up is None else validate_up(up)
        if camera_height is not None:
            camera_height = validate_camera_height(camera_height)
            if up is None:
                raise ValueError("camera_height (the ground-plane prior) needs the up direction as well")
            if self.db is None:
                raise ValueError("camera_height (the ground-plane prior) needs a CAD database for the models' heights")
        extra: dict[str, Any] = {}
        measured = None if depth is None else validate_depth(depth, h, w)  # (H, W) metres, 0 unknown
        if measured is not None:
            extra["depths"] = [torch.from_numpy(measured).to(self.device)]
        if up is not None:
            extra["up"] = [torch.as_tensor(up, dtype=torch.float32, device=self.device)]
        t = torch.from_numpy(np.ascontiguousarray(img))
        t = t.float() / 255.0 if img.dtype == np.uint8 else t.float().clamp(0, 1)
        t = t.permute(2, 0, 1).to(self.device)
        out = self.model([t], intrinsics=[torch.as_tensor(K, dtype=torch.float32, device=self.device)],
                         min_score=self.score_threshold, **extra)[0]
        out = {k: v.cpu() for k, v in out.items()}
        self.last_depth = out["depth"].float().numpy()

        keep = torch.where(out["scores"] >= self.score_threshold)[0]
        keep = keep[torch.argsort(out["scores"][keep], descending=True)]
        if self.max_detections is not None:
            keep = keep[: self.max_detections]
        dets: list[Detection] = []
        for i in keep.tolist():
            ci = int(out["labels"][i]) - 1
            rot = out["rotations"][i].double().numpy()
            trans = out["translations"][i].double().numpy()
            scale = out["scales"][i].double().numpy()
            dets.append(Detection(
                class_name=self.class_names[ci], class_index=ci, score=float(out["scores"][i]),
                box=out["boxes"][i].double().numpy(), mask=(out["masks"][i] > self.mask_threshold).numpy(),
                rotation=rot, quaternion=matrix_to_quat_np(rot), translation=trans, scale=scale,
                transform=compose_transform(rot, trans, scale), valid=bool(out["valid"][i])))
            self._retrieve(dets[-1], out["noc_embeddings"][i].numpy())
        if camera_height is not None:
            self._stand_on_floor(dets, up, camera_height)
            self._slide_to_box_bottoms(dets, up, K, h)
        self.last_refine_seconds = 0.0
        if self.refine or (self.refine is None and measured is not None):
            self._refine(dets, measured if measured is not None else self.last_depth, K)
        return dets

    def half_height(self, det: Detection) -> float:
        """Half the canonical height of a detection's CAD model (its retrieved one; without one
        the mean of its class's models in the database, else the unit box's 0.5)."""
        if self.db is None:
            return 0.5
        if det.cad_id is not None:
            return float(self._half_heights[self.db.index_of(det.cad_id)])
        idx = self.db.indices_of_class(det.class_name)
        return float(self._half_heights[idx].mean()) if len(idx) else 0.5

    def _stand_on_floor(self, dets: list[Detection], up: np.ndarray, camera_height: float) -> None:
        """Scale each detection about the camera so that it stands on the floor (the
        retrieved CAD model's height; the class's mean height without one)."""
        if not dets:
            return
        cfg = self.ground_plane
        f = floor_factors(np.stack([d.translation for d in dets]), np.stack([d.scale for d in dets]),
                          np.array([self.half_height(d) for d in dets]), up, camera_height, cfg)
        for d, fi in zip(dets, f.tolist()):
            d.translation = d.translation * fi
            d.scale = d.scale * fi ** cfg.size_exponent
            d.transform = compose_transform(d.rotation, d.translation, d.scale)

    def _surface_cache(self):
        """The CadSurfaceCache of the current database (the slide and the refinement share it)."""
        from roca_core.geometry.depth_refinement import CadSurfaceCache

        if self._surfaces is None:
            self._surfaces = CadSurfaceCache(self.db)
        return self._surfaces

    def _slide_to_box_bottoms(self, dets: list[Detection], up: np.ndarray, K: np.ndarray, image_height: int) -> None:
        """After :meth:`_stand_on_floor`: move each detection along the floor
        ``ground_plane.bottom_edge_weight`` of the way to where its CAD model's lowest point meets
        its box's bottom edge (:func:`~roca_core.geometry.ground_plane.floor_shift_to_box_bottom`);
        not for boxes the image's bottom border cuts, nor without a retrieved model."""
        cfg = self.ground_plane
        if cfg.bottom_edge_weight <= 0.0 or self.db is None:
            return
        surfaces = self._surface_cache()
        for d in dets:
            if d.cad_id is None or float(d.box[3]) >= image_height - 1 - cfg.bottom_edge_margin_px:
                continue
            try:
                surface = surfaces(d.cad_id)
            except (OSError, ValueError) as exc:  # a database without its mesh files: the floor alone
                warnings.warn(f"ground-plane prior: no surface for CAD model {d.cad_id} ({exc}); "
                              "it is not slid onto its box's bottom edge", stacklevel=2)
                continue
            canonical = surface.points[:BOTTOM_EDGE_POINTS].numpy().astype(np.float64)
            points = (canonical * d.scale) @ d.rotation.T + d.translation
            move = floor_shift_to_box_bottom(points, d.translation, float(d.box[3]), K, up,
                                             cfg.bottom_edge_max_shift_m)
            if move is not None:
                d.translation = d.translation + cfg.bottom_edge_weight * move
                d.transform = compose_transform(d.rotation, d.translation, d.scale)

    def _refine(self, dets: list[Detection], depth: np.ndarray, K: np.ndarray) -> None:
        """Fit the retrieved CAD of every detection to its masked depth points, in one batch."""
        from roca_core.geometry.depth_refinement import masked_depth_points, refine_poses

        todo = [d for d in dets if d.cad_id is not None]
        if not todo or self.db is None:
            return
        start = time.perf_counter()
        surfaces = self._surface_cache()
        if depth.shape != todo[0].mask.shape:
            raise ValueError(f"refinement depth {depth.shape} does not match the masks {todo[0].mask.shape}")
        # eroded masks: predicted masks bleed onto the background behind the object's edges
        points = [masked_depth_points(depth, K, d.mask, erode_px=1) for d in todo]
        res = refine_poses(np.stack([d.rotation for d in todo]), np.stack([d.translation for d in todo]),
                           np.stack([d.scale for d in todo]), [surfaces(d.cad_id) for d in todo],
                           points, self.refinement_config)
        for k, d in enumerate(todo):
            if res.accepted[k]:
                d.rotation = np.asarray(res.rotations[k], np.float64)
                d.translation = np.asarray(res.translations[k], np.float64)
                d.scale = np.asarray(res.scales[k], np.float64)
                d.quaternion = matrix_to_quat_np(d.rotation)
                d.transform = compose_transform(d.rotation, d.translation, d.scale)
                d.refined = True
        self.last_refine_seconds = time.perf_counter() - start

    def _retrieve(self, det: Detection, embedding: np.ndarray) -> None:
        if self.db is None or det.class_name not in self.db.class_names:
            return
        ids, dist = self.db.lookup(det.class_name, embedding[None], k=1)
        if ids[0]:
            det.cad_id = ids[0][0]
            det.mesh_path = self.db.mesh_paths[self.db.index_of(det.cad_id)]
            det.retrieval_distance = float(dist[0, 0])
