"""One worker thread that always works on the newest item and drops the rest.

Inference is slower than a camera, so queueing frames would make latency grow without
bound. While the worker is busy a single slot holds the newest pending item; a newer
submission replaces it and counts as dropped. The executor thread only ever does
``submit`` (constant time), so ROS callbacks, services and timers stay responsive.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class LatestWorker(Generic[T]):
    """Runs ``handler(item)`` on a dedicated thread for the newest submitted item.

    Exceptions raised by the handler are counted in ``failed`` and passed to ``on_error``;
    they never stop the thread.
    """

    def __init__(self, handler: Callable[[T], None],
                 on_error: Optional[Callable[[T, BaseException], None]] = None,
                 name: str = "roca-worker") -> None:
        self._handler = handler
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Optional[tuple[T]] = None  # a 1-tuple so that None items work too
        self._busy = False
        self._closed = False
        self.submitted = 0
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._pending is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, item: T) -> bool:
        """Hand over ``item``; returns False when it replaced an unprocessed pending item."""
        with self._cond:
            if self._closed:
                raise RuntimeError("LatestWorker is closed")
            self.submitted += 1
            replaced = self._pending is not None
            if replaced:
                self.dropped += 1
            self._pending = (item,)
            self._cond.notify_all()
            return not replaced

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until nothing is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and self._pending is None, timeout)

    def close(self, timeout: Optional[float] = 10.0, drop_pending: bool = True) -> bool:
        """Stop the thread after the current item; returns False if it did not end in time."""
        with self._cond:
            if drop_pending and self._pending is not None:
                self.dropped += 1
                self._pending = None
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> "LatestWorker[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:  # closed and nothing left
                    self._cond.notify_all()
                    return
                (item,) = self._pending
                self._pending = None
                self._busy = True
            try:
                self._handler(item)
            except Exception as exc:  # noqa: BLE001 - one bad item must not kill the worker
                with self._cond:
                    self.failed += 1
                if self._on_error is not None:
                    try:
                        self._on_error(item, exc)
                    except Exception:  # noqa: BLE001
                        pass
            else:
                with self._cond:
                    self.processed += 1
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
