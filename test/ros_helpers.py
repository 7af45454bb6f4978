"""Shared by the tests that run roca nodes as separate processes and talk to them over ROS.

Network safety: every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; each test module
picks a ROS domain of its own (:func:`private_domain_id`) so modules never hear each other.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from roca_msgs.msg import CadDatabaseInfo, ObjectAlignmentArray
from roca_msgs.srv import ReloadCadDatabase
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from roca_ros.image_conversion import rgb_to_image_msg
from roca_ros.time_sync import stamp_to_ns

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WIDTH, HEIGHT = 320, 240
K_LIST = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
START_TIMEOUT_S = 120.0


def private_domain_id() -> int:
    """A ROS domain other than the one conftest gave the rest of the suite."""
    return random.SystemRandom().choice([d for d in range(100, 201) if str(d) != os.environ.get("ROS_DOMAIN_ID")])


def save_random_checkpoint(path: Path) -> Path:
    """A randomly initialised small model (config/small.yaml): fast, for plumbing tests."""
    import torch

    from roca_core.checkpoint import save_checkpoint
    from roca_core.model import RocaModel
    from roca_core.model.config import ModelConfig

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = ModelConfig.from_yaml(REPO / "config" / "small.yaml")
    save_checkpoint(path, RocaModel(cfg), cfg)
    return path


def node_env(domain_id: int, base: Optional[dict] = None) -> dict[str, str]:
    return dict(os.environ if base is None else base, ROS_DOMAIN_ID=str(domain_id),
                ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
                OMP_NUM_THREADS="2")


def executable_command(name: str = "roca_node") -> list[str]:
    exe = VENV_BIN / name
    module = {"roca_node": "roca_ros.node", "roca_lifecycle_node": "roca_ros.lifecycle_node"}[name]
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", module]


class NodeProcess:
    """A node subprocess whose log goes to a file (no pipe to fill up)."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str], cwd: Path = REPO) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.1)
        return False

    def stop(self, sig=signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def make_frame(rgb: np.ndarray, stamp, frame_id: str = "camera", K=None) -> tuple[Image, CameraInfo]:
    image = rgb_to_image_msg(rgb)
    image.header.stamp = stamp
    image.header.frame_id = frame_id
    info = CameraInfo()
    info.header.stamp = stamp
    info.header.frame_id = frame_id
    info.height, info.width = rgb.shape[:2]
    info.k = list(K_LIST if K is None else K)
    return image, info


class Client:
    """Test-side ROS node: publishes camera frames, collects everything a roca node publishes."""

    def __init__(self, domain_id: int, namespace: str = "/roca", image_topic: Optional[str] = None,
                 camera_info_topic: Optional[str] = None, node_name: str = "roca_node") -> None:
        ns = namespace.rstrip("/")
        self.node_fqn = f"{ns}/{node_name}"
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("roca_node_test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.objects: dict[int, ObjectAlignmentArray] = {}
        self.objects_arrival: dict[int, float] = {}
        self.markers: dict[int, MarkerArray] = {}
        self.debug_images: dict[int, Image] = {}
        self.stats: list[dict] = []
        self.databases: list[CadDatabaseInfo] = []
        n = self.node
        self.image_pub = n.create_publisher(Image, image_topic or f"{ns}/image", qos_profile_sensor_data)
        self.info_pub = n.create_publisher(CameraInfo, camera_info_topic or f"{ns}/camera_info",
                                           qos_profile_sensor_data)
        n.create_subscription(ObjectAlignmentArray, f"{ns}/objects", self._on_objects, 50)
        n.create_subscription(MarkerArray, f"{ns}/markers", self._on_markers, 50)
        n.create_subscription(String, self.node_fqn + "/stats", lambda m: self.stats.append(json.loads(m.data)), 50)
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(CadDatabaseInfo, f"{ns}/cad_database", self.databases.append, latched)
        self.params = AsyncParameterClient(n, self.node_fqn)
        self.reload = n.create_client(ReloadCadDatabase, f"{ns}/reload_cad_database")
        self.rgb = (np.random.default_rng(0).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
        self._last_stamp_ns = 0

    def _on_objects(self, msg: ObjectAlignmentArray) -> None:
        key = stamp_to_ns(msg.header.stamp)
        self.objects[key] = msg
        self.objects_arrival[key] = time.time()

    def _on_markers(self, msg: MarkerArray) -> None:
        if msg.markers:
            self.markers[stamp_to_ns(msg.markers[0].header.stamp)] = msg

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return bool(predicate())

    def wait_future(self, future, timeout: float = 20.0):
        assert self.spin_until(future.done, timeout), "no answer from the node"
        return future.result()

    def new_stamp(self):
        """Wall-clock stamp (ROS time = system time in both processes), strictly increasing."""
        now = self.node.get_clock().now()
        ns = max(now.nanoseconds, self._last_stamp_ns + 1_000_000)
        self._last_stamp_ns = ns
        msg = now.to_msg()
        msg.sec, msg.nanosec = divmod(ns, 1_000_000_000)
        return msg

    def frame(self, frame_id: str = "camera", rgb: Optional[np.ndarray] = None, K=None):
        """A matching (Image, CameraInfo) pair with a fresh stamp."""
        return make_frame(self.rgb if rgb is None else rgb, self.new_stamp(), frame_id, K)

    def publish(self, image: Image, info: CameraInfo) -> int:
        self.image_pub.publish(image)
        self.info_pub.publish(info)
        return stamp_to_ns(image.header.stamp)

    def request_objects(self, timeout: float = 30.0, **frame_kwargs) -> tuple[int, ObjectAlignmentArray, Image]:
        """Publish fresh frames (every 0.5 s) until one of them comes back as objects."""
        sent: dict[int, Image] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            image, info = self.frame(**frame_kwargs)
            sent[self.publish(image, info)] = image
            if self.spin_until(lambda: any(s in self.objects for s in sent), 0.5):
                stamp = next(s for s in sent if s in self.objects)
                return stamp, self.objects[stamp], sent[stamp]
        raise AssertionError(f"no objects for any of {len(sent)} frames within {timeout} s")

    def latest_stats(self, timeout: float = 5.0) -> dict:
        count = len(self.stats)
        assert self.spin_until(lambda: len(self.stats) > count, timeout), "no ~/stats message"
        return self.stats[-1]

    def set_params(self, **values):
        future = self.params.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        return self.wait_future(future).results

    def get_param(self, name: str):
        response = self.wait_future(self.params.get_parameters([name]))
        return parameter_value_to_python(response.values[0])
