"""Approximate time pairing of images with camera infos, without ROS.

message_filters is not part of the pip ROS wheels, and its Python synchroniser keeps every
queue unbounded while one topic is silent. This one pairs each image with the camera info
whose stamp is closest within ``slop``; queues are bounded, so a missing camera_info topic
costs a fixed amount of memory.

Images are used once. Camera infos are kept (until a newer image makes them stale) so a
camera that publishes its info at a lower rate than its images still pairs.

Thread-safe: the node's callbacks may run on several executor threads.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

ImageT = TypeVar("ImageT")
InfoT = TypeVar("InfoT")

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


@dataclass(frozen=True)
class Pair(Generic[ImageT, InfoT]):
    image: ImageT
    info: InfoT
    image_stamp_ns: int
    info_stamp_ns: int


class ApproximateTimeSync(Generic[ImageT, InfoT]):
    """Pairs (stamp, image) with (stamp, info) when ``|dt| <= slop``.

    ``add_image`` / ``add_info`` return the pairs they complete (0 or 1 for images; for an
    info, at most the newest waiting image it matches, older waiting images being stale).
    """

    def __init__(self, slop_s: float, image_queue_size: int = 5, info_queue_size: int = 10) -> None:
        if image_queue_size < 1 or info_queue_size < 1:
            raise ValueError(
                f"queue sizes must be >= 1, got image {image_queue_size}, info {info_queue_size}")
        self._lock = threading.Lock()
        self._images: deque[tuple[int, ImageT]] = deque()
        self._infos: deque[tuple[int, InfoT]] = deque()
        self._image_queue_size = image_queue_size
        self._info_queue_size = info_queue_size
        self.unpaired_images = 0  # images evicted (or superseded) without a camera info
        self.slop_s = slop_s

    @property
    def slop_s(self) -> float:
        return self._slop_ns / NS_PER_S

    @slop_s.setter
    def slop_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"sync slop must be > 0 seconds, got {value!r}")
        self._slop_ns = int(round(float(value) * NS_PER_S))

    @property
    def pending_images(self) -> int:
        with self._lock:
            return len(self._images)

    @property
    def pending_infos(self) -> int:
        with self._lock:
            return len(self._infos)

    def add_image(self, stamp_ns: int, image: ImageT) -> list[Pair[ImageT, InfoT]]:
        with self._lock:
            best = self._closest(self._infos, stamp_ns)
            if best is not None:
                info_stamp, info = best
                self._drop_infos_older_than(stamp_ns - self._slop_ns)
                # Older waiting images can no longer be the newest frame: forget them.
                stale = [s for s, _ in self._images if s <= stamp_ns]
                self.unpaired_images += len(stale)
                self._images = deque((s, m) for s, m in self._images if s > stamp_ns)
                return [Pair(image, info, stamp_ns, info_stamp)]
            self._images.append((stamp_ns, image))
            while len(self._images) > self._image_queue_size:
                self._images.popleft()
                self.unpaired_images += 1
            return []

    def add_info(self, stamp_ns: int, info: InfoT) -> list[Pair[ImageT, InfoT]]:
        with self._lock:
            self._infos.append((stamp_ns, info))
            while len(self._infos) > self._info_queue_size:
                self._infos.popleft()
            matches = [(s, m) for s, m in self._images if abs(s - stamp_ns) <= self._slop_ns]
            if not matches:
                return []
            image_stamp, image = max(matches, key=lambda sm: sm[0])
            # Pair with the closest info now known (this one or an earlier one).
            info_stamp, best_info = self._closest(self._infos, image_stamp)  # type: ignore[misc]
            older = [s for s, _ in self._images if s < image_stamp]
            self.unpaired_images += len(older)
            self._images = deque((s, m) for s, m in self._images if s > image_stamp)
            self._drop_infos_older_than(image_stamp - self._slop_ns)
            return [Pair(image, best_info, image_stamp, info_stamp)]

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._infos.clear()

    def take_newest_image(self) -> "tuple[int, ImageT] | None":
        """Give up pairing: the newest waiting (stamp, image), or None; older waiting images count unpaired."""
        with self._lock:
            if not self._images:
                return None
            newest = max(self._images, key=lambda item: item[0])
            self.unpaired_images += len(self._images) - 1
            self._images.clear()
            return newest

    def _closest(self, queue: deque, stamp_ns: int):
        best = None
        best_dt = None
        for item_stamp, item in queue:
            dt = abs(item_stamp - stamp_ns)
            if dt <= self._slop_ns and (best_dt is None or dt < best_dt):
                best, best_dt = (item_stamp, item), dt
        return best

    def _drop_infos_older_than(self, stamp_ns: int) -> None:
        # Keep the newest info regardless, for cameras with a slow camera_info rate.
        while len(self._infos) > 1 and self._infos[0][0] < stamp_ns:
            self._infos.popleft()
