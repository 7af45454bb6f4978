"""Approximate time pairing of image and camera_info (pure Python, no ROS)."""
from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roca_ros.time_sync import NS_PER_S, ApproximateTimeSync, stamp_to_ns

MS = 1_000_000


def test_exact_stamps_pair_in_either_arrival_order():
    sync = ApproximateTimeSync(slop_s=0.01)
    assert sync.add_image(100 * MS, "img1") == []
    (pair,) = sync.add_info(100 * MS, "info1")
    assert (pair.image, pair.info, pair.image_stamp_ns) == ("img1", "info1", 100 * MS)
    assert sync.add_info(200 * MS, "info2") == []
    (pair,) = sync.add_image(200 * MS, "img2")
    assert (pair.image, pair.info) == ("img2", "info2")
    assert sync.pending_images == 0


def test_stamps_outside_slop_do_not_pair():
    sync = ApproximateTimeSync(slop_s=0.01)
    sync.add_info(100 * MS, "info")
    assert sync.add_image(111 * MS, "img") == []
    assert sync.pending_images == 1
    (pair,) = sync.add_info(112 * MS, "info2")
    assert pair.info == "info2"


def test_closest_info_is_chosen():
    sync = ApproximateTimeSync(slop_s=0.05)
    sync.add_info(100 * MS, "a")
    sync.add_info(130 * MS, "b")
    sync.add_info(160 * MS, "c")
    (pair,) = sync.add_image(135 * MS, "img")
    assert pair.info == "b"


def test_images_are_used_once_and_infos_reused_for_slow_info_rate():
    sync = ApproximateTimeSync(slop_s=0.05)
    sync.add_info(100 * MS, "info")
    assert sync.add_image(100 * MS, "img1")[0].info == "info"
    # A second image near the same info (info published at a lower rate) still pairs.
    assert sync.add_image(120 * MS, "img2")[0].image == "img2"


def test_info_pairs_newest_waiting_image_and_counts_older_as_unpaired():
    sync = ApproximateTimeSync(slop_s=0.1, image_queue_size=10)
    for i in range(3):
        sync.add_image((100 + 10 * i) * MS, f"img{i}")
    (pair,) = sync.add_info(120 * MS, "info")
    assert pair.image == "img2"
    assert sync.unpaired_images == 2
    assert sync.pending_images == 0


def test_queues_are_bounded_when_camera_info_is_silent():
    sync = ApproximateTimeSync(slop_s=0.01, image_queue_size=4, info_queue_size=3)
    for i in range(1000):
        sync.add_image(i * 33 * MS, i)
    assert sync.pending_images == 4
    assert sync.unpaired_images == 996
    for i in range(1000):
        sync.add_info(10**12 + i * MS, i)  # never matching
    assert sync.pending_infos == 3


def test_slop_validation_and_update():
    with pytest.raises(ValueError, match="slop must be > 0"):
        ApproximateTimeSync(slop_s=0.0)
    sync = ApproximateTimeSync(slop_s=0.01)
    with pytest.raises(ValueError, match="slop"):
        sync.slop_s = -1.0
    sync.slop_s = 0.5
    sync.add_info(0, "info")
    assert sync.add_image(400 * MS, "img")  # within the new slop
    with pytest.raises(ValueError, match="queue sizes"):
        ApproximateTimeSync(0.1, image_queue_size=0)


def test_stamp_to_ns():
    class Stamp:
        sec, nanosec = 3, 250
    assert stamp_to_ns(Stamp()) == 3 * NS_PER_S + 250


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2000)), max_size=60),
       st.integers(1, 100))
def test_every_pair_respects_slop_and_images_pair_at_most_once(events, slop_ms):
    sync = ApproximateTimeSync(slop_s=slop_ms / 1000, image_queue_size=3, info_queue_size=4)
    paired_images = []
    for idx, (is_image, t_ms) in enumerate(events):
        pairs = (sync.add_image if is_image else sync.add_info)(t_ms * MS, (idx, t_ms))
        assert len(pairs) <= 1
        for pair in pairs:
            assert abs(pair.image_stamp_ns - pair.info_stamp_ns) <= slop_ms * MS
            assert pair.image[1] * MS == pair.image_stamp_ns and pair.info[1] * MS == pair.info_stamp_ns
            paired_images.append(pair.image[0])
        assert sync.pending_images <= 3 and sync.pending_infos <= 4
    assert len(paired_images) == len(set(paired_images))


def test_concurrent_producers_do_not_corrupt_state():
    sync = ApproximateTimeSync(slop_s=0.002, image_queue_size=5)
    pairs = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def produce(kind):
        rng = random.Random(kind)
        for i in range(2000):
            if i % 4 == 0:
                barrier.wait(5)  # keep the two streams roughly in step, as real topics are
            stamp = i * 10 * MS + rng.randint(0, 1) * MS
            out = sync.add_image(stamp, i) if kind == "image" else sync.add_info(stamp, i)
            with lock:
                pairs.extend(out)

    threads = [threading.Thread(target=produce, args=(k,)) for k in ("image", "info")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    images = [p.image for p in pairs]
    assert len(images) == len(set(images))
    assert len(images) > 1000  # most frames pair despite the interleaving
    assert sync.pending_images <= 5 and sync.pending_infos <= 10
    assert all(abs(p.image_stamp_ns - p.info_stamp_ns) <= 2 * MS for p in pairs)


def test_latest_camera_info_prefers_the_image_frame_and_size_then_the_newest():
    from types import SimpleNamespace

    from roca_ros.latest_camera_info import LatestCameraInfos

    def info(frame: str, width: int, height: int, binning: int = 0):
        return SimpleNamespace(header=SimpleNamespace(frame_id=frame), width=width, height=height,
                               binning_x=binning, binning_y=binning, roi=None)
    infos = LatestCameraInfos(keep=3)
    assert infos.for_image("cam", 640, 480) is None
    colour, binned, depth = info("cam", 640, 480), info("cam", 1280, 960, binning=2), info("depth", 640, 480)
    for item in (colour, binned, depth):
        infos.add(item)
    assert infos.for_image("cam", 640, 480) is binned  # newest of the frame that fits (binned 2x2)
    assert infos.for_image("depth", 640, 480) is depth
    assert infos.for_image("cam", 320, 240) is depth  # none fits: the newest, rejected when paired
    newer = info("cam", 640, 480)
    infos.add(newer)  # replaces colour (same frame and size)
    infos.add(info("other", 10, 10))  # keep=3: evicts the oldest, binned
    assert infos.for_image("cam", 640, 480) is newer
    assert infos.for_image("cam", 1280, 960).header.frame_id == "other"  # nothing fits: the newest


def test_take_newest_image_gives_up_pairing_and_counts_the_older_ones():
    sync: ApproximateTimeSync[str, str] = ApproximateTimeSync(0.01)
    assert sync.take_newest_image() is None
    sync.add_image(1_000_000_000, "a")
    sync.add_image(3_000_000_000, "c")
    sync.add_image(2_000_000_000, "b")
    assert sync.take_newest_image() == (3_000_000_000, "c")
    assert sync.pending_images == 0 and sync.unpaired_images == 2
    assert sync.add_info(3_000_000_000, "i") == []  # "c" is gone: it does not pair later
