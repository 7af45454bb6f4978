"""End-to-end latency of roca_node against the bare Predictor, where the rest goes, and memory.

    .venv/bin/python bench/bench_node.py [--size 640x480] [--frames 40] [--checkpoint C | --random-model]
                                         [--memory-frames 1000] [--threads 2]

Interleaved in one run, frame by frame (alternating which goes first), so a load that
changes over time (a training run on the same cores) hits both sides alike:

* bare: ``Predictor.predict`` in this process, on a worker thread like the node's;
* node: the same frame published to ``roca_node`` (started as users start it), one at a time
  (the next goes out after the previous frame's objects arrived, so nothing is dropped);
  latency = image published -> objects received, messages built before the clock starts.

The ratio node / bare is the cost of the ROS adapter and DDS. The node's own per-stage times
come from its ``~/stats``; "outside the node" is end-to-end minus the node's latency stage
(serialisation, DDS both ways, the client's callback). Last, the node's resident memory
after 10 and after ``--memory-frames`` frames. Discovery stays on localhost.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_node_common import (  # noqa: E402
    BenchClient, NodeUnderTest, merge_stage_windows, parse_size, render_frames, resolve_checkpoint, rss_mib,
    stage_table,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="default: the demo model")
    parser.add_argument("--random-model", action="store_true",
                        help="a randomly initialised small model (config/small.yaml) instead of a checkpoint")
    parser.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--memory-frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="for node and bare alike (e.g. 0 makes a random model report max_objects objects)")
    args = parser.parse_args()

    import torch

    from std_msgs.msg import Header

    from roca_core.predictor import Predictor
    from roca_ros.demo_player import camera_info_msg
    from roca_ros.image_conversion import rgb_to_image_msg
    from roca_ros.time_sync import stamp_to_ns

    torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    frames, K = render_frames(args.frames, size)
    checkpoint = resolve_checkpoint(args.checkpoint, args.random_model)
    thresholds = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    predictor = Predictor(checkpoint, device="cpu", max_detections=50, **thresholds)
    bare_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bare-predict")

    node = NodeUnderTest(checkpoint, args.threads, {"stats_period": "1.0", **{k: str(v) for k, v in thresholds.items()}})
    client = None
    try:
        node.wait_ready()
        client = BenchClient()
        client.wait_connected(node)
        images = [rgb_to_image_msg(rgb) for rgb in frames]
        infos = [camera_info_msg(K, size[0], size[1], Header()) for _ in frames]

        def send(i: int, timeout: float = 60.0):
            image, info = images[i % len(images)], infos[i % len(infos)]
            image.header.stamp = info.header.stamp = client.node.get_clock().now().to_msg()
            image.header.frame_id = info.header.frame_id = "camera"
            key = stamp_to_ns(image.header.stamp)
            sent = time.perf_counter()
            client.info_pub.publish(info)
            client.image_pub.publish(image)
            arrived = client.wait_for(key, timeout)
            return None if arrived is None else (arrived - sent) * 1000

        def predict_timed(i: int) -> float:
            t = time.perf_counter()
            predictor.predict(frames[i % len(frames)], K)
            return (time.perf_counter() - t) * 1000

        def bare(i: int) -> float:
            # On a long-lived worker thread, as the node runs it: on this machine the main
            # thread's OpenMP team made predict up to 10x slower under CPU contention.
            return bare_thread.submit(predict_timed, i).result()

        for i in range(3):  # warm-up both
            bare(i)
            while send(i, timeout=5.0) is None:
                pass
        windows_before = len(client.wait_stats(1, 5.0))
        bare_ms, node_ms = [], []
        for i in range(len(frames)):
            if i % 2:
                bare_ms.append(bare(i))
                node_ms.append(send(i))
            else:
                node_ms.append(send(i))
                bare_ms.append(bare(i))
        time.sleep(1.2)  # the stats window that holds the last frames is published
        windows = client.wait_stats(windows_before + 1, 5.0)[windows_before:]
        stages = merge_stage_windows(windows)
        lost = sum(v is None for v in node_ms)
        pair_ratios = [n / b for n, b in zip(node_ms, bare_ms) if n is not None]
        node_ms = [v for v in node_ms if v is not None]

        sent = 3 + len(frames)
        for i in range(max(0, 10 - sent)):
            send(i)
        mem_10 = rss_mib(node.proc.pid)
        t_mem = time.monotonic()
        for i in range(max(0, args.memory_frames - max(10, sent))):
            send(i)
        mem_n = rss_mib(node.proc.pid)
        mem_time = time.monotonic() - t_mem
    finally:
        if client is not None:
            client.close()
        node.stop()

    med_b, p95_b = np.median(bare_ms), np.percentile(bare_ms, 95)
    med_e, p95_e = np.median(node_ms), np.percentile(node_ms, 95)
    node_latency = stages.get("latency", {}).get("mean_ms", float("nan"))
    print(f"\nroca_node benchmark ({len(frames)} frames {size[0]}x{size[1]}, interleaved, {args.threads} threads, "
          f"checkpoint {Path(checkpoint).name}{', no answer for %d' % lost if lost else ''})")
    print("| measure | median ms | p95 ms |")
    print("| --- | ---: | ---: |")
    print(f"| bare Predictor.predict | {med_b:.1f} | {p95_b:.1f} |")
    print(f"| image published -> objects received | {med_e:.1f} | {p95_e:.1f} |")
    print(f"| ratio end-to-end / bare | {med_e / med_b:.3f} | {p95_e / p95_b:.3f} |")
    print(f"| ratio per frame pair (node / bare of the same frame, median) | {np.median(pair_ratios):.3f} | |")
    print(f"| overhead end-to-end - bare | {med_e - med_b:.1f} | |")
    print(f"| of which outside the node (mean end-to-end - node latency) | "
          f"{np.mean(node_ms) - node_latency:.1f} | |")
    print()
    print(stage_table(stages))
    if args.memory_frames <= 10:
        return 0
    print(f"\n| node RSS after 10 frames | after {args.memory_frames} frames | growth | ({mem_time:.0f} s) |")
    print("| ---: | ---: | ---: | --- |")
    print(f"| {mem_10:.1f} MiB | {mem_n:.1f} MiB | {mem_n - mem_10:+.1f} MiB ({(mem_n / mem_10 - 1) * 100:+.1f} %) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
