"""roca_node fed at camera rate, faster than the model: bounded latency, counted drops, flat memory.

    .venv/bin/python bench/bench_node_camera.py [--sizes 640x480,1280x720] [--rate 30] [--frames 10000]
                                                [--checkpoint C | --random-model] [--threads 2]

Per size, a fresh roca_node gets ``--frames`` image + camera_info pairs at ``--rate`` Hz,
best effort like a camera driver (sensor-data QoS). Reported:

* end-to-end latency (image published -> objects received) of the answered frames, median,
  p95, max, against the bound ``2 x p95 model time + overhead``: a frame waits at most for
  the frame in flight, then for its own inference (the model time is each result's
  ``inference_time``; the overhead is the node's other stages from ~/stats);
* the node's counters: received, processed, dropped (replaced while the model was busy),
  unpaired, rejected; frames lost before the node (published - received);
* the node's resident memory over the run: first sample after warm-up, last, maximum.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_node_common import (  # noqa: E402
    BenchClient, NodeUnderTest, merge_stage_windows, parse_size, render_frames, resolve_checkpoint, rss_mib,
)

WARMUP_S = 5.0


def run_size(size: tuple[int, int], frames: list[np.ndarray], K: np.ndarray, args, checkpoint: str) -> dict:
    from std_msgs.msg import Header

    from roca_msgs.msg import ObjectAlignmentArray
    from roca_ros.demo_player import camera_info_msg
    from roca_ros.image_conversion import rgb_to_image_msg
    from roca_ros.time_sync import stamp_to_ns

    node = NodeUnderTest(checkpoint, args.threads, {"stats_period": "2.0"})
    client = None
    try:
        node.wait_ready()
        client = BenchClient(camera_qos=True)
        inference: dict[int, float] = {}
        client.node.create_subscription(
            ObjectAlignmentArray, "/roca/objects",
            lambda m: inference.__setitem__(stamp_to_ns(m.header.stamp), m.inference_time * 1000), 100)
        client.wait_connected(node)
        images = [rgb_to_image_msg(rgb) for rgb in frames]
        infos = [camera_info_msg(K, size[0], size[1], Header()) for _ in frames]

        sent_at: dict[int, float] = {}
        memory: list[tuple[int, float]] = []
        period = 1.0 / args.rate
        start = time.perf_counter()
        warm_index = None
        for i in range(args.frames):
            target = start + i * period
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            image, info = images[i % len(images)], infos[i % len(infos)]
            image.header.stamp = info.header.stamp = client.node.get_clock().now().to_msg()
            image.header.frame_id = info.header.frame_id = "camera"
            sent_at[stamp_to_ns(image.header.stamp)] = time.perf_counter()
            client.info_pub.publish(info)
            client.image_pub.publish(image)
            if warm_index is None and time.perf_counter() - start > WARMUP_S:
                warm_index = i
            if i % 250 == 0:
                memory.append((i, rss_mib(node.proc.pid)))
        publish_s = time.perf_counter() - start
        time.sleep(3.0)  # the last frame is answered, the last stats window published
        memory.append((args.frames, rss_mib(node.proc.pid)))
        stats = client.wait_stats(1, 5.0)
    finally:
        if client is not None:
            client.close()
        node.stop()

    answered = [(stamp, client.arrivals[stamp] - t) for stamp, t in sent_at.items() if stamp in client.arrivals]
    latencies = np.array([dt * 1000 for _, dt in answered])
    model = np.array([inference[s] for s, _ in answered if s in inference])
    stages = merge_stage_windows(stats)
    overhead = sum(stages.get(name, {}).get("mean_ms", 0.0)
                   for name in ("transport", "sync", "convert", "build", "publish"))
    after_warmup = [m for i, m in memory if warm_index is not None and i >= warm_index] or [memory[-1][1]]
    return {
        "size": size, "sent": args.frames, "rate": args.frames / publish_s, "final": stats[-1],
        "answered": len(answered), "latency": latencies, "model": model, "overhead": overhead,
        "memory_first": after_warmup[0], "memory_last": memory[-1][1], "memory_max": max(m for _, m in memory),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="default: the demo model")
    parser.add_argument("--random-model", action="store_true",
                        help="a randomly initialised small model (config/small.yaml) instead of a checkpoint")
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    checkpoint = resolve_checkpoint(args.checkpoint, args.random_model)
    results = []
    for text in args.sizes.split(","):
        size = parse_size(text)
        frames, K = render_frames(30, size)
        results.append(run_size(size, frames, K, args, checkpoint))

    print(f"\nroca_node at camera rate ({args.frames} frames per size at {args.rate:g} Hz, best effort, "
          f"{args.threads} threads, checkpoint {Path(checkpoint).name})")
    print("| size | sent (Hz) | received | processed | dropped | unpaired | rejected | lost before node |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        f = r["final"]
        print(f"| {r['size'][0]}x{r['size'][1]} | {r['sent']} ({r['rate']:.1f}) | {f['received']} | {f['processed']} "
              f"| {f['dropped']} | {f['unpaired']} | {f['rejected']} | {r['sent'] - f['received']} |")
    print("\n| size | answered | latency median / p95 / max ms | model p95 ms | bound 2 x model p95 + overhead ms "
          "| p95 within bound |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        lat, model = r["latency"], r["model"]
        bound = 2 * np.percentile(model, 95) + r["overhead"]
        p95 = np.percentile(lat, 95)
        print(f"| {r['size'][0]}x{r['size'][1]} | {r['answered']} | {np.median(lat):.0f} / {p95:.0f} / "
              f"{lat.max():.0f} | {np.percentile(model, 95):.0f} | {bound:.0f} | {'yes' if p95 <= bound else 'NO'} |")
    print("\n| size | node RSS after warm-up | at the end | max | growth |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['size'][0]}x{r['size'][1]} | {r['memory_first']:.1f} MiB | {r['memory_last']:.1f} MiB | "
              f"{r['memory_max']:.1f} MiB | {r['memory_last'] - r['memory_first']:+.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
