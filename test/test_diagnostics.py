"""roca_ros.diagnostics.assess: the level and message for each state the node can be in."""
from __future__ import annotations

import pytest

from roca_ros.diagnostics import ERROR, OK, WARN, assess, to_status

PAIRING = {"image topic": "/camera/color/image_raw", "camera_info_mode": "synced"}


def counters(received=0, processed=0, dropped=0, rejected=0, unpaired=0, errors=0, kinds=None) -> dict:
    return {"received": received, "processed": processed, "dropped": dropped, "rejected": rejected,
            "unpaired": unpaired, "errors": errors, "rejections_by_kind": kinds or {}}


def test_healthy_stream_is_ok_with_rates_and_drop_ratio():
    result = assess(counters(60, 20, 40), counters(30, 10, 20), 1.0, 0.03, PAIRING)
    assert result.level == OK and "10.0 Hz of 30.0 Hz input" in result.message
    assert result.values["input rate (Hz)"] == "30.00" and result.values["processing rate (Hz)"] == "10.00"
    assert result.values["drop ratio"] == "0.667" and result.values["camera_info_mode"] == "synced"


@pytest.mark.parametrize("now,before,age,level,message", [
    (counters(), None, None, ERROR, "no image received on /camera/color/image_raw"),
    (counters(30, 30), counters(30, 30), 12.0, ERROR, "last image on /camera/color/image_raw 12.0 s ago"),
    (counters(30, 30), counters(30, 30), 3.0, WARN, "input stale: last image 3.0 s ago"),
    (counters(30, 0, unpaired=25), counters(), 0.05, WARN, "none processed: unpaired (see camera_info_mode)"),
    (counters(30, 0, rejected=30, kinds={"image: unsupported image encoding": 30}), counters(), 0.05, WARN,
     "none processed: rejected"),
    (counters(30, 20, rejected=2), counters(), 0.05, WARN, "2 frames rejected in the last 1.0 s"),
])
def test_stale_missing_unpaired_and_rejected_input_is_flagged(now, before, age, level, message):
    result = assess(now, before, 1.0, age, PAIRING)
    assert result.level == level and message in result.message, result.message


def test_status_message_carries_rejection_kinds():
    result = assess(counters(30, 0, rejected=30, kinds={"image: unsupported image encoding": 30}), None, 1.0, 0.1,
                    PAIRING)
    status = to_status(result, "/roca/roca_node: input and inference", "/camera/color/image_raw")
    values = {kv.key: kv.value for kv in status.values}
    assert values["rejected: image: unsupported image encoding"] == "30"
    assert status.level == WARN and status.hardware_id == "/camera/color/image_raw"


def test_lost_depth_is_a_warning_and_the_depth_state_is_shown():
    pairing = dict(PAIRING, **{"depth topic": "/camera/aligned_depth_to_color/image_raw", "depth": "paired"})
    assert assess(counters(60, 20), counters(30, 10), 1.0, 0.03, pairing).level == OK
    lost = assess(counters(60, 20), counters(30, 10), 1.0, 0.03, dict(pairing, depth="lost: RGB only"))
    assert lost.level == WARN and lost.message == "no depth on /camera/aligned_depth_to_color/image_raw: RGB only"
    assert lost.values["depth"] == "lost: RGB only"
