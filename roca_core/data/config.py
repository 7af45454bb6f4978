"""Configuration of the synthetic data generator (scene sampling, camera, rendering, noise).

Everything tunable about `roca-make-dataset` lives here as data; a YAML file can override
any field through :func:`roca_core.config_io.from_dict`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from roca_core.config_io import ConfigError, from_dict
from roca_core.data.sensor_depth import SensorDepthConfig, sensor_depth_config_errors


@dataclass
class CameraConfig:
    """Pinhole camera; defaults match ScanNet25k frames resized to 360 x 480 (f ~ 435)."""

    height: int = 360
    width: int = 480
    focal: float = 435.0
    # Principal point; None means the image centre ((W - 1) / 2, (H - 1) / 2).
    cx: float | None = None
    cy: float | None = None
    height_range_m: tuple[float, float] = (1.0, 1.8)
    pitch_down_range_deg: tuple[float, float] = (10.0, 35.0)
    near: float = 0.05
    far: float = 20.0

    def intrinsics(self) -> np.ndarray:
        """(3, 3) K of the rendered images."""
        cx = (self.width - 1) / 2.0 if self.cx is None else float(self.cx)
        cy = (self.height - 1) / 2.0 if self.cy is None else float(self.cy)
        return np.array([[self.focal, 0.0, cx], [0.0, self.focal, cy], [0.0, 0.0, 1.0]])


@dataclass
class SceneConfig:
    """Room and object placement."""

    min_objects: int = 1
    max_objects: int = 6
    room_size_range_m: tuple[float, float] = (4.0, 7.0)
    wall_height_m: float = 2.8
    # Multiplicative jitter of each class's typical metric size (per axis).
    size_jitter: float = 0.15
    # Gap kept between object footprints (metres) in the 2D overlap test.
    footprint_margin_m: float = 0.05
    # Horizontal distance of the camera from the object it aims at (metres).
    distance_range_m: tuple[float, float] = (1.5, 5.0)
    max_placement_tries: int = 60


@dataclass
class NoiseConfig:
    """Sensor noise applied to the RGB image only (the true depth stays clean; sensor-like
    depth is a separate output, see ``RenderConfig.sensor_depth``)."""

    rgb_sigma_range: tuple[float, float] = (0.005, 0.03)
    blur_probability: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.4, 1.0)
    jpeg_quality: int = 92


@dataclass
class LightConfig:
    ambient_range: tuple[float, float] = (0.35, 0.6)
    directional_range: tuple[float, float] = (0.45, 0.8)


@dataclass
class RenderConfig:
    """Everything `roca-make-dataset` needs besides the output path and image count."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    light: LightConfig = field(default_factory=LightConfig)
    # Sensor-like depth, written beside the true depth by `roca-make-dataset --sensor-depth`.
    sensor_depth: SensorDepthConfig = field(default_factory=SensorDepthConfig)
    # Objects with fewer visible pixels than this are not annotated (and their pixels are
    # cleared from the instance image), like tiny slivers in the real data.
    min_visible_pixels: int = 100
    # Camera draws per image until one sees at least one annotatable object.
    camera_attempts: int = 4
    # Images per synthetic "scene" id (scene ids group images like ScanNet scenes).
    images_per_scene: int = 10
    # Seed of the procedural CAD library the scenes draw from.
    library_seed: int = 0
    variants_per_class: int = 6


def validate_render_config(cfg: RenderConfig) -> RenderConfig:
    """Raise ConfigError naming the first field with an impossible value."""
    cam, sc = cfg.camera, cfg.scene
    checks = [
        (cam.height >= 8 and cam.width >= 8, "camera.height/width must be >= 8"),
        (cam.focal > 0, "camera.focal must be > 0"),
        (0 < cam.near < cam.far, "camera.near must be in (0, far)"),
        (0 < cam.pitch_down_range_deg[0] <= cam.pitch_down_range_deg[1] < 90,
         "camera.pitch_down_range_deg must be increasing within (0, 90)"),
        (0 < cam.height_range_m[0] <= cam.height_range_m[1] < sc.wall_height_m,
         "camera.height_range_m must be increasing and below scene.wall_height_m"),
        (1 <= sc.min_objects <= sc.max_objects <= 255, "scene.min_objects/max_objects must satisfy 1 <= min <= max <= 255"),
        (0 < sc.room_size_range_m[0] <= sc.room_size_range_m[1], "scene.room_size_range_m must be increasing and > 0"),
        (0 < sc.distance_range_m[0] <= sc.distance_range_m[1], "scene.distance_range_m must be increasing and > 0"),
        (0 <= sc.size_jitter < 1, "scene.size_jitter must be in [0, 1)"),
        (cfg.images_per_scene >= 1, "images_per_scene must be >= 1"),
        (cfg.camera_attempts >= 1, "camera_attempts must be >= 1"),
        (cfg.min_visible_pixels >= 1, "min_visible_pixels must be >= 1"),
        (1 <= cfg.noise.jpeg_quality <= 100, "noise.jpeg_quality must be in 1..100"),
    ]
    checks += [(False, f"sensor_depth: {m}") for m in sensor_depth_config_errors(cfg.sensor_depth)]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"render config: {message}")
    return cfg


def render_config_from_dict(data: dict | None) -> RenderConfig:
    """Strict YAML/dict -> validated RenderConfig (unknown keys and bad values raise ConfigError)."""
    return validate_render_config(from_dict(RenderConfig, data))
