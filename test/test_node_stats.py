"""Frame counters, latency windows and throttled warnings of the node (no ROS)."""
from __future__ import annotations

import threading

from roca_ros.stats import MAX_KINDS, NodeStats, ThrottledReporter, format_report, rejection_kind


def test_snapshot_reports_mean_and_max_then_restarts_the_window():
    stats = NodeStats()
    stats.count("received", 3)
    stats.count("processed")
    stats.record(predict=0.1, convert=0.002)
    stats.record(predict=0.3, convert=0.004)
    snap = stats.snapshot()
    assert (snap["received"], snap["processed"]) == (3, 1)
    assert snap["stages"]["predict"] == {"count": 2, "mean_ms": 200.0, "max_ms": 300.0}
    assert snap["stages"]["convert"]["mean_ms"] == 3.0
    again = stats.snapshot()
    assert again["stages"]["predict"]["count"] == 0 and again["received"] == 3  # counters are cumulative


def test_rejections_are_counted_per_kind():
    stats = NodeStats()
    for msg in ("image step 20 is smaller than width 7", "image step 33 is smaller than width 12"):
        stats.reject(rejection_kind("image", msg))
    stats.reject(rejection_kind("camera_info", "camera K is all zeros"))
    snap = stats.snapshot()
    assert snap["rejected"] == 3
    assert snap["rejections_by_kind"] == {"image: image step # is smaller than width #": 2,
                                          "camera_info: camera K is all zeros": 1}


def test_format_report_lists_counters_and_only_stages_with_data():
    stats = NodeStats()
    stats.count("received", 10)
    stats.count("dropped", 7)
    stats.unpaired = 2
    stats.record(latency=0.5)
    line = format_report(stats.snapshot())
    assert line.startswith("frames: received=10 processed=0 dropped=7 unpaired=2 rejected=0 errors=0")
    assert "latency 500.0/500.0" in line and "predict" not in line


def test_throttled_reporter_emits_each_kind_once_per_period_and_counts_suppressed():
    now = [0.0]
    lines = []
    reporter = ThrottledReporter(lines.append, period_s=5.0, clock=lambda: now[0])
    assert reporter.report("a", "first a")
    assert not reporter.report("a", "second a")
    assert reporter.report("b", "first b")  # another kind is not held back by "a"
    now[0] = 4.9
    assert not reporter.report("a", "third a")
    now[0] = 5.1
    assert reporter.report("a", "fourth a")
    assert lines == ["first a", "first b", "fourth a (2 similar suppressed in the last 5 s)"]


def test_counters_are_thread_safe():
    stats = NodeStats()

    def work():
        for _ in range(5000):
            stats.count("received")
            stats.record(predict=0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = stats.snapshot()
    assert snap["received"] == 20000 and snap["stages"]["predict"]["count"] == 20000


def test_kind_tables_stay_bounded_for_ever_different_garbage():
    assert rejection_kind("image", "unsupported image encoding 'abc'; supported: ['a', 'b']") == \
        rejection_kind("image", "unsupported image encoding 'xyz'; supported: ['a', 'b']")
    stats = NodeStats()
    now = [0.0]
    reporter = ThrottledReporter(lambda _: None, period_s=1.0, clock=lambda: now[0])
    for i in range(10 * MAX_KINDS):
        kind = f"image: problem number {chr(65 + i % 26)}{i // 26}"  # letters survive the grouping
        stats.reject(kind)
        reporter.report(kind, "x")
        now[0] += 0.1
    snap = stats.snapshot()
    assert len(snap["rejections_by_kind"]) == MAX_KINDS + 1 and snap["rejections_by_kind"]["other"] > 0
    assert sum(snap["rejections_by_kind"].values()) == 10 * MAX_KINDS
    assert reporter.tracked_kinds <= 4 * MAX_KINDS
