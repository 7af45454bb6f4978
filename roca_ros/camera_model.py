"""Camera model stage: the pinhole intrinsics of the image the model sees, undistorting raw images.

By sensor_msgs/CameraInfo's definition ``K`` (with ``D``) describes the raw, distorted image
and ``P[:3,:3]`` the rectified one (image_proc's ``image_rect``), and both come in the same
CameraInfo. The model assumes a pinhole camera, so:

* a rectified image uses ``P[:3,:3]``;
* a raw image without distortion (``D`` all zero) is already pinhole and uses ``K``;
* a raw image with ``plumb_bob``, ``rational_polynomial`` or ``equidistant`` (fisheye)
  distortion is undistorted here into ``P``'s pinhole image (OpenCV remap maps, built once
  per CameraInfo and cached), then uses ``P[:3,:3]``; other models are rejected.

``rectified: auto`` decides from the input topic's name: ``..._rect...`` (image_proc,
realsense-ros' ``image_rect_raw``) is rectified, anything else raw. Binning and ROI apply to
both matrices as image_geometry applies them (ROI shift, then binning), so the maps are built
directly for the binned, cropped image.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from roca_ros.camera_info import CameraInfoError, check_image_size, crop_and_bin, intrinsics_from_k

RECTIFIED_MODES: tuple[str, ...] = ("auto", "true", "false")
# distortion_model -> numbers of D coefficients OpenCV takes for it.
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (4, 5), "rational_polynomial": (8,), "equidistant": (4,),
}
CACHE_ENTRIES = 4  # distinct CameraInfos kept (a camera switching resolution, a few cameras)


def resolve_rectified(mode: str, image_topic: str) -> bool:
    """``rectified`` parameter (auto|true|false) -> whether the input image is rectified."""
    if mode == "auto":
        return "rect" in image_topic.rstrip("/").rsplit("/", 1)[-1]
    if mode in ("true", "false"):
        return mode == "true"
    raise ValueError(f"rectified must be one of {list(RECTIFIED_MODES)}, got {mode!r}")


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of the image handed to the model, and how to get that image from the input."""

    K: np.ndarray  # (3, 3) pinhole intrinsics of the (undistorted) image
    source: str  # where K comes from, for the log: "K", "P", "P, undistorted from plumb_bob", ...
    maps: Optional[tuple[np.ndarray, np.ndarray]] = None  # cv2.remap maps; None: image used as is

    def rectify(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """The input image in this model's pinhole geometry (the input itself when no maps).

        nearest: nearest-neighbour sampling, for depth (interpolating across an edge invents depths).
        """
        if self.maps is None:
            return image
        import cv2
        return cv2.remap(image, self.maps[0], self.maps[1], cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)


def fallback_intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """K of an image of the given size and horizontal field of view (principal point centred)."""
    from roca_core.geometry.camera import intrinsics_from_fov
    return intrinsics_from_fov(int(width), int(height), float(hfov_deg))


def _distortion(info: Any) -> np.ndarray:
    d = np.asarray(list(info.d), dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise CameraInfoError(f"camera D contains NaN or inf: {d.tolist()}")
    return d


def _rotation(info: Any) -> np.ndarray:
    r = np.asarray(list(info.r), dtype=np.float64)
    if r.size != 9 or not np.any(r):
        return np.eye(3)  # monocular drivers often leave R empty
    if not np.all(np.isfinite(r)):
        raise CameraInfoError(f"camera R contains NaN or inf: {r.tolist()}")
    return r.reshape(3, 3)


def _p_intrinsics(info: Any) -> Optional[np.ndarray]:
    """P[:3,:3] validated, or None when P is all zero (not given)."""
    p = np.asarray(list(info.p), dtype=np.float64)
    if p.size != 12:
        raise CameraInfoError(f"camera P must have 12 entries, got {p.size}")
    if np.all(np.isfinite(p)) and not np.any(p):
        return None
    return intrinsics_from_k(p.reshape(3, 4)[:, :3].reshape(-1), name="P")


def camera_model_for(info: Any, image_width: int, image_height: int, rectified: bool,
                     fallback_hfov_deg: float = 0.0) -> CameraModel:
    """The :class:`CameraModel` of ``info`` for an image of the given size (raises CameraInfoError).

    ``fallback_hfov_deg`` > 0 replaces an all-zero K (an uncalibrated camera) by that field of
    view; the caller warns about it (``source`` starts with "fallback").
    """
    check_image_size(info, image_width, image_height)
    k = np.asarray(list(info.k), dtype=np.float64)
    if fallback_hfov_deg > 0 and k.size == 9 and np.all(np.isfinite(k)) and not np.any(k):
        return CameraModel(fallback_intrinsics(image_width, image_height, fallback_hfov_deg),
                           f"fallback_hfov_deg={fallback_hfov_deg:g} (K is all zero)")
    K_full = intrinsics_from_k(k)
    d = _distortion(info)
    distorted = bool(np.any(d))
    P_full = _p_intrinsics(info)
    if rectified:
        if P_full is None:
            if distorted:
                raise CameraInfoError("rectified image but camera_info P is all zeros (and D is not): "
                                      "no intrinsics for the rectified image")
            return CameraModel(crop_and_bin(K_full, info)[0], "K (P is empty)")
        return CameraModel(crop_and_bin(P_full, info)[0], "P")
    if not distorted:
        return CameraModel(crop_and_bin(K_full, info)[0], "K")
    model = str(info.distortion_model)
    counts = DISTORTION_MODELS.get(model)
    if counts is None:
        raise CameraInfoError(
            f"distortion model {model!r} of a raw image is not supported; supported: {sorted(DISTORTION_MODELS)} "
            "(or subscribe to a rectified image with rectified:=true)")
    if d.size not in counts:
        raise CameraInfoError(f"distortion model {model!r} needs {' or '.join(map(str, counts))} "
                              f"coefficients in D, got {d.size}")
    K_image = crop_and_bin(K_full, info)[0]
    P_image = crop_and_bin(K_full if P_full is None else P_full, info)[0]
    size = (int(image_width), int(image_height))
    import cv2
    if model == "equidistant":
        maps = cv2.fisheye.initUndistortRectifyMap(K_image, d, _rotation(info), P_image, size, cv2.CV_32FC1)
    else:
        maps = cv2.initUndistortRectifyMap(K_image, d, _rotation(info), P_image, size, cv2.CV_32FC1)
    return CameraModel(P_image, f"{'K' if P_full is None else 'P'}, undistorted from {model}", tuple(maps))


def _roi_key(info: Any) -> tuple:
    roi = getattr(info, "roi", None)
    if roi is None:
        return ()
    return (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))


class CameraModelCache:
    """:func:`camera_model_for` remembered per CameraInfo content (maps cost milliseconds).

    ``on_new(model)`` is called when a CameraInfo is seen for the first time (the node logs
    which intrinsics it uses). Thread-safe; keeps the ``entries`` most recently used.
    """

    def __init__(self, entries: int = CACHE_ENTRIES, on_new=None) -> None:
        self._entries = entries
        self._models: OrderedDict[tuple, CameraModel] = OrderedDict()
        self._lock = threading.Lock()
        self._on_new = on_new

    def get(self, info: Any, image_width: int, image_height: int, rectified: bool,
            fallback_hfov_deg: float = 0.0) -> CameraModel:
        key = (tuple(info.k), tuple(info.d), tuple(info.r), tuple(info.p), str(info.distortion_model),
               int(info.width), int(info.height), int(getattr(info, "binning_x", 0)),
               int(getattr(info, "binning_y", 0)), _roi_key(info), int(image_width), int(image_height),
               bool(rectified), float(fallback_hfov_deg))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        model = camera_model_for(info, image_width, image_height, rectified, fallback_hfov_deg)
        with self._lock:
            self._models[key] = model
            while len(self._models) > self._entries:
                self._models.popitem(last=False)
        if self._on_new is not None:
            self._on_new(model)
        return model

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
