"""The node's health as diagnostic_msgs/DiagnosticStatus, for /diagnostics (rqt_robot_monitor,
diagnostic_aggregator) instead of a log line every few seconds.

:func:`assess` is pure: two counter snapshots (:meth:`roca_ros.stats.NodeStats.snapshot`), the
time between them and the age of the newest image give the level, a one-line message and the
values: input and processing rates, drop ratio, input age, rejections by kind, pairing state.

* ERROR: no image received at all, or none for ``no_input_after_s``;
* WARN: the newest image is older than ``stale_after_s``, images arrive but none is processed
  (unpaired or rejected), frames were rejected in this period, or the depth topic went silent
  (``pairing["depth"]`` starts with "lost": the node runs RGB-only);
* OK otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"  # DiagnosticStatus levels (byte fields)
STALE_AFTER_S = 2.0
NO_INPUT_AFTER_S = 10.0


@dataclass
class Assessment:
    level: bytes
    message: str
    values: dict[str, str] = field(default_factory=dict)


def assess(now: dict, before: Optional[dict], elapsed_s: float, input_age_s: Optional[float],
           pairing: dict[str, str], stale_after_s: float = STALE_AFTER_S,
           no_input_after_s: float = NO_INPUT_AFTER_S) -> Assessment:
    """Level, message and values for one diagnostics period (``before`` None: the first one)."""
    before = before or {k: 0 for k in ("received", "processed", "dropped", "rejected", "unpaired")}
    delta = {k: now[k] - before.get(k, 0) for k in ("received", "processed", "dropped", "rejected", "unpaired")}
    period = max(elapsed_s, 1e-9)
    received = delta["received"]
    values = {
        "input rate (Hz)": f"{received / period:.2f}",
        "processing rate (Hz)": f"{delta['processed'] / period:.2f}",
        "drop ratio": f"{delta['dropped'] / received:.3f}" if received else "0.000",
        "input age (s)": "never" if input_age_s is None else f"{input_age_s:.2f}",
        "received": str(now["received"]), "processed": str(now["processed"]), "dropped": str(now["dropped"]),
        "unpaired": str(now["unpaired"]), "rejected": str(now["rejected"]), "errors": str(now["errors"]),
    }
    values.update({f"rejected: {kind}": str(count) for kind, count in sorted(now["rejections_by_kind"].items())})
    values.update(pairing)
    topic = pairing.get("image topic", "the image topic")
    if input_age_s is None:
        return Assessment(ERROR, f"no input: no image received on {topic}", values)
    if input_age_s > no_input_after_s:
        return Assessment(ERROR, f"no input: last image on {topic} {input_age_s:.1f} s ago", values)
    if input_age_s > stale_after_s:
        return Assessment(WARN, f"input stale: last image {input_age_s:.1f} s ago", values)
    if received and not delta["processed"]:
        reason = "unpaired (see camera_info_mode)" if delta["unpaired"] else "rejected" if delta["rejected"] else \
            "waiting for the model"
        return Assessment(WARN, f"{received} images received, none processed: {reason}", values)
    if delta["rejected"]:
        return Assessment(WARN, f"{delta['rejected']} frames rejected in the last {elapsed_s:.1f} s", values)
    if pairing.get("depth", "").startswith("lost"):
        return Assessment(WARN, f"no depth on {pairing.get('depth topic', 'the depth topic')}: RGB only", values)
    return Assessment(OK, f"processing {delta['processed'] / period:.1f} Hz of {received / period:.1f} Hz input",
                      values)


def to_status(assessment: Assessment, name: str, hardware_id: str) -> Any:
    """Assessment -> diagnostic_msgs/DiagnosticStatus."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    return DiagnosticStatus(level=assessment.level, name=name, message=assessment.message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in assessment.values.items()])


def discovery_range() -> str:
    """The DDS discovery range this process runs with, as rmw reads it from the environment."""
    value = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if value:
        return value
    if os.environ.get("ROS_LOCALHOST_ONLY") == "1":
        return "LOCALHOST (ROS_LOCALHOST_ONLY=1)"
    return "SUBNET (ROS_AUTOMATIC_DISCOVERY_RANGE unset)"
