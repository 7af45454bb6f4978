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


def intrinsics_from_k(k: Sequence[float], name: str = "K") -> np.ndarray:
    """Row-major 9-vector K (or P[:3,:3], named by ``name``) -> validated (3, 3) float64 intrinsics."""
    values = np.asarray(list(k), dtype=np.float64)
    if values.size != 9:
        raise CameraInfoError(f"camera {name} must have 9 entries, got {values.size}")
    K = values.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise CameraInfoError(f"camera {name} contains NaN or inf: {values.tolist()}")
    if not np.any(K):
        raise CameraInfoError(f"camera {name} is all zeros (camera not calibrated?)")
    fx, fy = K[0, 0], K[1, 1]
    if fx <= 0 or fy <= 0:
        raise CameraInfoError(f"camera focal lengths must be positive, got fx={fx}, fy={fy} ({name})")
    if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0:
        raise CameraInfoError(f"camera {name} is not upper triangular: {values.tolist()}")
    if K[2, 2] <= 0:
        raise CameraInfoError(f"camera {name}[2][2] must be positive (normally 1), got {K[2, 2]}")
    return K / K[2, 2]


def crop_and_bin(M: np.ndarray, info: Any) -> tuple[np.ndarray, int, int]:
    """A full-sensor 3x3 intrinsic matrix (K or P[:3,:3]) and size -> those of the published image.

    As sensor_msgs/CameraInfo defines them: the ROI (in full-resolution pixels) shifts the
    principal point, binning then divides the first two rows; a size of 0x0 stays 0x0.
    """
    M = np.array(M, dtype=np.float64)
    width, height = int(info.width), int(info.height)
    bin_x = max(int(getattr(info, "binning_x", 0)), 1)
    bin_y = max(int(getattr(info, "binning_y", 0)), 1)
    roi = getattr(info, "roi", None)
    roi_w = int(roi.width) if roi is not None else 0
    roi_h = int(roi.height) if roi is not None else 0
    if roi_w > 0 and roi_h > 0:
        M[0, 2] -= int(roi.x_offset)
        M[1, 2] -= int(roi.y_offset)
        width, height = roi_w, roi_h
    if bin_x > 1 or bin_y > 1:
        M[0, :] /= bin_x
        M[1, :] /= bin_y
        width, height = width // bin_x, height // bin_y
    return M, width, height


def check_image_size(info: Any, image_width: int, image_height: int) -> None:
    """The (binned, ROI-cropped) CameraInfo size must be the image's; 0x0 states no size."""
    _, width, height = crop_and_bin(np.eye(3), info)
    if (width, height) != (0, 0) and (width, height) != (int(image_width), int(image_height)):
        raise CameraInfoError(
            f"camera_info size {width}x{height} does not match image size "
            f"{int(image_width)}x{int(image_height)}")


def intrinsics_for_image(info: Any, image_width: int, image_height: int) -> np.ndarray:
    """K of ``info`` (a CameraInfo) valid for an image of the given size.

    A CameraInfo whose width and height are both 0 states no size and is accepted as is;
    otherwise the (binned, ROI-cropped) size must equal the image's.
    """
    check_image_size(info, image_width, image_height)
    return crop_and_bin(intrinsics_from_k(info.k), info)[0]


def check_frame_ids(image_frame: str, info_frame: str) -> None:
    """Both messages must come from the same optical frame (poses are expressed in it)."""
    if image_frame != info_frame:
        raise CameraInfoError(
            f"frame ids differ: image {image_frame!r} vs camera_info {info_frame!r}")
