"""roca_node with a stand-in predictor, running in this process, driven over DDS.

The node is the real :class:`roca_ros.node.RocaNode` (parameters, subscriptions, pairing,
worker, publishers) spinning on its own thread and ROS context; only the model is replaced by
:class:`RecordingPredictor`, which keeps the image and the intrinsics each frame reached it
with. Tests talk to it from a :class:`ros_helpers.Client` in another context (another DDS
participant), so every message crosses DDS as from a camera driver. Starting one takes about
two seconds (the embedded CAD database), not the half minute of a real model.

Network safety: localhost discovery (conftest) and the caller's private domain.
"""
from __future__ import annotations

import threading
import time
import types
from typing import Any, Optional, Sequence

import numpy as np
import rclpy
from rcl_interfaces.msg import Log
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from ros_helpers import Client


class RecordingPredictor:
    """Predictor stand-in: records (rgb, K) and the depth / up / refine per frame and returns ``detections``."""

    score_threshold, mask_threshold, max_detections = 0.5, 0.7, 50
    device = "cpu"

    def __init__(self) -> None:
        self.cfg = types.SimpleNamespace(align_mask_threshold=0.7)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.inputs: list[dict[str, Any]] = []  # per call: depth, up, camera_height (None when not given), refine
        self.refine: Optional[bool] = None
        self.last_refine_seconds = 0.0  # as roca_core.Predictor reports it
        self.detections: list[Any] = []
        self._lock = threading.Lock()

    def predict(self, rgb: np.ndarray, K: np.ndarray, depth: Optional[np.ndarray] = None,
                up: Optional[np.ndarray] = None, camera_height: Optional[float] = None) -> list[Any]:
        with self._lock:
            self.calls.append((np.array(rgb), np.array(K)))
            self.inputs.append({"depth": None if depth is None else np.array(depth),
                                "up": None if up is None else np.array(up), "camera_height": camera_height,
                                "refine": self.refine})
            return list(self.detections)

    def set_cad_database(self, db: Any) -> None:
        pass


class InProcessNode:
    """A running RocaNode (namespace ``namespace``) plus a Client and a /rosout log collector."""

    def __init__(self, domain_id: int, namespace: str = "roca", parameters: Optional[dict] = None,
                 remaps: Sequence[str] = (), client_image_topic: Optional[str] = None,
                 client_info_topic: Optional[str] = None, predictor: Any = None) -> None:
        from roca_ros.node import RocaNode

        self.predictor = RecordingPredictor() if predictor is None else predictor
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        overrides = [Parameter(k, value=v) for k, v in {"stats_period": 0.5, **(parameters or {})}.items()]
        cli_args = ["--ros-args"] + [arg for remap in remaps for arg in ("-r", remap)] if remaps else None
        self.node = RocaNode(namespace=namespace, predictor_factory=lambda settings, db: self.predictor,
                             context=self.context, parameter_overrides=overrides, cli_args=cli_args)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True, name="roca-node-spin")
        self._thread.start()
        self.client = Client(domain_id, f"/{namespace}", image_topic=client_image_topic,
                             camera_info_topic=client_info_topic)
        self.logs: list[Log] = []
        # /rosout keeps recent lines for late subscribers (transient local), as for ros2 topic echo.
        rosout_qos = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE,
                                durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.client.node.create_subscription(Log, "/rosout", self._on_log, rosout_qos)
        assert self.client.params.wait_for_services(timeout_sec=20.0), "node's parameter services not found"

    def _on_log(self, msg: Log) -> None:
        if msg.name.endswith("roca_node"):
            self.logs.append(msg)

    def log_text(self, level: Optional[int] = None) -> str:
        return "\n".join(m.msg for m in self.logs if level is None or m.level == level)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> bool:
        return self.client.spin_until(lambda: text in self.log_text(), timeout)

    def _publish(self, make_frame) -> None:
        image, info = make_frame()
        if image is not None:  # None: make_frame published it itself (another message type)
            self.client.image_pub.publish(image)
        if info is not None:
            self.client.info_pub.publish(info)

    def send_until_processed(self, make_frame, timeout: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
        """Publish ``make_frame()``'s (image, info) every 0.2 s until the predictor gets one; its (rgb, K)."""
        self.client.spin_until(lambda: False, 0.3)  # frames of an earlier call still in flight arrive first
        calls = len(self.predictor.calls)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._publish(make_frame)
            if self.client.spin_until(lambda: len(self.predictor.calls) > calls, 0.2):
                return self.predictor.calls[calls]
        raise AssertionError(f"no frame reached the model within {timeout} s; log:\n{self.log_text()}")

    def send_until_rejected(self, make_frame, reason: str, timeout: float = 10.0) -> dict:
        """Publish frames until a rejection whose kind contains ``reason`` is counted; the counters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._publish(make_frame)
            self.client.spin_until(lambda: False, 0.2)
            snapshot = self.node.stats.snapshot(reset_stages=False)
            if any(reason in kind for kind in snapshot["rejections_by_kind"]):
                return snapshot
        raise AssertionError(f"no rejection {reason!r}: {self.node.stats.snapshot(False)['rejections_by_kind']}")

    def close(self) -> None:
        self.client.close()
        self.node.destroy_node()
        self.executor.shutdown()
        rclpy.shutdown(context=self.context)
        self._thread.join(5)
