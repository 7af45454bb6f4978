"""The single inference worker keeps only the newest item, counts drops, survives errors."""
from __future__ import annotations

import threading
import time

import pytest

from roca_ros.latest_worker import LatestWorker


def test_items_submitted_while_busy_are_replaced_by_the_newest():
    started = threading.Event()
    release = threading.Event()
    seen = []

    def handler(item):
        seen.append(item)
        if item == 0:
            started.set()
            release.wait(5)

    with LatestWorker(handler) as worker:
        worker.submit(0)
        assert started.wait(5)
        results = [worker.submit(i) for i in range(1, 11)]
        assert results == [True] + [False] * 9  # each later one replaced the pending one
        release.set()
        assert worker.wait_idle(5)
        assert seen == [0, 10]
        assert (worker.submitted, worker.processed, worker.dropped, worker.failed) == (11, 2, 9, 0)


def test_handler_runs_on_its_own_thread():
    threads = []
    with LatestWorker(lambda _: threads.append(threading.current_thread()), name="roca-test-worker") as worker:
        worker.submit(None)  # None is a valid item
        assert worker.wait_idle(5)
    assert threads and threads[0] is not threading.current_thread()
    assert threads[0].name == "roca-test-worker"


def test_exceptions_are_counted_and_reported_and_do_not_stop_the_worker():
    errors = []

    def handler(item):
        if item == "bad":
            raise RuntimeError("boom")

    with LatestWorker(handler, on_error=lambda item, exc: errors.append((item, str(exc)))) as worker:
        worker.submit("bad")
        worker.wait_idle(5)
        worker.submit("good")
        worker.wait_idle(5)
        assert (worker.failed, worker.processed) == (1, 1)
    assert errors == [("bad", "boom")]


def test_latency_stays_bounded_with_a_fast_producer():
    """A producer 10x faster than the handler: the worker never falls behind by more than one item."""
    lags = []

    def handler(stamp):
        lags.append(time.monotonic() - stamp)
        time.sleep(0.02)

    with LatestWorker(handler) as worker:
        for _ in range(100):
            worker.submit(time.monotonic())
            time.sleep(0.002)
        worker.wait_idle(5)
        assert worker.dropped > 50
        assert worker.processed + worker.dropped == worker.submitted
    assert max(lags) < 0.2  # a queue would reach ~1.8 s here


def test_close_stops_the_thread_and_rejects_new_items():
    release = threading.Event()
    worker = LatestWorker(lambda _: release.wait(5))
    worker.submit(1)
    worker.submit(2)  # pending while 1 runs
    time.sleep(0.05)
    release.set()
    assert worker.close(timeout=5)
    assert worker.closed
    assert worker.processed + worker.dropped == 2
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(3)


def test_close_can_finish_pending_item():
    done = []
    gate = threading.Event()

    def handler(item):
        gate.wait(5)
        done.append(item)

    worker = LatestWorker(handler)
    worker.submit(1)
    time.sleep(0.05)
    worker.submit(2)
    gate.set()
    assert worker.close(timeout=5, drop_pending=False)
    assert done == [1, 2]
