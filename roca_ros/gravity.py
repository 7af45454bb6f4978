"""The camera's up direction (against gravity) for the predictor's upright prior, without rclpy.

Two sources: a fixed ``up_vector`` (a level camera on a robot: (0, -1, 0) in the optical
frame, x right, y down, z forward) or an IMU (sensor_msgs/Imu). At rest an accelerometer
measures the reaction to gravity, so ``linear_acceleration`` points up; :class:`GravityFilter`
low-passes it and ignores samples whose magnitude is far from g (the camera is accelerating,
the reading is not gravity).

tf2 is not available in the pip ROS wheels, so the IMU's axes cannot be rotated into the
camera's: the IMU is used only when its frame_id is the camera's optical frame, or when
``imu_frame_is_camera_optical`` says the axes coincide (RealSense D435i/D455:
``camera_imu_optical_frame`` has the optical axes; its small rotation to the colour
sensor is neglected).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

STANDARD_GRAVITY = 9.80665


def unit_up(vector: Sequence[float]) -> np.ndarray:
    """A finite non-zero 3-vector -> unit float64 (3,); ValueError otherwise."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) < 1e-9:
        raise ValueError(f"an up direction needs 3 finite numbers, not all zero; got {list(vector)}")
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class UpChoice:
    """The upright prior of one frame: direction (None: off), where it came from, and why the IMU was not used."""

    up: Optional[np.ndarray]
    source: str
    problem: Optional[str] = None


def choose_up(gravity: "GravityFilter | None", now: float, camera_frame: str, up_vector: Sequence[float],
              imu_axes_are_optical: bool) -> UpChoice:
    """The IMU's gravity while it has a current one in the camera's axes, else ``up_vector``, else off."""
    up = gravity.up(now) if gravity is not None else None
    problem = None
    if up is not None:
        if imu_axes_are_optical or gravity.frame_id == camera_frame:
            return UpChoice(up, f"imu ({gravity.frame_id})")
        problem = (f"IMU frame_id '{gravity.frame_id}' is not the image's '{camera_frame}' and the node has no tf2 "
                   "to rotate it: not used (imu_frame_is_camera_optical:=true if the axes coincide, e.g. RealSense "
                   "camera_imu_optical_frame)")
    if up_vector:
        return UpChoice(unit_up(up_vector), "up_vector", problem)
    return UpChoice(None, "off", problem)


class GravityFilter:
    """Exponential low-pass of accelerometer samples near 1 g; ``up()`` is its unit direction.

    time_constant_s: the filter's time constant (a sample ``dt`` later weighs
    ``1 - exp(-dt / tau)``). tolerance: samples with ``| |a| - g |`` above it (m/s^2) are
    ignored. max_age_s: ``up()`` is None when no sample was accepted for that long.
    """

    def __init__(self, time_constant_s: float = 0.5, tolerance: float = 1.0, max_age_s: float = 1.0,
                 gravity: float = STANDARD_GRAVITY) -> None:
        if time_constant_s <= 0 or tolerance <= 0 or max_age_s <= 0:
            raise ValueError("time_constant_s, tolerance and max_age_s must be > 0")
        self.time_constant_s, self.tolerance, self.max_age_s = time_constant_s, tolerance, max_age_s
        self.gravity = gravity
        self._mean: Optional[np.ndarray] = None
        self._last: Optional[float] = None
        self.frame_id = ""
        self.accepted = 0
        self.ignored = 0
        self._lock = threading.Lock()

    def add(self, acceleration: Sequence[float], t: float, frame_id: str = "") -> bool:
        """One sample (m/s^2, time in seconds); False when ignored (accelerating or not finite)."""
        a = np.asarray(acceleration, dtype=np.float64).reshape(3)
        norm = float(np.linalg.norm(a))
        if not math.isfinite(norm) or abs(norm - self.gravity) > self.tolerance:
            self.ignored += 1
            return False
        with self._lock:
            if self._mean is None or self._last is None or t - self._last > self.max_age_s:
                self._mean = a.copy()  # first sample, or after a gap: start afresh
            else:
                weight = 1.0 - math.exp(-max(t - self._last, 0.0) / self.time_constant_s)
                self._mean += weight * (a - self._mean)
            self._last = t
            self.frame_id = frame_id
            self.accepted += 1
        return True

    def up(self, now: float) -> Optional[np.ndarray]:
        """Unit up direction in the IMU frame, or None (no recent accepted sample)."""
        with self._lock:
            if self._mean is None or self._last is None or now - self._last > self.max_age_s:
                return None
            norm = float(np.linalg.norm(self._mean))
            return self._mean / norm if norm > 1e-9 else None
