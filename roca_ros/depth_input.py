"""Registered depth images (sensor_msgs/Image) -> float metres for the predictor, without rclpy.

Depth cameras' ROS drivers publish depth registered to the colour camera (RealSense
``aligned_depth_to_color/image_raw`` with ``align_depth.enable:=true``; Azure Kinect
``depth_to_rgb``; OAK-D aligned stereo): same size and ``frame_id`` as the colour image, with
the colour camera's CameraInfo. Only such depth is supported: re-projecting unregistered depth
needs the depth camera's intrinsics and the extrinsics (TF), which the node does not use.

Encodings: ``16UC1`` (millimetres, 0 = no measurement, as RealSense, Kinect and OAK publish)
and ``32FC1`` (metres, NaN/inf/0/negative = no measurement). The checks are split so the
executor thread only reads headers (:func:`check_depth_header`, :func:`check_registered`)
and the worker converts the pixels (:func:`depth_metres`).

:class:`DepthLiveness` decides when depth has stopped arriving (after ``timeout_s``) so the
node carries on RGB-only, and says once when that happens and once when depth returns.
"""
from __future__ import annotations

import threading
from typing import Any, Generic, Optional, TypeVar

import numpy as np

from roca_ros.time_sync import ApproximateTimeSync

# encoding -> (numpy dtype, metres per unit)
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {"16UC1": ("u2", 0.001), "32FC1": ("f4", 1.0)}
# A 32FC1 depth whose median is above this (metres) is almost surely millimetres.
MILLIMETRE_SUSPECT_M = 100.0
REGISTERED_HINT = ("only depth registered to the colour image is supported (RealSense: align_depth.enable:=true "
                   "and aligned_depth_to_color/image_raw)")


class DepthInputError(ValueError):
    """A depth image the node cannot use; the message says why (for a throttled warning)."""


def check_depth_header(msg: Any) -> None:
    """Encoding, size and ``step`` of a depth Image, from the header only (cheap)."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise DepthInputError(f"depth encoding '{encoding}' is not supported; expected 16UC1 (millimetres) or "
                              "32FC1 (metres)")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise DepthInputError(f"depth image is empty ({width}x{height})")
    row = width * np.dtype(DEPTH_ENCODINGS[encoding][0]).itemsize
    if step < row:
        raise DepthInputError(f"depth step {step} is less than width {width} x {row // width} bytes ({encoding})")
    if len(msg.data) < step * height:
        raise DepthInputError(f"depth data has {len(msg.data)} bytes, step {step} x height {height} needs "
                              f"{step * height}")


def check_registered(depth_msg: Any, frame_id: str, width: int, height: int) -> None:
    """The depth image has the colour image's size and frame_id (registered), else why not."""
    size = (int(depth_msg.width), int(depth_msg.height))
    if size != (int(width), int(height)):
        raise DepthInputError(f"depth image is {size[0]}x{size[1]} but the colour image is {width}x{height}: "
                              + REGISTERED_HINT)
    if str(depth_msg.header.frame_id) != str(frame_id):
        raise DepthInputError(f"depth frame_id '{depth_msg.header.frame_id}' is not the colour image frame_id "
                              f"'{frame_id}': " + REGISTERED_HINT)


def depth_metres(msg: Any) -> np.ndarray:
    """float32 (H, W) metres with 0 where there is no measurement; :class:`DepthInputError` if unusable."""
    check_depth_header(msg)
    kind, metres_per_unit = DEPTH_ENCODINGS[msg.encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    buffer = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    raw = buffer[:, : width * dtype.itemsize].view(dtype)
    depth = raw.astype(np.float32) * np.float32(metres_per_unit)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise DepthInputError(f"depth ({msg.encoding}) is entirely invalid: no pixel has a measurement "
                              "(all 0, NaN, inf or negative)")
    depth[~valid] = 0.0
    if msg.encoding == "32FC1":
        median = float(np.median(depth[valid]))
        if median > MILLIMETRE_SUSPECT_M:
            raise DepthInputError(f"32FC1 depth has a median of {median:.0f} m: it looks like millimetres "
                                  "(32FC1 must be metres; millimetres come as 16UC1); ignoring it")
    return depth


class DepthLiveness:
    """Whether depth is arriving: lost when colour frames came for ``timeout_s`` without one.

    The clock runs from the first colour frame left waiting for its depth (``frame``) since the
    newest depth image, so a node started before its camera, or a camera slower than
    ``1 / timeout_s``, stays quiet.
    ``arrived`` and ``check`` return a line to log on a change of state (once each way), else None.
    """

    def __init__(self, topic: str, timeout_s: float) -> None:
        self.topic = topic
        self.timeout_s = float(timeout_s)
        self._waiting_since: Optional[float] = None  # first colour frame since the newest depth
        self._ever = False
        self._active = True
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._active

    def state(self) -> str:
        """For diagnostics: waiting (none yet), paired (arriving) or lost (RGB only)."""
        if not self._active:
            return "lost: RGB only"
        return "paired" if self._ever else "waiting for the first depth image"

    def arrived(self, now: float) -> Optional[str]:
        with self._lock:
            self._waiting_since, self._ever = None, True
            if self._active:
                return None
            self._active = True
        return f"depth is back on {self.topic}: pairing images with depth again"

    def frame(self, now: float, waiting: bool = True) -> None:
        """A colour frame came: waiting for its depth (the timeout counts from the first such), or
        paired at once (``waiting=False``: older waiting frames were dropped, nothing waits)."""
        with self._lock:
            if not waiting:
                self._waiting_since = None
            elif self._waiting_since is None:
                self._waiting_since = now

    def check(self, now: float) -> Optional[str]:
        with self._lock:
            if not self._active or self._waiting_since is None or now - self._waiting_since <= self.timeout_s:
                return None
            self._active = False
            ever = self._ever
        what = "stopped arriving" if ever else "has not arrived"
        return (f"depth on {self.topic} {what} for {self.timeout_s:g} s (depth_timeout): carrying on with RGB "
                "only until it returns")


F = TypeVar("F")


class DepthPairing(Generic[F]):
    """Colour frames waiting for the depth image stamped within ``slop_s`` of them.

    While depth arrives (:class:`DepthLiveness`) a frame waits for its depth; once depth is
    lost the newest waiting frame and all later ones go on alone (depth None). Each method
    returns ``(completed [(frame, depth message or None)], line to log or None)``.
    """

    def __init__(self, topic: str, slop_s: float, timeout_s: float) -> None:
        self.sync: ApproximateTimeSync[F, Any] = ApproximateTimeSync(slop_s, image_queue_size=5, info_queue_size=4)
        self.liveness = DepthLiveness(topic, timeout_s)

    def add_frame(self, stamp_ns: int, frame: F, now: float) -> tuple[list[tuple[F, Any]], Optional[str]]:
        released, note = self.tick(now)
        if not self.liveness.active:
            return [(frame, None)], note  # (a frame released by tick is older than this one: dropped)
        pairs = self.sync.add_image(stamp_ns, frame)
        self.liveness.frame(now, waiting=not pairs)
        return [(p.image, p.info) for p in pairs], note

    def add_depth(self, stamp_ns: int, depth_msg: Any, now: float) -> tuple[list[tuple[F, Any]], Optional[str]]:
        note = self.liveness.arrived(now)
        return [(p.image, p.info) for p in self.sync.add_info(stamp_ns, depth_msg)], note

    def tick(self, now: float) -> tuple[list[tuple[F, Any]], Optional[str]]:
        """On losing depth: the newest waiting frame, to go on RGB-only, and the line to log."""
        note = self.liveness.check(now)
        if note is None:
            return [], None
        newest = self.sync.take_newest_image()
        self.sync.clear()  # depth images kept for pairing are stale by the time depth returns
        return ([(newest[1], None)] if newest is not None else []), note
