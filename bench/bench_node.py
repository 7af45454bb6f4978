"""End-to-end latency of roca_node against the bare Predictor, and the node's memory over time.

    .venv/bin/python bench/bench_node.py [--checkpoint C] [--frames 30] [--memory-frames 1000]

1. The bare ``Predictor.predict`` on N frames of a synthetic sweep (median, p95).
2. The same frames through ROS: published by this process, one at a time (the next frame goes
   out when the objects of the previous one arrived, so nothing is dropped), into ``roca_node``
   started as users start it; latency = image published -> objects received. The ratio to (1)
   is the cost of the ROS adapter (conversion, sync, worker hand-off, publishing, DDS).
3. The node's resident memory after 10 frames and after ``--memory-frames`` frames.
All in one run, printed as one table. Discovery stays on localhost.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))

import numpy as np  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="default: the demo model")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--memory-frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import cv2
    import torch

    from roca_core.data.sequence import load_sequence
    from roca_core.predictor import Predictor, default_checkpoint

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or str(default_checkpoint())
    # Rendered in a child process: Mesa's EGL context and torch's CPU kernels in one process
    # have crashed here (segfault), so the renderer never shares a process with inference.
    seq_dir = Path("/tmp") / f"roca_bench_seq_{os.getpid()}"
    subprocess.run([sys.executable, "-c", "import sys; from roca_core.data.sequence import render_sequence; "
                    f"render_sequence(sys.argv[1], num_frames={args.frames}, seed=11)", str(seq_dir)], check=True)
    seq = load_sequence(seq_dir)
    frames = [cv2.cvtColor(cv2.imread(str(seq_dir / f["file"])), cv2.COLOR_BGR2RGB) for f in seq["frames"]]
    K = seq["K"]

    predictor = Predictor(checkpoint, device="cpu")
    predictor.predict(frames[0], K)  # warm-up
    bare = []
    for rgb in frames:
        t = time.perf_counter()
        predictor.predict(rgb, K)
        bare.append((time.perf_counter() - t) * 1000)
    del predictor

    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from roca_msgs.msg import ObjectAlignmentArray
    from roca_ros.demo_player import camera_info_msg
    from roca_ros.image_conversion import rgb_to_image_msg
    from roca_ros.time_sync import stamp_to_ns

    node_cmd = [str(Path(sys.executable).parent / "roca_node"), "--ros-args", "-p", f"checkpoint:={checkpoint}",
                "-p", "device:=cpu", "-p", "stats_period:=0.0", "-p", "publish_debug_image:=false"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.Popen(node_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    rclpy.init()
    node = Node("roca_bench")
    qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
    img_pub = node.create_publisher(Image, "/roca/image", qos)
    info_pub = node.create_publisher(CameraInfo, "/roca/camera_info", qos)
    received: dict[int, float] = {}

    def on_objects(msg: ObjectAlignmentArray) -> None:
        received[stamp_to_ns(msg.header.stamp)] = time.perf_counter()

    node.create_subscription(ObjectAlignmentArray, "/roca/objects", on_objects, QoSProfile(depth=50))

    def send(i: int, timeout: float = 30.0) -> "float | None":
        header = Header(frame_id="camera", stamp=node.get_clock().now().to_msg())
        key = stamp_to_ns(header.stamp)
        info_pub.publish(camera_info_msg(K, seq["width"], seq["height"], header))
        sent = time.perf_counter()
        img_pub.publish(rgb_to_image_msg(frames[i % len(frames)], header))
        deadline = sent + timeout
        while key not in received and time.perf_counter() < deadline:
            rclpy.spin_once(node, timeout_sec=0.01)
        return (received[key] - sent) * 1000 if key in received else None

    try:
        deadline = time.monotonic() + 120
        while img_pub.get_subscription_count() == 0 or node.count_publishers("/roca/objects") == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                print("the node did not start", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        while send(0, timeout=2.0) is None:  # warm-up until the pipeline answers
            pass
        e2e = [v for v in (send(i) for i in range(len(frames))) if v is not None]
        sent_total = len(frames) + 1
        for i in range(max(0, 10 - sent_total)):
            send(i)
        mem_10 = rss_mib(proc.pid)
        t_mem = time.monotonic()
        for i in range(args.memory_frames - max(10, sent_total)):
            send(i)
        mem_n = rss_mib(proc.pid)
        mem_time = time.monotonic() - t_mem
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        node.destroy_node()
        rclpy.try_shutdown()

    med_b, p95_b = np.median(bare), np.percentile(bare, 95)
    med_e, p95_e = np.median(e2e), np.percentile(e2e, 95)
    print(f"\nroca_node benchmark ({len(frames)} frames {seq['width']}x{seq['height']}, {args.threads} threads, "
          f"checkpoint {Path(checkpoint).name})")
    print("| measure | median | p95 |")
    print("| --- | ---: | ---: |")
    print(f"| bare Predictor.predict (ms) | {med_b:.1f} | {p95_b:.1f} |")
    print(f"| image published -> objects received (ms) | {med_e:.1f} | {p95_e:.1f} |")
    print(f"| ratio end-to-end / bare | {med_e / med_b:.2f} | {p95_e / p95_b:.2f} |")
    print(f"\n| node RSS after 10 frames | after {args.memory_frames} frames | growth | ({mem_time:.0f} s) |")
    print("| ---: | ---: | ---: | --- |")
    print(f"| {mem_10:.1f} MiB | {mem_n:.1f} MiB | {mem_n - mem_10:+.1f} MiB ({(mem_n / mem_10 - 1) * 100:+.1f} %) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
