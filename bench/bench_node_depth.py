"""roca_node's latency with registered depth against RGB only, on the same frames.

    .venv/bin/python bench/bench_node_depth.py [--size 640x480] [--frames 20] [--checkpoint C] [--threads 2]

Two nodes run side by side (started as users start them): ``/rgb`` without depth and ``/rgbd``
with ``depth_topic`` (``refine:=auto``: poses refined against the depth). Each frame of a
synthetic sweep rendered with simulated depth-camera output goes to both, one node at a time
(alternating which goes first, so a changing load hits both alike); the next goes out after
the previous frame's objects arrived. Latency = image published -> objects received. Depth is
published like a RealSense's aligned depth: 16UC1 millimetres, the colour image's size, frame_id
and stamp. The nodes' ``~/stats`` give where the time goes (convert includes the depth
conversion; refine is the pose refinement inside predict).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_node_common import (NodeUnderTest, merge_stage_windows, parse_size, render_sweep,  # noqa: E402
                               resolve_checkpoint)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="default: the demo model")
    parser.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header, String

    from roca_msgs.msg import ObjectAlignmentArray
    from roca_ros.demo_player import camera_info_msg, depth_msg
    from roca_ros.image_conversion import rgb_to_image_msg
    from roca_ros.time_sync import stamp_to_ns

    size = parse_size(args.size)
    rgbs, depths, K = render_sweep(args.frames, size, sensor_depth=True)
    checkpoint = resolve_checkpoint(args.checkpoint, False)
    params = {"stats_period": "1.0"}
    nodes = {"rgb": NodeUnderTest(checkpoint, args.threads, params, namespace="rgb"),
             "rgbd": NodeUnderTest(checkpoint, args.threads, {**params, "depth_topic": "depth"}, namespace="rgbd")}
    rclpy.init()
    client = Node("roca_bench_depth")
    reliable = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
    pubs = {ns: {"image": client.create_publisher(Image, f"/{ns}/image", reliable),
                 "info": client.create_publisher(CameraInfo, f"/{ns}/camera_info", reliable)} for ns in nodes}
    pubs["rgbd"]["depth"] = client.create_publisher(Image, "/rgbd/depth", reliable)
    arrivals: dict[str, dict[int, float]] = {ns: {} for ns in nodes}
    stats: dict[str, list[dict]] = {ns: [] for ns in nodes}
    cond = threading.Condition()

    def on_objects(ns):
        def callback(msg):
            with cond:
                arrivals[ns][stamp_to_ns(msg.header.stamp)] = time.perf_counter()
                cond.notify_all()
        return callback

    for ns in nodes:
        client.create_subscription(ObjectAlignmentArray, f"/{ns}/objects", on_objects(ns), QoSProfile(depth=100))
        client.create_subscription(String, f"/{ns}/roca_node/stats",
                                   lambda m, ns=ns: stats[ns].append(json.loads(m.data)), QoSProfile(depth=100))
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    images = [rgb_to_image_msg(rgb) for rgb in rgbs]
    depth_msgs = [depth_msg(mm, Header()) for mm in depths]
    info = camera_info_msg(K, size[0], size[1], Header())

    def send(ns: str, i: int, timeout: float = 120.0):
        stamp = client.get_clock().now().to_msg()
        header = Header(stamp=stamp, frame_id="camera")
        image, info.header = images[i % len(images)], header
        image.header = header
        if ns == "rgbd":
            depth = depth_msgs[i % len(depth_msgs)]
            depth.header = header
            pubs[ns]["depth"].publish(depth)
        key = stamp_to_ns(stamp)
        sent = time.perf_counter()
        pubs[ns]["info"].publish(info)
        pubs[ns]["image"].publish(image)
        with cond:
            cond.wait_for(lambda: key in arrivals[ns], timeout)
            arrived = arrivals[ns].get(key)
        return None if arrived is None else (arrived - sent) * 1000

    try:
        for node in nodes.values():
            node.wait_ready()
        deadline = time.monotonic() + 60
        while any(p.get_subscription_count() == 0 for ns in pubs for p in pubs[ns].values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not connect")
            time.sleep(0.1)
        time.sleep(0.5)
        for i in range(2):  # warm-up
            for ns in nodes:
                while send(ns, i, timeout=10.0) is None:
                    pass
        time.sleep(1.2)
        before = {ns: len(stats[ns]) for ns in nodes}
        ms: dict[str, list] = {ns: [] for ns in nodes}
        for i in range(len(rgbs)):
            for ns in (("rgb", "rgbd") if i % 2 else ("rgbd", "rgb")):
                ms[ns].append(send(ns, i))
        time.sleep(1.5)
        print(f"roca_node latency, {size[0]}x{size[1]}, {len(rgbs)} frames each, {args.threads} threads per node, "
              f"image published -> objects received (ms):\n")
        print("| input | frames | median | mean | p90 | max | node predict ms | of which refine | convert |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for ns, label in (("rgb", "RGB only"), ("rgbd", "RGB + 16UC1 depth (refine auto)")):
            got = np.array([v for v in ms[ns] if v is not None])
            stages = merge_stage_windows(stats[ns][before[ns]:])
            print(f"| {label} | {len(got)} | {np.median(got):.0f} | {got.mean():.0f} | {np.percentile(got, 90):.0f} | "
                  f"{got.max():.0f} | {stages['predict']['mean_ms']:.0f} | {stages['refine']['mean_ms']:.1f} "
                  f"({stages['refine']['count']} frames) | {stages['convert']['mean_ms']:.1f} |")
        ratio = np.array([d / r for d, r in zip(ms["rgbd"], ms["rgb"]) if d is not None and r is not None])
        print(f"\nper-frame ratio depth / RGB only: median {np.median(ratio):.2f}")
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        for node in nodes.values():
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
