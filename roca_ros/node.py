"""roca_node: camera images in, 9-DoF aligned CAD models out.

Threading: the executor thread only validates headers, pairs image with camera_info and
hands the pair to a :class:`LatestWorker`; conversion, inference and publishing run on that
worker, which keeps just the newest pair while busy. So a camera faster than the model
costs dropped frames (counted), never growing latency or memory, and parameter changes,
services and the stats timer stay responsive during inference.

Run ``roca_node`` (or ``python -m roca_ros.node``): with no arguments it loads the committed
demo model and the embedded CAD library and listens on ``/roca/image`` and
``/roca/camera_info``; ``--ros-args`` remaps, parameters and parameter files work as usual.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy loads

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import (  # noqa: E402
    QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions  # noqa: E402
from roca_msgs.msg import CadDatabaseInfo, ObjectAlignmentArray  # noqa: E402
from roca_msgs.srv import ReloadCadDatabase  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from roca_ros.camera_info import CameraInfoError, check_frame_ids, intrinsics_for_image, intrinsics_from_k  # noqa: E402
from roca_ros.conversions import cad_database_to_msg, detections_to_msg  # noqa: E402
from roca_ros.image_conversion import ImageConversionError, check_image_header, image_to_rgb, rgb_to_image_msg  # noqa: E402
from roca_ros.latest_worker import LatestWorker  # noqa: E402
from roca_ros.markers import MARKER_NAMESPACE, build_marker_array  # noqa: E402
from roca_ros.params import PARAM_SPECS, SPECS_BY_NAME, NodeSettings, ParameterError  # noqa: E402
from roca_ros.stats import NodeStats, ThrottledReporter, format_report, rejection_kind  # noqa: E402
from roca_ros.time_sync import ApproximateTimeSync, Pair, stamp_to_ns  # noqa: E402

NODE_NAME = "roca_node"
DEFAULT_NAMESPACE = "roca"
WARN_THROTTLE_S = 5.0
STATS_TICK_S = 0.25

# Results are small and every one matters to a consumer: reliable, a short history.
RESULT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                        history=QoSHistoryPolicy.KEEP_LAST)
# Latched: a late subscriber (RViz, a logger) still gets the database description.
LATCHED_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
# Reliable with depth 1 matches both reliable (RViz default) and best-effort subscribers.
DEBUG_IMAGE_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing checkpoint or CAD database)."""


@dataclass
class Frame:
    """A validated image + intrinsics pair on its way to the worker."""

    image: Image
    K: np.ndarray
    received_at: float  # time.monotonic() when the pair was complete (latency starts here)


def _load_cad_database(path: str):
    """(CadDatabase, path shown in CadDatabaseInfo) of ``path``; "" is the embedded library."""
    from roca_core.data.cad_database import CadDatabase

    if not path:
        from roca_core.data.cad_library import embedded_cad_database, embedded_cad_library_dir
        return embedded_cad_database(), str(embedded_cad_library_dir() / "cad_db")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"CAD database not found: {resolved}")
    return CadDatabase.load(resolved), str(resolved.resolve())


def _default_predictor_factory(settings: NodeSettings, cad_database: Any):
    checkpoint = settings.checkpoint or None
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint not found: {Path(checkpoint).expanduser()}")
    from roca_core.predictor import Predictor  # heavy (torch): only once the inputs look right
    return Predictor(checkpoint=str(Path(checkpoint).expanduser()) if checkpoint else None,
                     cad_database=cad_database, device=settings.device,
                     score_threshold=settings.score_threshold, mask_threshold=settings.mask_threshold,
                     max_detections=settings.max_objects)


class RocaNode(Node):
    """The ROS 2 node around :class:`roca_core.Predictor` (see the module docstring).

    ``predictor_factory(settings, cad_database) -> predictor`` is injectable for tests and
    embedding; the default builds ``roca_core.Predictor`` from the parameters.
    """

    def __init__(self, node_name: str = NODE_NAME, namespace: str = DEFAULT_NAMESPACE,
                 predictor_factory=None, **node_kwargs: Any) -> None:
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        self._worker = None
        try:
            self._setup(predictor_factory)
        except StartupError as exc:
            self.get_logger().fatal(str(exc))
            self.destroy_node()
            raise

    def _setup(self, predictor_factory) -> None:
        self.stats = NodeStats()
        self._warn = ThrottledReporter(lambda text: self.get_logger().warning(text), WARN_THROTTLE_S)
        self._error = ThrottledReporter(lambda text: self.get_logger().error(text), WARN_THROTTLE_S)
        self._settings = self._declare_and_read_parameters()
        self._predictor_lock = threading.Lock()
        self._closed = False
        self._warned_distortion = False

        model_name = self._settings.checkpoint or "the demo model"
        database_name = self._settings.cad_database or "the embedded CAD library"
        self.get_logger().info(f"loading {model_name} and {database_name} (device {self._settings.device})")
        try:
            self._cad_db, self._cad_db_path = _load_cad_database(self._settings.cad_database)
        except Exception as exc:  # noqa: BLE001 - any failure here is a start-up error
            raise StartupError(f"cannot load CAD database {database_name}: {exc}") from exc
        factory = predictor_factory or _default_predictor_factory
        try:
            self._predictor = factory(self._settings, self._cad_db)
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"cannot start the model ({model_name}, device {self._settings.device}): "
                               f"{exc}") from exc
        self._autocast = self._half_precision_context()
        self._apply_thresholds(self._settings)

        self._sync: ApproximateTimeSync[Image, CameraInfo] = ApproximateTimeSync(self._settings.sync_slop)
        self._worker: LatestWorker[Frame] = LatestWorker(self._process_frame, self._on_worker_error,
                                                          name="roca-inference")

        self._objects_pub = self.create_publisher(ObjectAlignmentArray, "objects", RESULT_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, "markers", RESULT_QOS)
        self._debug_pub = self.create_publisher(Image, "debug_image", DEBUG_IMAGE_QOS)
        self._db_pub = self.create_publisher(CadDatabaseInfo, "cad_database", LATCHED_QOS)
        self._stats_pub = self.create_publisher(String, "~/stats", RESULT_QOS)
        overrides = QoSOverridingOptions.with_default_policies()
        self.create_subscription(Image, "image", self._guarded(self._on_image), qos_profile_sensor_data,
                                 qos_overriding_options=overrides)
        self.create_subscription(CameraInfo, "camera_info", self._guarded(self._on_camera_info),
                                 qos_profile_sensor_data, qos_overriding_options=overrides)
        self.create_service(ReloadCadDatabase, "reload_cad_database", self._on_reload)
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)
        self._last_report = time.monotonic()
        self._last_reported_received = -1
        self._stats_timer = self.create_timer(STATS_TICK_S, self._on_stats_tick)
        self._publish_cad_database_info()
        unknown = sorted(n for n in getattr(self, "_parameter_overrides", {}) if not self.has_parameter(n))
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameters {unknown}; known: {sorted(SPECS_BY_NAME)}")
        self.get_logger().info(
            f"ready: {len(self._cad_db)} CAD models; listening on "
            f"{self.resolve_topic_name('image')} + {self.resolve_topic_name('camera_info')}")

    # ------------------------------------------------------------------ parameters
    def _declare_and_read_parameters(self) -> NodeSettings:
        values = {}
        for spec in PARAM_SPECS:
            descriptor = ParameterDescriptor(
                description=spec.description, read_only=spec.read_only,
                additional_constraints=spec.constraints, dynamic_typing=True)
            values[spec.name] = self.declare_parameter(spec.name, spec.default, descriptor).value
        try:
            return NodeSettings.from_values(values)
        except ParameterError as exc:
            raise StartupError(f"invalid parameter: {exc}") from exc

    def _validate_parameter_change(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in SPECS_BY_NAME}
        try:
            self._settings.updated(changes)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, params: list[Parameter]) -> None:
        changes = {p.name: p.value for p in params if p.name in SPECS_BY_NAME}
        if not changes:
            return
        settings = self._settings.updated(changes)
        if "sync_slop" in changes:
            self._sync.slop_s = settings.sync_slop
        self._settings = settings  # the worker reads it at the start of each frame
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _apply_thresholds(self, settings: NodeSettings) -> None:
        """Push thresholds into the predictor (called on the worker before each frame)."""
        for attribute, value in (("score_threshold", settings.score_threshold),
                                 ("mask_threshold", settings.mask_threshold),
                                 ("max_detections", settings.max_objects)):
            if hasattr(self._predictor, attribute) and getattr(self._predictor, attribute) != value:
                setattr(self._predictor, attribute, value)
        # roca_core.Predictor reads the alignment mask threshold from its model config.
        cfg = getattr(self._predictor, "cfg", None)
        if cfg is not None and hasattr(cfg, "align_mask_threshold"):
            cfg.align_mask_threshold = settings.mask_threshold

    def _half_precision_context(self):
        if not self._settings.half_precision:
            return contextlib.nullcontext
        device = str(getattr(self._predictor, "device", self._settings.device))
        if not device.startswith("cuda"):
            self.get_logger().warning(f"half_precision needs a CUDA device; running in float32 on {device}")
            return contextlib.nullcontext
        import torch
        return lambda: torch.autocast("cuda", dtype=torch.float16)

    # ------------------------------------------------------------------ input
    def _guarded(self, callback):
        """Wrap an executor callback: an unexpected exception is logged and counted, never fatal."""
        def run(msg):
            try:
                callback(msg)
            except Exception as exc:  # noqa: BLE001 - bad input must not stop the node
                self.stats.count("errors")
                self._error.report(f"callback {callback.__name__}",
                                   f"unexpected error in {callback.__name__}: {type(exc).__name__}: {exc}")
        return run

    def _reject(self, source: str, exc: Exception, stamp_ns: Optional[int] = None) -> None:
        kind = rejection_kind(source, str(exc))
        self.stats.reject(kind)
        when = f" (stamp {stamp_ns / 1e9:.3f})" if stamp_ns is not None else ""
        self._warn.report(kind, f"rejected {source}{when}: {exc}")

    def _on_image(self, msg: Image) -> None:
        self.stats.count("received")
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            check_image_header(msg)
        except ImageConversionError as exc:
            self._reject("image", exc, stamp)
            return
        self._submit_pairs(self._sync.add_image(stamp, msg))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            intrinsics_from_k(msg.k)
        except CameraInfoError as exc:
            self._reject("camera_info", exc, stamp_to_ns(msg.header.stamp))
            return
        if not self._warned_distortion and any(abs(float(d)) > 1e-9 for d in msg.d):
            self._warned_distortion = True  # once: a property of the camera, not of a frame
            self.get_logger().warning("camera_info has distortion coefficients but the model assumes a pinhole "
                                      "camera: subscribe to a rectified image (image_rect) for exact poses")
        self._submit_pairs(self._sync.add_info(stamp_to_ns(msg.header.stamp), msg))

    def _submit_pairs(self, pairs: list[Pair[Image, CameraInfo]]) -> None:
        for pair in pairs:
            image, info = pair.image, pair.info
            try:
                check_frame_ids(image.header.frame_id, info.header.frame_id)
                K = intrinsics_for_image(info, image.width, image.height)
            except CameraInfoError as exc:
                self._reject("frame", exc, pair.image_stamp_ns)
                continue
            self.stats.count("paired")
            if self._closed:
                return
            if not self._worker.submit(Frame(image, K, time.monotonic())):
                self.stats.count("dropped")

    # ------------------------------------------------------------------ worker
    def _process_frame(self, frame: Frame) -> None:
        settings = self._settings
        t0 = time.perf_counter()
        try:
            rgb = image_to_rgb(frame.image)
        except ImageConversionError as exc:
            self._reject("image", exc, stamp_to_ns(frame.image.header.stamp))
            return
        t1 = time.perf_counter()
        with self._predictor_lock:
            self._apply_thresholds(settings)
            with self._autocast():
                detections = self._predictor.predict(rgb, frame.K)
        t2 = time.perf_counter()
        detections = sorted((d for d in detections if float(d.score) >= settings.score_threshold),
                            key=lambda d: -float(d.score))[: settings.max_objects]
        header = frame.image.header
        self._objects_pub.publish(detections_to_msg(detections, header, t2 - t1))
        if settings.publish_markers:
            self._markers_pub.publish(build_marker_array(detections, header, MARKER_NAMESPACE,
                                                         settings.marker_lifetime))
        if settings.publish_debug_image and self._debug_pub.get_subscription_count() > 0:
            from roca_core.visualize import draw_overlay
            overlay = draw_overlay(rgb, detections, frame.K, db=self._cad_db)
            self._debug_pub.publish(rgb_to_image_msg(overlay, header))
        t3 = time.perf_counter()
        self.stats.count("processed")
        self.stats.record(convert=t1 - t0, predict=t2 - t1, publish=t3 - t2,
                          latency=time.monotonic() - frame.received_at)

    def _on_worker_error(self, frame: Frame, exc: BaseException) -> None:
        self.stats.count("errors")
        stamp = stamp_to_ns(frame.image.header.stamp) / 1e9
        self._error.report(f"error: {type(exc).__name__}",
                           f"inference failed on frame stamp {stamp:.3f}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ CAD database
    def _publish_cad_database_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._db_pub.publish(cad_database_to_msg(self._cad_db, self._cad_db_path, header))

    def reload_cad_database(self, path: str = "") -> tuple[bool, str]:
        """Load ``path`` (or the current one) and switch to it; on failure keep the old one."""
        requested = path or self._cad_db_path
        try:
            db, shown_path = _load_cad_database(requested)
            with self._predictor_lock:
                self._predictor.set_cad_database(db)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, old database kept
            message = f"could not load CAD database {requested}: {exc}; keeping {self._cad_db_path}"
            self.get_logger().error(message)
            return False, message
        self._cad_db, self._cad_db_path = db, shown_path
        self._publish_cad_database_info()
        message = f"loaded CAD database {shown_path} ({len(db)} models)"
        self.get_logger().info(message)
        return True, message

    def _on_reload(self, request: ReloadCadDatabase.Request,
                   response: ReloadCadDatabase.Response) -> ReloadCadDatabase.Response:
        response.success, response.message = self.reload_cad_database(request.database_path)
        response.num_models = len(self._cad_db)
        return response

    # ------------------------------------------------------------------ stats
    def _on_stats_tick(self) -> None:
        period = self._settings.stats_period
        now = time.monotonic()
        if period <= 0 or now - self._last_report < period:
            return
        self._last_report = now
        self.stats.unpaired = self._sync.unpaired_images
        snapshot = self.stats.snapshot()
        if snapshot["received"] != self._last_reported_received:  # stay quiet while idle
            self.get_logger().info(format_report(snapshot))
            self._last_reported_received = snapshot["received"]
        self._stats_pub.publish(String(data=json.dumps(snapshot)))

    # ------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        """Stop the worker (finishing the frame in flight) before the node goes away."""
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.close(timeout=30.0):
            self.get_logger().warning("inference worker did not stop within 30 s")
        super().destroy_node()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``roca_node``; returns the process exit code."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args = list(sys.argv if argv is None else argv)
    rclpy.init(args=args)
    node: Optional[RocaNode] = None
    try:
        try:
            node = RocaNode()
        except StartupError:
            return 1  # already logged by the node
        except KeyboardInterrupt:
            return 0  # Ctrl-C while loading
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
