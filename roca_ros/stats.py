"""Frame counters, per-stage latency and throttled rejection warnings of the node (no ROS).

The node reports, every ``stats_period``, how many frames it received, processed, dropped
(replaced while the model was busy) and rejected, with mean and max latency per stage since
the previous report; rejected frames get one warning per kind of problem per throttle
period, so a camera sending garbage at 30 Hz cannot flood the log but every new kind of
problem is still reported at once.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class StageStats:
    """Durations of one stage since the last report (seconds)."""

    count: int = 0
    total: float = 0.0
    maximum: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def as_dict(self) -> dict:
        return {"count": self.count, "mean_ms": round(self.mean * 1e3, 3), "max_ms": round(self.maximum * 1e3, 3)}


# Where a frame's time goes, in order (seconds; reported as mean/max milliseconds):
# transport  header stamp -> image callback (DDS and driver; only for wall-clock stamps)
# sync       image callback -> paired with its camera_info
# handoff    paired -> the worker starts on it (waits for the frame in flight)
# convert    Image message -> RGB array (a view for unpadded rgb8)
# predict    the model (Predictor.predict)
# refine     of which pose refinement against depth (Predictor.last_refine_seconds; frames that refined)
# build      ObjectAlignmentArray, MarkerArray (and debug image) messages
# publish    rclpy publish calls (serialisation, hand-over to DDS)
# latency    image callback -> all results published (the node's part of end-to-end latency)
STAGES: tuple[str, ...] = ("transport", "sync", "handoff", "convert", "predict", "refine", "build", "publish",
                           "latency")


@dataclass
class NodeStats:
    """Cumulative frame counters plus per-stage latency windows (thread-safe)."""

    received: int = 0
    paired: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    errors: int = 0
    unpaired: int = 0
    with_depth: int = 0  # processed frames that had a depth image (depth_topic)
    without_depth: int = 0
    rejections_by_kind: dict[str, int] = field(default_factory=dict)
    stages: dict[str, StageStats] = field(default_factory=lambda: {s: StageStats() for s in STAGES})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def reject(self, kind: str) -> None:
        with self._lock:
            self.rejected += 1
            if kind not in self.rejections_by_kind and len(self.rejections_by_kind) >= MAX_KINDS:
                kind = "other"
            self.rejections_by_kind[kind] = self.rejections_by_kind.get(kind, 0) + 1

    def record(self, **stage_seconds: float) -> None:
        with self._lock:
            for stage, seconds in stage_seconds.items():
                self.stages[stage].add(seconds)

    def snapshot(self, reset_stages: bool = True) -> dict:
        """Counters and stage statistics as a JSON-friendly dict; restarts the stage windows."""
        with self._lock:
            out = {
                "received": self.received, "paired": self.paired, "processed": self.processed,
                "dropped": self.dropped, "rejected": self.rejected, "errors": self.errors,
                "unpaired": self.unpaired, "with_depth": self.with_depth, "without_depth": self.without_depth,
                "rejections_by_kind": dict(self.rejections_by_kind),
                "stages": {name: s.as_dict() for name, s in self.stages.items()},
            }
            if reset_stages:
                self.stages = {s: StageStats() for s in STAGES}
            return out


def format_report(snapshot: dict) -> str:
    """One log line: counters, then mean/max milliseconds per stage."""
    counters = " ".join(f"{k}={snapshot[k]}" for k in ("received", "processed", "dropped", "unpaired", "rejected",
                                                        "errors"))
    stages = ", ".join(f"{name} {s['mean_ms']:.1f}/{s['max_ms']:.1f}"
                       for name, s in snapshot["stages"].items() if s["count"])
    return f"frames: {counters}" + (f" | ms mean/max: {stages}" if stages else "")


_NUMBERS = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_LISTS = re.compile(r"\[[^\]]*\]")
MAX_KINDS = 64  # bounded bookkeeping even for a stream of ever-different garbage


def rejection_kind(source: str, message: str) -> str:
    """Group messages that differ only in numbers, quoted names or lists.

    ``step 20 ...`` and ``step 21 ...`` are one kind, as are ``encoding 'yuv422'`` and
    ``encoding 'abc'``, so a stream of garbage cannot grow the per-kind tables.
    """
    text = _LISTS.sub("[...]", _QUOTED.sub("'...'", message))
    return f"{source}: " + _NUMBERS.sub("#", text)[:80]


class ThrottledReporter:
    """Calls ``emit(text)`` at most once per ``period_s`` for each kind of message.

    Suppressed occurrences are counted and mentioned in the next emitted line of that kind.
    """

    def __init__(self, emit: Callable[[str], None], period_s: float = 5.0,
                 clock: Optional[Callable[[], float]] = None) -> None:
        self._emit = emit
        self._period = float(period_s)
        self._clock = clock or time.monotonic
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def tracked_kinds(self) -> int:
        """How many kinds are remembered (bounded; for monitoring and tests)."""
        with self._lock:
            return len(self._last)

    def report(self, kind: str, text: str) -> bool:
        """Returns True when the message was emitted, False when throttled."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._period:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            if len(self._last) >= 4 * MAX_KINDS:  # forget kinds whose throttle period is over
                self._last = {k: t for k, t in self._last.items() if now - t < self._period}
                self._suppressed = {k: n for k, n in self._suppressed.items() if k in self._last}
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            text += f" ({suppressed} similar suppressed in the last {self._period:g} s)"
        self._emit(text)
        return True
