"""``camera_info_mode: latest``: pair each image with the newest camera_info that fits it.

Drivers that publish camera_info once (latched), at 1 Hz, or from a static publisher with its
own stamps never pair by stamp. In this mode an image takes the newest camera_info of its
frame whose (binned, ROI-cropped) size is the image's; with none fitting, the newest at all,
so that pairing rejects it with the reason (frame ids or sizes differ) instead of staying
silent. A few cameras (frames, resolutions) are remembered at once.

Thread-safe: the executor may run the image and camera_info callbacks on several threads.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Optional, TypeVar

from roca_ros.camera_info import CameraInfoError, check_image_size

T = TypeVar("T")


class LatestCameraInfos(Generic[T]):
    """Newest item (a CameraInfo or a wrapper of one, see ``info_of``) per (frame_id, width, height)."""

    def __init__(self, keep: int = 4, info_of=lambda item: item) -> None:
        self._items: OrderedDict[tuple[str, int, int], T] = OrderedDict()
        self._keep = keep
        self._info_of = info_of
        self._lock = threading.Lock()

    def add(self, item: T) -> None:
        info = self._info_of(item)
        key = (str(info.header.frame_id), int(info.width), int(info.height))
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = item
            while len(self._items) > self._keep:
                self._items.popitem(last=False)

    def for_image(self, frame_id: str, width: int, height: int) -> Optional[T]:
        """The newest item of ``frame_id`` fitting a ``width`` x ``height`` image, else the newest; None if empty."""
        with self._lock:
            newest_first = list(reversed(self._items.values()))
        for item in newest_first:
            info = self._info_of(item)
            if info.header.frame_id != frame_id:
                continue
            try:
                check_image_size(info, width, height)
            except CameraInfoError:
                continue
            return item
        return newest_first[0] if newest_first else None
