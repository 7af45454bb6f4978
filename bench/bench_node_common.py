"""Shared by the node benchmarks: frames, the node process, a non-polling ROS client, stats.

The client spins its executor on a background thread that blocks in the middleware wait, and
the benchmark thread waits on a condition variable: the measuring process itself costs no
CPU while the node works (a polling client would compete with the model for the cores).
Discovery stays on localhost.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
REPO = Path(__file__).resolve().parents[1]
# Fast DDS's default transports lose best-effort images of about 1 MB and more between
# processes (config/fastdds_large_images.xml says why); this process and the node use the
# profile the README recommends for cameras, so the benchmarks measure the node, not losses.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_images.xml"))

import numpy as np  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def render_frames(count: int, size: tuple[int, int], seed: int = 11) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` RGB frames of a synthetic sweep at ``size`` (width, height) and their K."""
    frames, _depths, K = render_sweep(count, size, seed)
    return frames, K


def render_sweep(count: int, size: tuple[int, int], seed: int = 11, sensor_depth: bool = False
                 ) -> tuple[list[np.ndarray], "list[np.ndarray] | None", np.ndarray]:
    """(RGB frames, 16-bit millimetre sensor depth frames or None, K) of a synthetic sweep at
    ``size`` (width, height).

    Rendered in a child process: Mesa's EGL context and torch's CPU kernels in one process
    have crashed here (segfault), so the renderer never shares a process with inference.
    """
    import cv2

    from roca_core.data.sequence import load_sequence
    from roca_core.geometry.camera import scale_intrinsics

    kind = "rgbd" if sensor_depth else "seq"
    seq_dir = Path("/tmp") / f"roca_bench_{kind}_{os.getpid()}_{count}_{seed}"
    if not (seq_dir / "sequence.json").is_file():
        subprocess.run([sys.executable, "-c", "import sys; from roca_core.data.sequence import render_sequence; "
                        f"render_sequence(sys.argv[1], num_frames={count}, seed={seed}, "
                        f"sensor_depth={sensor_depth})", str(seq_dir)], check=True)
    seq = load_sequence(seq_dir)
    width, height = size
    K = scale_intrinsics(seq["K"], (seq["height"], seq["width"]), (height, width))
    frames, depths = [], []
    for f in seq["frames"]:
        bgr = cv2.imread(str(seq_dir / f["file"]))
        frames.append(cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR),
                                   cv2.COLOR_BGR2RGB))
        if sensor_depth:  # nearest: averaging would blend depths across edges and holes
            mm = cv2.imread(str(seq_dir / f["depth_file"]), cv2.IMREAD_UNCHANGED)
            depths.append(cv2.resize(mm, (width, height), interpolation=cv2.INTER_NEAREST))
    return frames, (depths if sensor_depth else None), K


def resolve_checkpoint(path: str, random_model: bool) -> str:
    """The checkpoint to benchmark: given, a fresh random small model, or the demo model."""
    if random_model:
        import torch

        from roca_core.checkpoint import save_checkpoint
        from roca_core.model import RocaModel
        from roca_core.model.config import ModelConfig

        torch.manual_seed(0)
        cfg = ModelConfig.from_yaml(REPO / "config" / "small.yaml")
        out = Path("/tmp") / f"roca_bench_random_{os.getpid()}.safetensors"
        save_checkpoint(out, RocaModel(cfg), cfg)
        return str(out)
    if path:
        return path
    from roca_core.predictor import default_checkpoint
    return str(default_checkpoint())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class NodeUnderTest:
    """roca_node started as users start it (console entry point), log in a file."""

    def __init__(self, checkpoint: str, threads: int, params: Optional[dict[str, str]] = None,
                 namespace: str = "") -> None:
        exe = Path(sys.executable).parent / "roca_node"
        command = [str(exe), "--ros-args", "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu",
                   "-p", "publish_debug_image:=false"]
        for name, value in (params or {}).items():
            command += ["-p", f"{name}:={value}"]
        if namespace:
            command += ["-r", f"__ns:=/{namespace.strip('/')}"]
        self.log_path = Path("/tmp") / f"roca_bench_node_{os.getpid()}{'_' + namespace.strip('/') if namespace else ''}.log"
        self._log = open(self.log_path, "w")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), RCUTILS_COLORIZED_OUTPUT="0")
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready:" not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"roca_node did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class BenchClient:
    """Publishes frames to /roca, records when each frame's objects arrive and every ~/stats."""

    def __init__(self, camera_qos: bool = False) -> None:
        """camera_qos: publish best effort like a camera driver; else reliable (no frame lost)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from roca_msgs.msg import ObjectAlignmentArray

        rclpy.init()
        self._rclpy = rclpy
        self.node = Node("roca_bench")
        qos = qos_profile_sensor_data if camera_qos else QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "/roca/image", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "/roca/camera_info", qos)
        self.arrivals: dict[int, float] = {}
        self.stats: list[dict] = []
        self._cond = threading.Condition()
        self.node.create_subscription(ObjectAlignmentArray, "/roca/objects", self._on_objects, QoSProfile(depth=100))
        self.node.create_subscription(String, "/roca/roca_node/stats", self._on_stats, QoSProfile(depth=100))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown
            pass

    def _on_objects(self, msg) -> None:
        arrived = time.perf_counter()
        from roca_ros.time_sync import stamp_to_ns
        with self._cond:
            self.arrivals[stamp_to_ns(msg.header.stamp)] = arrived
            self._cond.notify_all()

    def _on_stats(self, msg) -> None:
        with self._cond:
            self.stats.append(json.loads(msg.data))
            self._cond.notify_all()

    def wait_connected(self, node: NodeUnderTest, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.image_pub.get_subscription_count() == 0 or self.node.count_publishers("/roca/objects") == 0:
            if time.monotonic() > deadline or node.proc.poll() is not None:
                raise RuntimeError("the node did not connect")
            time.sleep(0.1)
        time.sleep(0.5)

    def wait_for(self, stamp_ns: int, timeout: float) -> Optional[float]:
        """perf_counter() at which the objects of ``stamp_ns`` arrived, None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: stamp_ns in self.arrivals, timeout)
            return self.arrivals.get(stamp_ns)

    def wait_stats(self, count: int, timeout: float) -> list[dict]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.stats) >= count, timeout)
            return list(self.stats)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown()


def merge_stage_windows(snapshots: list[dict]) -> dict[str, dict]:
    """Per-stage count, mean and max over several ~/stats windows."""
    merged: dict[str, dict] = {}
    for snap in snapshots:
        for name, stage in snap["stages"].items():
            m = merged.setdefault(name, {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
            m["count"] += stage["count"]
            m["total_ms"] += stage["mean_ms"] * stage["count"]
            m["max_ms"] = max(m["max_ms"], stage["max_ms"])
    return {name: {"count": m["count"], "mean_ms": m["total_ms"] / m["count"] if m["count"] else 0.0,
                   "max_ms": m["max_ms"]} for name, m in merged.items()}


def stage_table(stages: dict[str, dict]) -> str:
    lines = ["| node stage (~/stats) | frames | mean ms | max ms |", "| --- | ---: | ---: | ---: |"]
    for name, s in stages.items():
        if s["count"]:
            lines.append(f"| {name} | {s['count']} | {s['mean_ms']:.2f} | {s['max_ms']:.2f} |")
    return "\n".join(lines)
