"""Known images in the encodings camera drivers publish, built by hand from their definitions.

Each builder turns an RGB image of flat colour patches into the bytes a driver would send and
the RGB a correct conversion gives back, without OpenCV (the converter under test uses it):

* YUV 4:2:2 from the BT.601 limited-range formulas (what V4L2 cameras deliver), YUYV for
  ``yuv422_yuy2`` and UYVY for ``yuv422``;
* Bayer mosaics from the pattern name, read as ROS defines it: the colours of the top-left
  2x2 block in row-major order (``bayer_rggb8``: R G on row 0, G B on row 1);
* 16-bit encodings as the 8-bit value times 257, cv_bridge's 8 -> 16 bit scaling.
"""
from __future__ import annotations

import numpy as np

PATCH_COLOURS = np.array([[200, 100, 30], [20, 180, 220], [240, 240, 240], [90, 20, 150]], dtype=np.uint8)


def patch_image(scale: int = 1) -> np.ndarray:
    """(12 s, 16 s, 3) uint8 RGB: a 2x2 grid of flat colour patches, each 8 s wide and 6 s high,
    so demosaicing and chroma subsampling are exact away from the patch borders."""
    rgb = np.zeros((12, 16, 3), np.uint8)
    for i, colour in enumerate(PATCH_COLOURS):
        y, x = divmod(i, 2)
        rgb[6 * y: 6 * y + 6, 8 * x: 8 * x + 8] = colour
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def patch_interior(scale: int = 1) -> np.ndarray:
    """(12 s, 16 s) bool: the pixels at least 2 s away from a patch border or the image border."""
    mask = np.zeros((12, 16), bool)
    for y in range(2):
        for x in range(2):
            mask[6 * y + 2: 6 * y + 4, 8 * x + 2: 8 * x + 6] = True
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


def _bt601_limited(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., c].astype(np.float64) / 255.0 for c in range(3))
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return tuple(np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v))


def yuv422_bytes(rgb: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 2) bytes of ``rgb`` in 4:2:2, ``order`` "YUYV" (yuv422_yuy2) or "UYVY" (yuv422)."""
    y, u, v = _bt601_limited(rgb)
    u_pair = ((u[:, 0::2].astype(int) + u[:, 1::2]) // 2).astype(np.uint8)
    v_pair = ((v[:, 0::2].astype(int) + v[:, 1::2]) // 2).astype(np.uint8)
    out = np.zeros(rgb.shape[:2] + (2,), np.uint8)
    luma, chroma = (0, 1) if order == "YUYV" else (1, 0)
    out[:, :, luma] = y
    out[:, 0::2, chroma] = u_pair
    out[:, 1::2, chroma] = v_pair
    return out


def bayer_bytes(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W) mosaic of ``rgb`` for a ROS pattern name such as "rggb"."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.zeros(rgb.shape[:2], np.uint8)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[k]]]
    return out


def driver_image(encoding: str, scale: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixels as the encoding stores them, expected RGB, tolerance) of ``patch_image(scale)``."""
    rgb = patch_image(scale)
    if encoding in ("yuv422_yuy2", "yuv422"):
        return yuv422_bytes(rgb, "YUYV" if encoding == "yuv422_yuy2" else "UYVY"), rgb, 3
    if encoding.startswith("bayer_"):
        return bayer_bytes(rgb, encoding[len("bayer_"):-1]), rgb, 1
    wide = rgb.astype(np.uint16) * 257
    grey = rgb[:, :, 1]
    return {
        "rgb8": (rgb, rgb, 0), "bgr8": (rgb[:, :, ::-1], rgb, 0),
        "rgba8": (np.dstack([rgb, np.full_like(grey, 255)]), rgb, 0),
        "bgra8": (np.dstack([rgb[:, :, ::-1], np.full_like(grey, 255)]), rgb, 0),
        "mono8": (grey, np.dstack([grey] * 3), 0),
        "rgb16": (wide, rgb, 0), "bgr16": (wide[:, :, ::-1], rgb, 0),
        "mono16": (wide[:, :, 1], np.dstack([grey] * 3), 0),
        "8UC1": (grey, np.dstack([grey] * 3), 0),
        "8UC3": (rgb[:, :, ::-1], rgb, 0),  # cv_bridge's plain OpenCV image: BGR
        "8UC4": (np.dstack([rgb[:, :, ::-1], np.full_like(grey, 255)]), rgb, 0),
    }[encoding]


DRIVER_ENCODINGS: tuple[str, ...] = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "mono16", "8UC1", "8UC3", "8UC4",
    "yuv422_yuy2", "yuv422", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
)
