"""CameraInfo validation: the intrinsics the model gets must describe the image it gets.

A zero or NaN K (an uncalibrated driver), a CameraInfo of another resolution or another
camera frame would silently produce wrong poses, so each is rejected with a message saying
which. Binning and a region of interest are honoured as documented in sensor_msgs/CameraInfo.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class CameraInfoError(ValueError):
    """A CameraInfo that cannot be used with the image; the message says why."""


def intrinsics_from_k(k: Sequence[float]) -> np.ndarray:
    """Row-major 9-vector K -> validated (3, 3) float64 intrinsics."""
    values = np.asarray(list(k), dtype=np.float64)
    if values.size != 9:
        raise CameraInfoError(f"camera K must have 9 entries, got {values.size}")
    K = values.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise CameraInfoError(f"camera K contains NaN or inf: {values.tolist()}")
    if not np.any(K):
        raise CameraInfoError("camera K is all zeros (camera not calibrated?)")
    fx, fy = K[0, 0], K[1, 1]
    if fx <= 0 or fy <= 0:
        raise CameraInfoError(f"camera focal lengths must be positive, got fx={fx}, fy={fy}")
    if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0:
        raise CameraInfoError(f"camera K is not upper triangular: {values.tolist()}")
    if K[2, 2] <= 0:
        raise CameraInfoError(f"camera K[2][2] must be positive (normally 1), got {K[2, 2]}")
    return K / K[2, 2]


def intrinsics_for_image(info: Any, image_width: int, image_height: int) -> np.ndarray:
    """K of ``info`` (a CameraInfo) valid for an image of the given size.

    A CameraInfo whose width and height are both 0 states no size and is accepted as is;
    otherwise the (binned, ROI-cropped) size must equal the image's.
    """
    K = intrinsics_from_k(info.k)
    width, height = int(info.width), int(info.height)
    bin_x = max(int(getattr(info, "binning_x", 0)), 1)
    bin_y = max(int(getattr(info, "binning_y", 0)), 1)
    roi = getattr(info, "roi", None)
    roi_w = int(roi.width) if roi is not None else 0
    roi_h = int(roi.height) if roi is not None else 0
    if roi_w > 0 and roi_h > 0:
        # The image is a crop of the full sensor: shift the principal point, then bin.
        K[0, 2] -= int(roi.x_offset)
        K[1, 2] -= int(roi.y_offset)
        width, height = roi_w, roi_h
    if bin_x > 1 or bin_y > 1:
        K[0, :] /= bin_x
        K[1, :] /= bin_y
        width, height = width // bin_x, height // bin_y
    if (width, height) != (0, 0) and (width, height) != (int(image_width), int(image_height)):
        raise CameraInfoError(
            f"camera_info size {width}x{height} does not match image size "
            f"{int(image_width)}x{int(image_height)}")
    return K


def check_frame_ids(image_frame: str, info_frame: str) -> None:
    """Both messages must come from the same optical frame (poses are expressed in it)."""
    if image_frame != info_frame:
        raise CameraInfoError(
            f"frame ids differ: image {image_frame!r} vs camera_info {info_frame!r}")
