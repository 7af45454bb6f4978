"""Random rooms, furniture layouts and camera poses for the synthetic data set (pure numpy).

World frame: y up, floor at y = 0, room centred at the origin. A scene (room + objects +
lighting) is shared by the images of one scene id; every image draws its own camera, aimed
at one of the objects, like frames of a ScanNet video. Objects stand on the floor with random
yaw and never interpenetrate: their 2D footprints (oriented rectangles, plus a margin) are
checked with the separating-axis test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from roca_core.classes import Symmetry
from roca_core.data.cad_library import CadModel
from roca_core.data.config import RenderConfig
from roca_core.geometry.rotations import rotation_about_y_np

# Relative frequency of classes in sampled scenes (chairs and tables dominate real rooms).
CLASS_WEIGHTS = {"chair": 3.0, "table": 2.0, "cabinet": 1.5, "bookcase": 1.0, "display": 1.0,
                 "sofa": 1.0, "bin": 1.0, "bed": 0.7, "bathtub": 0.7}

# (base colour, secondary colour) palettes; picked per object and jittered.
OBJECT_PALETTES = {
    "wood": ((0.55, 0.36, 0.2), (0.35, 0.22, 0.12)), "light_wood": ((0.8, 0.65, 0.45), (0.65, 0.5, 0.32)),
    "white": ((0.88, 0.88, 0.86), (0.75, 0.75, 0.74)), "black": ((0.12, 0.12, 0.13), (0.2, 0.2, 0.22)),
    "grey": ((0.5, 0.5, 0.52), (0.38, 0.38, 0.4)), "blue_fabric": ((0.2, 0.3, 0.55), (0.15, 0.22, 0.4)),
    "red_fabric": ((0.6, 0.15, 0.12), (0.45, 0.1, 0.08)), "green_fabric": ((0.3, 0.45, 0.25), (0.2, 0.32, 0.18)),
    "beige_fabric": ((0.75, 0.68, 0.55), (0.6, 0.54, 0.43)), "metal": ((0.65, 0.67, 0.7), (0.5, 0.52, 0.55)),
}
CLASS_PALETTES = {
    "chair": ["wood", "light_wood", "black", "blue_fabric", "red_fabric", "grey"],
    "table": ["wood", "light_wood", "white", "black"], "cabinet": ["wood", "light_wood", "white", "grey"],
    "bookcase": ["wood", "light_wood", "white", "black"], "display": ["black", "grey"],
    "sofa": ["blue_fabric", "red_fabric", "green_fabric", "beige_fabric", "grey"],
    "bin": ["metal", "grey", "black", "white", "green_fabric"], "bed": ["beige_fabric", "white", "blue_fabric", "wood"],
    "bathtub": ["white", "white", "grey"],
}
FLOORS = [((0.55, 0.4, 0.25), (0.4, 0.28, 0.16), 1), ((0.75, 0.6, 0.42), (0.6, 0.46, 0.3), 1),
          ((0.8, 0.8, 0.78), (0.55, 0.55, 0.55), 2), ((0.45, 0.45, 0.5), (0.3, 0.3, 0.35), 3),
          ((0.6, 0.5, 0.4), (0.45, 0.38, 0.3), 3), ((0.3, 0.3, 0.32), (0.22, 0.22, 0.25), 2)]
WALLS = [((0.9, 0.88, 0.82), (0.8, 0.78, 0.72), 3), ((0.82, 0.85, 0.9), (0.7, 0.74, 0.8), 0),
         ((0.9, 0.8, 0.65), (0.8, 0.7, 0.55), 4), ((0.7, 0.8, 0.7), (0.6, 0.7, 0.6), 3),
         ((0.95, 0.95, 0.95), (0.85, 0.85, 0.85), 0), ((0.85, 0.7, 0.7), (0.75, 0.6, 0.6), 4)]


@dataclass
class Material:
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    tex_kind: int
    tex_freq: float = 1.0


@dataclass
class PlacedObject:
    """One CAD model in the room; ``instance`` is its 1-based id in the instance images."""

    instance: int
    model_index: int          # into the library list
    model: CadModel
    yaw: float                # about world y
    position: np.ndarray      # (3,) world translation of the canonical origin
    scale: np.ndarray         # (3,) pose scale s
    footprint: np.ndarray     # (4, 2) world xz corners
    material: Material

    def world_transform(self) -> np.ndarray:
        """(4, 4) = T(t) R_y(yaw) diag(s): canonical -> world."""
        m = np.eye(4)
        m[:3, :3] = rotation_about_y_np(self.yaw) @ np.diag(self.scale)
        m[:3, 3] = self.position
        return m


@dataclass
class SceneLayout:
    room_size: tuple[float, float]    # (x extent, z extent)
    wall_height: float
    floor: Material
    wall: Material
    objects: list[PlacedObject] = field(default_factory=list)
    light_dir_world: np.ndarray = field(default_factory=lambda: np.array([0.3, 1.0, 0.2]))
    ambient: float = 0.35
    diffuse: float = 0.6


@dataclass
class CameraPose:
    """World -> camera (OpenCV) as ``p_cam = R_wc p_world + t_wc``."""

    R_wc: np.ndarray
    t_wc: np.ndarray
    position: np.ndarray
    yaw: float
    pitch_down: float

    def world_to_cam(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.R_wc
        m[:3, 3] = self.t_wc
        return m


def camera_rotation(yaw: float, pitch_down: float) -> np.ndarray:
    """R_wc for a camera whose optical axis has heading ``yaw`` (from +z towards +x) and looks
    ``pitch_down`` radians below the horizon, with no roll."""
    f = np.array([np.sin(yaw) * np.cos(pitch_down), -np.sin(pitch_down), np.cos(yaw) * np.cos(pitch_down)])
    right = np.cross(f, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    return np.stack([right, down, f])


def footprint_corners(center_xz: np.ndarray, half_xz: np.ndarray, yaw: float) -> np.ndarray:
    """(4, 2) world xz corners of a rectangle with half sizes ``half_xz`` turned by ``yaw``."""
    r = rotation_about_y_np(yaw)
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * half_xz
    pts3 = np.stack([local[:, 0], np.zeros(4), local[:, 1]], axis=1) @ r.T
    return pts3[:, [0, 2]] + center_xz


def rectangles_overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    """Separating-axis test of two convex quads (4, 2); ``margin`` widens the gap needed."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            axis /= np.linalg.norm(axis) + 1e-12
            pa, pb = a @ axis, b @ axis
            if pa.max() + margin <= pb.min() or pb.max() + margin <= pa.min():
                return False
    return True


def _material(rng: np.random.Generator, base, second, kind, jitter=0.08, freq=1.0) -> Material:
    j = rng.uniform(1 - jitter, 1 + jitter, 3)
    return Material(tuple(np.clip(np.array(base) * j, 0, 1)), tuple(np.clip(np.array(second) * j, 0, 1)),
                    int(kind), freq)


def sample_scale(rng: np.random.Generator, model: CadModel, jitter: float) -> np.ndarray:
    """Typical metric scale of the model with per-axis jitter; symmetric models keep s_x = s_z."""
    s = np.asarray(model.default_scale, dtype=float) * rng.uniform(1 - jitter, 1 + jitter, 3)
    if model.symmetry in (Symmetry.ROTATE_UP_4, Symmetry.ROTATE_UP_INF):
        s[2] = s[0]
    return s


def sample_layout(rng: np.random.Generator, models: list[CadModel], cfg: RenderConfig) -> SceneLayout:
    """A room with ``min_objects``..``max_objects`` non-overlapping objects on the floor."""
    sc = cfg.scene
    room = (float(rng.uniform(*sc.room_size_range_m)), float(rng.uniform(*sc.room_size_range_m)))
    floor = _material(rng, *FLOORS[rng.integers(len(FLOORS))], freq=float(rng.uniform(0.8, 1.3)))
    wall = _material(rng, *WALLS[rng.integers(len(WALLS))], freq=float(rng.uniform(0.8, 1.3)))
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(35), np.radians(80))
    layout = SceneLayout(room, sc.wall_height_m, floor, wall,
                         light_dir_world=np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)]),
                         ambient=float(rng.uniform(*cfg.light.ambient_range)),
                         diffuse=float(rng.uniform(*cfg.light.directional_range)))
    classes = sorted({m.class_name for m in models})
    weights = np.array([CLASS_WEIGHTS.get(c, 1.0) for c in classes])
    by_class = {c: [i for i, m in enumerate(models) if m.class_name == c] for c in classes}
    n_target = int(rng.integers(sc.min_objects, sc.max_objects + 1))
    for _ in range(n_target):
        cls = classes[rng.choice(len(classes), p=weights / weights.sum())]
        mi = int(by_class[cls][rng.integers(len(by_class[cls]))])
        model = models[mi]
        scale = sample_scale(rng, model, sc.size_jitter)
        half = model.mesh.extents[[0, 2]] * scale[[0, 2]] / 2.0
        for _try in range(sc.max_placement_tries):
            yaw = float(rng.uniform(0, 2 * np.pi))
            radius = float(np.linalg.norm(half))
            lim = np.array(room) / 2.0 - radius - 0.05
            if np.any(lim <= 0):
                break  # does not fit in this room at any angle
            center = rng.uniform(-lim, lim)
            corners = footprint_corners(center, half, yaw)
            if any(rectangles_overlap(corners, o.footprint, sc.footprint_margin_m) for o in layout.objects):
                continue
            palette = CLASS_PALETTES.get(cls, list(OBJECT_PALETTES))
            base, second = OBJECT_PALETTES[palette[rng.integers(len(palette))]]
            kind = int(rng.choice([0, 0, 3, 1])) if "wood" not in palette[0] else int(rng.choice([0, 1]))
            mat = _material(rng, base, second, kind, jitter=0.12, freq=float(rng.uniform(1.0, 2.0)))
            y = scale[1] * model.mesh.extents[1] / 2.0 - float(model.mesh.bounds.mean(axis=0)[1]) * scale[1]
            layout.objects.append(PlacedObject(
                instance=len(layout.objects) + 1, model_index=mi, model=model, yaw=yaw,
                position=np.array([center[0], y, center[1]]), scale=scale, footprint=corners, material=mat))
            break
    return layout


def _point_in_quad(p: np.ndarray, quad: np.ndarray, margin: float) -> bool:
    probe = footprint_corners(p, np.array([margin, margin]), 0.0)
    return rectangles_overlap(probe, quad)


def sample_camera(rng: np.random.Generator, layout: SceneLayout, cfg: RenderConfig) -> CameraPose:
    """A camera inside the room, outside all footprints, aimed roughly at one object."""
    cam = cfg.camera
    half_room = np.array(layout.room_size) / 2.0 - 0.25
    height = float(rng.uniform(*cam.height_range_m))
    pitch = float(np.radians(rng.uniform(*cam.pitch_down_range_deg)))
    pos_xz = np.zeros(2)
    yaw = float(rng.uniform(0, 2 * np.pi))
    lo, hi = cfg.scene.distance_range_m
    for _ in range(100):
        target_h, radius = 0.4, 0.0
        if layout.objects:
            obj = layout.objects[int(rng.integers(len(layout.objects)))]
            target = obj.position[[0, 2]] + rng.normal(0.0, 0.2, 2)
            target_h = float(obj.position[1])
            radius = float(np.linalg.norm(obj.footprint[0] - obj.footprint[2]) / 2)
        else:
            target = rng.uniform(-half_room, half_room)
        # distance at which the target sits near the image centre for this height and pitch,
        # but far enough that a large object (bed, sofa) is not all the camera sees
        ideal = max(height - target_h, 0.2) / np.tan(pitch)
        dist = float(np.clip(ideal * rng.uniform(0.75, 1.3), max(lo, 0.8 + radius), max(hi, 0.8 + radius)))
        ang = float(rng.uniform(0, 2 * np.pi))
        # pull candidates outside the room back in along the ray to the target
        cand = target + dist * np.array([np.sin(ang), np.cos(ang)])
        if np.any(np.abs(cand) > half_room):
            direction = cand - target
            with np.errstate(divide="ignore", invalid="ignore"):
                limits = np.where(np.abs(direction) > 1e-9, (np.sign(direction) * half_room - target) / direction, np.inf)
            cand = target + direction * float(np.clip(limits.min(), 0.0, 1.0))
            if np.linalg.norm(cand - target) < 0.85 * max(lo, 0.8 + radius):
                continue
        if any(_point_in_quad(cand, o.footprint, 0.7) for o in layout.objects):
            continue
        pos_xz = cand
        d = target - cand
        yaw = float(np.arctan2(d[0], d[1]) + rng.normal(0.0, np.radians(8)))
        break
    R = camera_rotation(yaw, pitch)
    position = np.array([pos_xz[0], height, pos_xz[1]])
    return CameraPose(R_wc=R, t_wc=-R @ position, position=position, yaw=yaw, pitch_down=pitch)
