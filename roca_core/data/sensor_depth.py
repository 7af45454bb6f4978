"""Sensor-like depth from rendered (true) depth: what an RGB-D camera would have measured.

The defaults resemble an active-stereo camera of the Intel RealSense D435 class whose depth
is registered to the colour image (``aligned_depth_to_color``):

* Depth comes from disparity ``d = f b / z`` (``f`` = ``focal_px`` of the depth imagers,
  ``b`` = ``baseline_m``). Gaussian disparity noise of ``subpixel_rms_px`` therefore gives a
  depth error growing with the *square* of the distance, ``sigma_z = z^2 sigma_d / (f b)``
  (about 0.4 % of z at 1 m and 1.5 % at 4 m with the defaults). Part of the noise is spatially
  smooth (``correlated_noise_fraction``), as block matching correlates neighbouring pixels.
* Quantisation twice: disparity to ``disparity_step_px`` (sub-pixel resolution of the
  matcher, visible as depth "layers" far away), then depth to ``depth_unit_m`` (16-bit
  millimetres, the ``16UC1`` format of the ROS drivers).
* Missing pixels (0): the occlusion shadow (background next to the left side of a foreground
  object is hidden from the second imager, ``b`` to the right), a ragged band along depth
  discontinuities, dark surfaces (weak signal; the colour image stands in for the infrared
  one), glancing surfaces (normals estimated from the true depth), random drop-outs, and
  everything nearer than ``min_range_m`` or beyond ``max_range_m``.

Output: (H, W) float32 metres, 0 = no measurement, the same convention as the rendered depth.
Deterministic for a given seed / generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class SensorDepthConfig:
    """Sensor model parameters; defaults: a RealSense D435-class camera indoors."""

    baseline_m: float = 0.050             # D435 stereo baseline (50 mm)
    focal_px: float = 425.0               # depth imager focal length at 848 x 480
    subpixel_rms_px: float = 0.08         # disparity noise; Intel quotes ~0.08 px on textured scenes
    correlated_noise_fraction: float = 0.5  # share of the noise variance that is spatially smooth
    correlated_noise_sigma_px: float = 2.0  # its correlation length (Gaussian sigma, image pixels)
    disparity_step_px: float = 1.0 / 32.0   # matcher sub-pixel resolution (assumed 5 bits)
    depth_unit_m: float = 0.001           # output quantisation: 16-bit millimetres
    min_range_m: float = 0.28             # D435 minimum depth at 848 x 480
    max_range_m: float = 6.0              # beyond this the camera returns nothing usable indoors
    occlusion_shadow: bool = True         # invalidate pixels the second imager cannot see
    edge_jump_rel: float = 0.04           # relative depth jump between neighbours that is an edge
    edge_band_px: int = 1                 # half width of the band around edges that may drop out
    edge_drop_probability: float = 0.7    # per pixel of that band
    dark_start: float = 0.10              # luminance (0..1) where drop-outs on dark surfaces start
    dark_full: float = 0.02               # luminance at which every pixel drops out
    glancing_start_deg: float = 70.0      # incidence angle where drop-outs start
    glancing_full_deg: float = 87.0       # incidence angle at which every pixel drops out
    dropout_probability: float = 0.002    # random isolated drop-outs


def sensor_depth_config_errors(cfg: SensorDepthConfig) -> list[str]:
    """Messages naming each impossible value (empty when the config is usable)."""
    checks = [
        (cfg.baseline_m > 0 and cfg.focal_px > 0, "baseline_m and focal_px must be > 0"),
        (cfg.subpixel_rms_px >= 0, "subpixel_rms_px must be >= 0"),
        (0 <= cfg.correlated_noise_fraction <= 1, "correlated_noise_fraction must be in [0, 1]"),
        (cfg.correlated_noise_sigma_px > 0, "correlated_noise_sigma_px must be > 0"),
        (cfg.disparity_step_px >= 0 and cfg.depth_unit_m >= 0, "disparity_step_px and depth_unit_m must be >= 0"),
        (0 <= cfg.min_range_m < cfg.max_range_m, "need 0 <= min_range_m < max_range_m"),
        (cfg.edge_jump_rel > 0 and cfg.edge_band_px >= 0, "edge_jump_rel must be > 0 and edge_band_px >= 0"),
        (0 <= cfg.dark_full < cfg.dark_start, "need 0 <= dark_full < dark_start"),
        (0 <= cfg.glancing_start_deg < cfg.glancing_full_deg <= 90,
         "need 0 <= glancing_start_deg < glancing_full_deg <= 90"),
        (all(0 <= p <= 1 for p in (cfg.edge_drop_probability, cfg.dropout_probability)),
         "edge_drop_probability and dropout_probability must be in [0, 1]"),
    ]
    return [message for ok, message in checks if not ok]


def depth_noise_sigma_m(z_m: np.ndarray | float, cfg: SensorDepthConfig) -> np.ndarray | float:
    """Standard deviation of the depth noise at distance ``z_m`` (before quantisation)."""
    return np.square(z_m) * cfg.subpixel_rms_px / (cfg.focal_px * cfg.baseline_m)


def simulate_sensor_depth(depth: np.ndarray, K: np.ndarray, rng: np.random.Generator | int,
                          image: np.ndarray | None = None,
                          cfg: SensorDepthConfig | None = None) -> np.ndarray:
    """depth: (H, W) true metres (0 / non-finite = nothing); K: (3, 3) of that image;
    image: optional (H, W, 3) RGB (uint8, or float in [0, 1]) for drop-outs on dark surfaces.
    Returns (H, W) float32 sensor depth in metres, 0 where the sensor has no measurement."""
    cfg = cfg or SensorDepthConfig()
    errors = sensor_depth_config_errors(cfg)
    if errors:
        raise ValueError("sensor depth config: " + "; ".join(errors))
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    z = np.asarray(depth, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {z.shape}")
    z = np.where(np.isfinite(z) & (z > 0), z, 0.0)
    known = z > 0

    measured = _noisy_quantised_depth(z, known, rng, cfg)
    invalid = ~known | (measured <= 0)
    if cfg.occlusion_shadow:
        invalid |= occlusion_shadow_mask(z, float(K[0, 0]) * cfg.baseline_m)
    edges = depth_edges(z, cfg.edge_jump_rel)
    drop_p = cfg.edge_drop_probability * _dilate(edges, cfg.edge_band_px)
    drop_p = np.maximum(drop_p, _glancing_drop_probability(z, K, cfg))
    if image is not None:
        drop_p = np.maximum(drop_p, _dark_drop_probability(image, z.shape, cfg))
    drop_p = np.maximum(drop_p, cfg.dropout_probability)
    invalid |= rng.random(z.shape) < drop_p
    invalid |= (measured < cfg.min_range_m) | (measured > cfg.max_range_m)
    return np.where(invalid, 0.0, measured).astype(np.float32)


def _noisy_quantised_depth(z: np.ndarray, known: np.ndarray, rng: np.random.Generator,
                           cfg: SensorDepthConfig) -> np.ndarray:
    """Noise and quantisation in disparity, back to metres, quantised to the depth unit."""
    fb = cfg.focal_px * cfg.baseline_m
    disparity = np.where(known, fb / np.where(known, z, 1.0), 0.0)
    white = rng.standard_normal(z.shape)
    smooth = cv2.GaussianBlur(rng.standard_normal(z.shape), (0, 0), cfg.correlated_noise_sigma_px)
    smooth /= max(float(smooth.std()), 1e-12)
    f = cfg.correlated_noise_fraction
    disparity = disparity + cfg.subpixel_rms_px * (np.sqrt(1.0 - f) * white + np.sqrt(f) * smooth)
    if cfg.disparity_step_px > 0:
        disparity = np.rint(disparity / cfg.disparity_step_px) * cfg.disparity_step_px
    ok = known & (disparity > 0)
    measured = np.where(ok, fb / np.where(ok, disparity, 1.0), 0.0)
    if cfg.depth_unit_m > 0:
        measured = np.rint(measured / cfg.depth_unit_m) * cfg.depth_unit_m
    return measured


def occlusion_shadow_mask(z: np.ndarray, fb_image_px_m: float) -> np.ndarray:
    """(H, W) True where a second imager ``b`` to the right (+x) cannot see the surface.

    ``fb_image_px_m`` = focal length of *this* image in pixels times the baseline, so the
    shadow width is measured in this image's pixels. Pixel u (disparity d(u)) is hidden when
    some pixel k to its right is nearer by at least k pixels of disparity: d(u+k) - d(u) >= k.
    Empty pixels (z = 0) count as infinitely far."""
    disparity = np.where(z > 0, fb_image_px_m / np.where(z > 0, z, 1.0), 0.0)
    hidden = np.zeros(z.shape, dtype=bool)
    max_shift = min(int(np.ceil(disparity.max(initial=0.0))), z.shape[1] - 1)
    for k in range(1, max_shift + 1):
        hidden[:, :-k] |= (disparity[:, k:] - disparity[:, :-k]) >= k
    return hidden


def depth_edges(z: np.ndarray, jump_rel: float) -> np.ndarray:
    """(H, W) True on both sides of a depth discontinuity: a neighbour (4-connected) differs by
    more than ``jump_rel`` of the nearer depth; pixels without depth count as very far."""
    far = np.where(z > 0, z, 1e6)
    edge = np.zeros(z.shape, dtype=bool)
    for a, b, sl_a, sl_b in ((far[:, 1:], far[:, :-1], np.s_[:, 1:], np.s_[:, :-1]),
                             (far[1:], far[:-1], np.s_[1:], np.s_[:-1])):
        jump = np.abs(a - b) > jump_rel * np.minimum(a, b)
        edge[sl_a] |= jump
        edge[sl_b] |= jump
    return edge & (z > 0)


def _dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) bool -> float 1.0 within ``radius_px`` (square) of a True pixel."""
    if radius_px > 0:
        size = 2 * radius_px + 1
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    return mask.astype(np.float64)


def surface_incidence_deg(z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W) angle between the viewing ray and the surface normal estimated from depth, in
    degrees; 0 where unknown. Tangents are one-sided differences towards the neighbour of
    smaller depth change, so a pixel at a discontinuity gets the normal of its own surface."""
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=-1)
    normal = np.cross(_smoother_side_difference(pts, axis=1), _smoother_side_difference(pts, axis=0))
    norm = np.linalg.norm(normal, axis=-1) * np.linalg.norm(pts, axis=-1)
    cos = np.abs((normal * pts).sum(-1)) / np.maximum(norm, 1e-12)
    angle = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    return np.where((z > 0) & (norm > 0), angle, 0.0)


def _smoother_side_difference(pts: np.ndarray, axis: int) -> np.ndarray:
    """(H, W, 3) forward or backward difference along ``axis``, whichever changes z less."""
    diff = np.diff(pts, axis=axis)
    pad_first = [(0, 0)] * 3
    pad_last = [(0, 0)] * 3
    pad_first[axis] = (1, 0)
    pad_last[axis] = (0, 1)
    backward = np.pad(diff, pad_first, mode="edge")
    forward = np.pad(diff, pad_last, mode="edge")
    use_forward = np.abs(forward[..., 2]) < np.abs(backward[..., 2])
    return np.where(use_forward[..., None], forward, backward)


def _glancing_drop_probability(z: np.ndarray, K: np.ndarray, cfg: SensorDepthConfig) -> np.ndarray:
    angle = surface_incidence_deg(z, K)
    return np.clip((angle - cfg.glancing_start_deg) / (cfg.glancing_full_deg - cfg.glancing_start_deg), 0.0, 1.0)


def _dark_drop_probability(image: np.ndarray, shape: tuple[int, int], cfg: SensorDepthConfig) -> np.ndarray:
    img = np.asarray(image)
    if img.shape[:2] != shape or img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"image must be (H, W, 3) with (H, W) = {shape}, got {img.shape}")
    rgb = img[..., :3].astype(np.float64)
    if img.dtype == np.uint8:
        rgb /= 255.0
    luminance = rgb @ np.array([0.299, 0.587, 0.114])
    return np.clip((cfg.dark_start - luminance) / (cfg.dark_start - cfg.dark_full), 0.0, 1.0)
