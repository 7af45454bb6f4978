"""The parts both roca nodes are made of: parameters, model, input, inference worker, output.

:class:`RocaParts` is a mixin over an rclpy ``Node`` (``roca_ros.node.RocaNode``) or
``LifecycleNode`` (``roca_ros.lifecycle_node.RocaLifecycleNode``). Each group of parts comes
with its opposite, so the managed node can map them onto its transitions:

===========================  ==========================================  ================
``declare_roca_parameters``  parameters, validation, live updates        (once, __init__)
``load_model``               CAD database, predictor, reload service     ``unload_model``
``open_io``                  publishers, subscriptions, stats timer,     ``close_io``
                             inference worker
===========================  ==========================================  ================

Input: ``image`` (or ``<image>/compressed``) and ``camera_info`` are paired by stamp
(:mod:`roca_ros.time_sync`) or with the newest fitting camera_info
(:mod:`roca_ros.latest_camera_info`); the pair's intrinsics and undistortion come from
:mod:`roca_ros.camera_model`. With ``depth_topic`` each pair then waits for its registered
depth image (:mod:`roca_ros.depth_input`), and goes on RGB-only while depth is lost; the
upright prior comes from ``up_vector`` or an IMU (:mod:`roca_ros.gravity`). Health goes to
``/diagnostics`` (:mod:`roca_ros.diagnostics`).

Threading: the executor thread only checks headers, pairs image with camera_info and hands
the pair to a :class:`LatestWorker`; conversion (decoding, demosaicing, undistortion),
inference, message building and publishing all run on that worker, which keeps just the
newest pair while busy. A camera faster than the model therefore costs dropped frames
(counted), never growing latency or memory, and parameters, services and the stats timer stay
responsive during inference. ``close_io``
lets the frame in flight finish (objects and markers both go out) and drops the pending one.
"""
from __future__ import annotations

import contextlib
import gc
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from diagnostic_msgs.msg import DiagnosticArray
from roca_msgs.msg import CadDatabaseInfo, ObjectAlignmentArray
from roca_msgs.srv import ReloadCadDatabase
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from roca_ros.camera_info import CameraInfoError, check_frame_ids, intrinsics_from_k
from roca_ros.camera_model import CameraModel, CameraModelCache, resolve_rectified
from roca_ros.conversions import cad_database_to_msg, detections_to_msg
from roca_ros.depth_input import DepthInputError, DepthPairing, check_depth_header, check_registered, depth_metres
from roca_ros.diagnostics import assess, discovery_range, to_status
from roca_ros.compressed_image import compressed_image_size, decode_compressed
from roca_ros.image_conversion import ImageConversionError, check_colour_image_header, rgb_pixels, rgb_to_image_msg
from roca_ros.latest_camera_info import LatestCameraInfos
from roca_ros.latest_worker import LatestWorker
from roca_ros.markers import MARKER_NAMESPACE, build_marker_array, delete_all_markers
from roca_ros.gravity import GravityFilter, choose_up
from roca_ros.mesh_uris import MeshUris
from roca_ros.params import PARAM_SPECS, SPECS_BY_NAME, NodeSettings, ParameterError, ParamSpec
from roca_ros.stats import NodeStats, ThrottledReporter, format_report, rejection_kind
from roca_ros.time_sync import NS_PER_S, ApproximateTimeSync, Pair, stamp_to_ns

WARN_THROTTLE_S = 5.0
STATS_TICK_S = 0.25
DIAGNOSTICS_PERIOD_S = 1.0  # /diagnostics at 1 Hz, as diagnostic_updater publishes
# On shutdown, how long reliable subscribers get to acknowledge the last frame's results.
FINAL_ACK_TIMEOUT_S = 2.0
WORKER_STOP_TIMEOUT_S = 30.0
# Image age (header stamp -> callback) is only a transport time when stamps are wall-clock.
PLAUSIBLE_AGE_S = 60.0

# Results are small and every one matters to a consumer: reliable, a short history.
RESULT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                        history=QoSHistoryPolicy.KEEP_LAST)
# Latched: a late subscriber (RViz, a logger) still gets the database description.
LATCHED_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
# Reliable with depth 1 matches both reliable (RViz default) and best-effort subscribers.
DEBUG_IMAGE_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)


class StartupError(RuntimeError):
    """The model or CAD database cannot be loaded, or a parameter is invalid."""


@dataclass(frozen=True)
class Arrival:
    """An input message and when its callback ran (``time.perf_counter()``)."""

    msg: Any
    at: float


@dataclass
class Frame:
    """A validated image + camera model pair on its way to the worker."""

    image: Image | CompressedImage
    camera: CameraModel
    arrived: float  # perf_counter() in the image callback (the node's latency starts here)
    paired: float  # perf_counter() when the pair was complete and handed to the worker
    age_s: Optional[float]  # header stamp -> image callback (wall clock), None if not plausible
    depth: Optional[Image] = None  # registered depth image paired with this one (checked headers)


def load_cad_database(path: str):
    """(CadDatabase, path shown in CadDatabaseInfo) of ``path``; "" is the embedded library."""
    from roca_core.data.cad_database import CadDatabase

    if not path:
        from roca_core.data.cad_library import embedded_cad_database, embedded_cad_library_dir
        return embedded_cad_database(), str(embedded_cad_library_dir() / "cad_db")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"CAD database not found: {resolved}")
    return CadDatabase.load(resolved), str(resolved.resolve())


def default_predictor_factory(settings: NodeSettings, cad_database: Any):
    """roca_core.Predictor from the parameters (torch is imported only here)."""
    checkpoint = settings.checkpoint or None
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint not found: {Path(checkpoint).expanduser()}")
    from roca_core.predictor import Predictor
    return Predictor(checkpoint=str(Path(checkpoint).expanduser()) if checkpoint else None,
                     cad_database=cad_database, device=settings.device,
                     score_threshold=settings.score_threshold, mask_threshold=settings.mask_threshold,
                     max_detections=settings.max_objects, refine=REFINE_MODES[settings.refine])


REFINE_MODES: dict[str, Optional[bool]] = {"auto": None, "on": True, "off": False}  # -> Predictor(refine=)


PredictorFactory = Callable[[NodeSettings, Any], Any]


def _declaration(spec: ParamSpec) -> tuple[Any, ParameterDescriptor]:
    """(value or type, descriptor) for ``declare_parameter``: bounds become ranges for `ros2 param describe`."""
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                     additional_constraints=spec.constraints, dynamic_typing=True)
    if spec.bounds is not None and isinstance(spec.default, float):
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.bounds[0]),
                                                              to_value=float(spec.bounds[1]), step=0.0)]
    elif spec.bounds is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        descriptor.integer_range = [IntegerRange(from_value=int(spec.bounds[0]), to_value=int(spec.bounds[1]),
                                                 step=1)]
    if spec.float_array:  # no value: dynamic typing takes integer and double arrays alike
        return None, descriptor
    if isinstance(spec.default, tuple):  # a string array: declared by type (an empty list has none)
        descriptor.dynamic_typing = False
        return Parameter.Type.STRING_ARRAY, descriptor
    return spec.default, descriptor


class RocaParts:
    """Mixin for an rclpy Node: see the module docstring for the parts and their order."""

    _worker: Optional[LatestWorker[Frame]] = None
    _predictor: Any = None

    # ------------------------------------------------------------------ parameters
    def declare_roca_parameters(self, predictor_factory: Optional[PredictorFactory]) -> None:
        """Declare every parameter (with its description) and validate the start values."""
        self.stats = NodeStats()
        self._warn = ThrottledReporter(lambda text: self.get_logger().warning(text), WARN_THROTTLE_S)
        self._error = ThrottledReporter(lambda text: self.get_logger().error(text), WARN_THROTTLE_S)
        self._predictor_factory = predictor_factory or default_predictor_factory
        self._predictor_lock = threading.Lock()
        self._accepting = False
        self._camera_models = CameraModelCache(on_new=self._log_camera_model)
        self._image_topic = "image"
        self._latest_infos: LatestCameraInfos[Arrival] = LatestCameraInfos(info_of=lambda arrival: arrival.msg)
        self._newest_info_stamp_ns: Optional[int] = None
        self._unpaired_without_info = 0
        self._pairing_lock = threading.Lock()
        # Marker publishing and clearing exclude each other, so a clear is never followed by a stale frame.
        self._marker_lock = threading.Lock()
        self._marker_frame: Optional[str] = None  # frame of the markers RViz shows now (None: none shown)
        self._cad_db, self._cad_db_path = None, ""
        self._mesh_uris = MeshUris()
        self._last_image_at: Optional[float] = None  # perf_counter() of the newest image callback
        self._last_info_at: Optional[float] = None
        self._camera_source = ""
        self._diagnostics_before: Optional[dict] = None
        self._diagnostics_at = 0.0
        self.get_logger().info(f"DDS discovery range: {discovery_range()} (ROS_AUTOMATIC_DISCOVERY_RANGE; "
                               "LOCALHOST keeps the node on this machine, SUBNET lets RViz elsewhere see it)")
        self._sync: Optional[ApproximateTimeSync[Arrival, Arrival]] = None
        self._depth: Optional[DepthPairing[Frame]] = None
        self._gravity: Optional[GravityFilter] = None
        self._up_source = "off"
        self._outputs: dict[str, Any] = {}
        self._inputs: list[Any] = []
        self._stats_timer = None
        self._reload_service = None
        self._setting_by_service = False
        overrides = getattr(self, "_parameter_overrides", {})
        try:  # our messages for bad start values, before rclpy's range check refuses them
            NodeSettings.from_values({n: p.value for n, p in overrides.items() if n in SPECS_BY_NAME})
            values = {spec.name: self.declare_parameter(spec.name, *_declaration(spec)).value
                      for spec in PARAM_SPECS}
            for spec in PARAM_SPECS:  # an unset string array reads as "not set": give it its empty value
                if isinstance(spec.default, tuple) and not spec.float_array and values[spec.name] is None:
                    self.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, list(spec.default))])
            self._settings = NodeSettings.from_values(values)
        except (ParameterError, InvalidParameterValueException, InvalidParameterTypeException) as exc:
            raise StartupError(f"invalid parameter: {exc}") from exc
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)
        # qos_overrides.* are declared with the subscriptions (open_io), later
        unknown = sorted(n for n in getattr(self, "_parameter_overrides", {})
                         if not self.has_parameter(n) and not n.startswith("qos_overrides."))
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameters {unknown}; known: {sorted(SPECS_BY_NAME)}")

    def _validate_parameter_change(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in SPECS_BY_NAME}
        for name in changes:
            service = SPECS_BY_NAME[name].set_by_service
            if service and not self._setting_by_service:
                return SetParametersResult(successful=False, reason=(
                    f"{name} is changed with the {service} service (it loads the new value first and keeps "
                    "the old one on failure)"))
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
        if "sync_slop" in changes and self._sync is not None:
            self._sync.slop_s = settings.sync_slop
        if self._depth is not None:
            self._depth.sync.slop_s = settings.sync_slop
            self._depth.liveness.timeout_s = settings.depth_timeout
        if "camera_info_mode" in changes and self._sync is not None:
            self._sync.clear()  # images waiting for a synced camera_info would pair late
        self._settings = settings  # the worker reads it at the start of each frame
        if changes.get("publish_markers") is False:
            self._clear_markers()
        if "mesh_uri_prefix" in changes:
            self._update_mesh_uris()
            self._publish_cad_database_info()
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _apply_thresholds(self, settings: NodeSettings) -> None:
        """Push thresholds into the predictor (on the worker, before each frame)."""
        for attribute, value in (("score_threshold", settings.score_threshold),
                                 ("mask_threshold", settings.mask_threshold),
                                 ("max_detections", settings.max_objects)):
            if hasattr(self._predictor, attribute) and getattr(self._predictor, attribute) != value:
                setattr(self._predictor, attribute, value)
        if hasattr(self._predictor, "refine"):
            self._predictor.refine = REFINE_MODES[settings.refine]
        # roca_core.Predictor reads the alignment mask threshold from its model config.
        cfg = getattr(self._predictor, "cfg", None)
        if cfg is not None and hasattr(cfg, "align_mask_threshold"):
            cfg.align_mask_threshold = settings.mask_threshold

    # ------------------------------------------------------------------ model
    def load_model(self) -> None:
        """Load the CAD database and the model (seconds); serve ``reload_cad_database``."""
        settings = self._settings
        model_name = settings.checkpoint or "the demo model"
        database_name = settings.cad_database or "the embedded CAD library"
        self.get_logger().info(f"loading {model_name} and {database_name} (device {settings.device})")
        try:
            cad_db, cad_db_path = load_cad_database(settings.cad_database)
        except Exception as exc:  # noqa: BLE001 - any failure here is a start-up error
            raise StartupError(f"cannot load CAD database {database_name}: {exc}") from exc
        try:
            predictor = self._predictor_factory(settings, cad_db)
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"cannot start the model ({model_name}, device {settings.device}): {exc}") from exc
        with self._predictor_lock:
            self._predictor, self._cad_db, self._cad_db_path = predictor, cad_db, cad_db_path
            self._autocast = self._half_precision_context()
            self._apply_thresholds(settings)
        self._update_mesh_uris()
        if self._reload_service is None:
            self._reload_service = self.create_service(ReloadCadDatabase, "reload_cad_database", self._on_reload)

    def unload_model(self) -> None:
        """Free the model and the CAD database (call after :meth:`close_io`)."""
        if self._reload_service is not None:
            self.destroy_service(self._reload_service)
            self._reload_service = None
        with self._predictor_lock:
            device = str(getattr(self._predictor, "device", ""))
            self._predictor, self._cad_db = None, None
        gc.collect()
        if device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()

    @property
    def model_loaded(self) -> bool:
        return self._predictor is not None

    def _half_precision_context(self):
        if not self._settings.half_precision:
            return contextlib.nullcontext
        device = str(getattr(self._predictor, "device", self._settings.device))
        if not device.startswith("cuda"):
            self.get_logger().warning(f"half_precision needs a CUDA device; running in float32 on {device}")
            return contextlib.nullcontext
        import torch
        return lambda: torch.autocast("cuda", dtype=torch.float16)

    # ------------------------------------------------------------------ topics
    def open_io(self) -> None:
        """Publishers, subscriptions, stats timer and a fresh worker: frames flow from now on."""
        self._sync = ApproximateTimeSync(self._settings.sync_slop)
        self._image_topic = self.resolve_topic_name("image")
        self._worker = LatestWorker(self._process_frame, self._on_worker_error, name="roca-inference")
        self._outputs = {
            "objects": self.create_publisher(ObjectAlignmentArray, "objects", RESULT_QOS),
            "markers": self.create_publisher(MarkerArray, "markers", RESULT_QOS),
            "debug_image": self.create_publisher(Image, "debug_image", DEBUG_IMAGE_QOS),
            "cad_database": self.create_publisher(CadDatabaseInfo, "cad_database", LATCHED_QOS),
            "stats": self.create_publisher(String, "~/stats", RESULT_QOS),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", RESULT_QOS),
        }
        overrides = QoSOverridingOptions.with_default_policies()
        if self._settings.image_transport == "compressed":
            # image_transport's naming: the compressed stream of IMAGE is IMAGE/compressed (after remapping).
            image_subscription = self.create_subscription(
                CompressedImage, self._image_topic + "/compressed", self._guarded(self._on_compressed_image),
                qos_profile_sensor_data, qos_overriding_options=overrides)
        else:
            image_subscription = self.create_subscription(
                Image, "image", self._guarded(self._on_image), qos_profile_sensor_data,
                qos_overriding_options=overrides)
        self._inputs = [
            image_subscription,
            self.create_subscription(CameraInfo, "camera_info", self._guarded(self._on_camera_info),
                                     qos_profile_sensor_data, qos_overriding_options=overrides),
        ]
        settings = self._settings
        if settings.depth_topic:
            self._depth = DepthPairing(self.resolve_topic_name(settings.depth_topic), settings.sync_slop,
                                       settings.depth_timeout)
            self._inputs.append(self.create_subscription(Image, settings.depth_topic, self._guarded(self._on_depth),
                                                         qos_profile_sensor_data, qos_overriding_options=overrides))
        if settings.imu_topic:
            self._gravity = GravityFilter()
            self._inputs.append(self.create_subscription(Imu, settings.imu_topic, self._guarded(self._on_imu),
                                                         qos_profile_sensor_data))
        self._last_report = time.monotonic()
        self._last_reported_received = -1
        self._diagnostics_before, self._diagnostics_at = None, time.monotonic()
        self._stats_timer = self.create_timer(STATS_TICK_S, self._on_stats_tick)
        self._publish_cad_database_info()
        self._accepting = True
        extra = "".join(f" + {self.resolve_topic_name(t)}" for t in (settings.depth_topic, settings.imu_topic) if t)
        self.get_logger().info(
            f"ready: {len(self._cad_db)} CAD models; listening on "
            f"{self._input_topic()} + {self.resolve_topic_name('camera_info')}{extra}")

    def close_io(self) -> None:
        """Stop taking frames, let the frame in flight finish, then remove topics and timer."""
        self._accepting = False
        worker, self._worker = self._worker, None
        if worker is None:
            return
        dropped_before = worker.dropped
        if not worker.close(timeout=WORKER_STOP_TIMEOUT_S, drop_pending=True):
            self.get_logger().warning(f"inference worker did not stop within {WORKER_STOP_TIMEOUT_S:.0f} s")
        if worker.dropped > dropped_before:  # the pending frame, never started
            self.stats.count("dropped", worker.dropped - dropped_before)
        self._clear_markers()  # RViz would show the last objects forever
        # Reliable subscribers get the last frame's results before the publishers go away.
        for name in ("objects", "markers"):
            self._outputs[name].wait_for_all_acked(Duration(seconds=FINAL_ACK_TIMEOUT_S))
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        if self._stats_timer is not None:
            self.destroy_timer(self._stats_timer)
        self._inputs, self._outputs, self._stats_timer, self._sync = [], {}, None, None
        self._depth, self._gravity = None, None
        snapshot = self.stats.snapshot(reset_stages=False)
        self.get_logger().info(
            f"stopped: worker finished its last frame; {snapshot['processed']} frames processed, "
            f"{snapshot['dropped']} dropped, {snapshot['rejected']} rejected")

    # ------------------------------------------------------------------ input (executor thread)
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
        self._accept_image(msg, check_colour_image_header)

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._accept_image(msg, compressed_image_size)

    def _accept_image(self, msg: "Image | CompressedImage", check: Callable[[Any], Any]) -> None:
        """Count, check the header (raw) or payload header (compressed), then pair."""
        arrived = self._last_image_at = time.perf_counter()
        self.stats.count("received")
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            check(msg)
        except ImageConversionError as exc:
            self._reject("image", exc, stamp)
            return
        self._pair_image(stamp, Arrival(msg, arrived))

    def _pair_image(self, stamp: int, image: Arrival) -> None:
        """Pair by stamp (synced) or with the newest matching camera_info (latest); warn when unpaired."""
        sync = self._sync
        if sync is None or not self._accepting:
            return
        if self._settings.camera_info_mode == "latest":
            width, height = self._image_size(image.msg)
            info = self._latest_infos.for_image(image.msg.header.frame_id, width, height)
            if info is None:
                with self._pairing_lock:
                    self._unpaired_without_info += 1
                self._report_unpaired(stamp)
                return
            self._submit_pairs([Pair(image, info, stamp, stamp_to_ns(info.msg.header.stamp))])
            return
        before = sync.unpaired_images
        self._submit_pairs(sync.add_image(stamp, image))
        if sync.unpaired_images > before:
            self._report_unpaired(stamp)

    @staticmethod
    def _image_size(msg: Any) -> tuple[int, int]:
        return (int(msg.width), int(msg.height)) if isinstance(msg, Image) else compressed_image_size(msg)

    def _report_unpaired(self, image_stamp_ns: int) -> None:
        """Throttled WARN naming both topics and the stamp gap: a silent stall is the worst failure."""
        info_topic = self.resolve_topic_name("camera_info")
        newest = self._newest_info_stamp_ns
        unpaired = self._unpaired_without_info + (self._sync.unpaired_images if self._sync is not None else 0)
        if newest is None:
            why = f"no camera_info received on {info_topic}"
        else:
            why = (f"the newest camera_info on {info_topic} is stamped {(newest - image_stamp_ns) / NS_PER_S:+.3f} s "
                   f"from image stamp {image_stamp_ns / NS_PER_S:.3f} (sync_slop {self._settings.sync_slop:g} s)")
        hint = ("" if self._settings.camera_info_mode == "latest" else
                "; camera_info_mode:=latest pairs with the newest camera_info whatever its stamp")
        self._warn.report("unpaired", f"images on {self._input_topic()} go unpaired ({unpaired} so far): {why}{hint}")

    def _input_topic(self) -> str:
        compressed = self._settings.image_transport == "compressed"
        return self._image_topic + "/compressed" if compressed else self._image_topic

    def _on_camera_info(self, msg: CameraInfo) -> None:
        arrived = self._last_info_at = time.perf_counter()
        try:
            if self._settings.fallback_hfov_deg <= 0 or any(msg.k):  # all zero: the fallback field of view
                intrinsics_from_k(msg.k)
        except CameraInfoError as exc:
            if not any(msg.k):
                exc = CameraInfoError(f"{exc}; fallback_hfov_deg:=DEGREES assumes a field of view instead")
            self._reject("camera_info", exc, stamp_to_ns(msg.header.stamp))
            return
        stamp = stamp_to_ns(msg.header.stamp)
        arrival = Arrival(msg, arrived)
        self._latest_infos.add(arrival)
        self._newest_info_stamp_ns = stamp
        sync = self._sync
        if sync is not None and self._accepting and self._settings.camera_info_mode == "synced":
            self._submit_pairs(sync.add_info(stamp, arrival))

    def _log_camera_model(self, camera: CameraModel) -> None:
        """Once per new CameraInfo: which intrinsics the model gets (a wrong guess is visible here)."""
        K = camera.K
        self._camera_source = camera.source
        intrinsics = f"fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} cx={K[0, 2]:.2f} cy={K[1, 2]:.2f}"
        if camera.source.startswith("fallback"):
            self.get_logger().warning(
                f"UNCALIBRATED CAMERA: camera_info K on {self.resolve_topic_name('camera_info')} is all zero; "
                f"assuming a {self._settings.fallback_hfov_deg:g} degree horizontal field of view "
                f"(fallback_hfov_deg): {intrinsics}. Distances and sizes are only as right as that guess: "
                "calibrate the camera (camera_calibration) for metric poses")
            return
        self.get_logger().info(f"camera model: intrinsics from {camera.source}: {intrinsics} "
                               f"(rectified:={self._settings.rectified}, input {self._image_topic})")

    def _submit_pairs(self, pairs: list[Pair[Arrival, Arrival]]) -> None:
        for pair in pairs:
            image, info = pair.image.msg, pair.info.msg
            settings = self._settings
            try:
                if not (image.header.frame_id or settings.camera_frame_id):
                    raise CameraInfoError("image header.frame_id is empty: results need the camera's frame; set "
                                          "the driver's frame_id or the camera_frame_id parameter")
                if image.header.frame_id and info.header.frame_id:
                    check_frame_ids(image.header.frame_id, info.header.frame_id)
                width, height = self._image_size(image)
                camera = self._camera_models.get(info, width, height,
                                                 resolve_rectified(settings.rectified, self._image_topic),
                                                 settings.fallback_hfov_deg)
            except (CameraInfoError, ImageConversionError) as exc:
                self._reject("frame", exc, pair.image_stamp_ns)
                continue
            self.stats.count("paired")
            age = time.time() - pair.image_stamp_ns / NS_PER_S - (time.perf_counter() - pair.image.at)
            frame = Frame(image, camera, pair.image.at, time.perf_counter(),
                          age if 0.0 <= age < PLAUSIBLE_AGE_S else None)
            depth = self._depth
            if depth is None:
                self._hand_off([(frame, None)])
                continue
            frames, note = depth.add_frame(pair.image_stamp_ns, frame, time.monotonic())
            self._log_depth_state(note)
            self._hand_off(frames)

    def _on_depth(self, msg: Image) -> None:
        depth = self._depth
        if depth is None or not self._accepting:
            return
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            check_depth_header(msg)
        except DepthInputError as exc:
            self._reject("depth", exc, stamp)
            return
        frames, note = depth.add_depth(stamp, msg, time.monotonic())
        self._log_depth_state(note)
        self._hand_off(frames)

    def _log_depth_state(self, note: Optional[str]) -> None:
        if note is None:
            return
        if "RGB only" in note:
            self.get_logger().warning(note)
        else:
            self.get_logger().info(note)

    def _hand_off(self, frames: list[tuple[Frame, Optional[Image]]]) -> None:
        """Frames (with their depth image, if any) to the worker; a depth not registered to the image is
        rejected and the frame goes on RGB-only."""
        for frame, depth_msg in frames:
            if depth_msg is not None:
                image = frame.image
                try:
                    check_registered(depth_msg, image.header.frame_id, *self._image_size(image))
                    frame.depth = depth_msg
                except DepthInputError as exc:
                    self._reject("depth", exc, stamp_to_ns(depth_msg.header.stamp))
            frame.paired = time.perf_counter()
            worker = self._worker
            if worker is None or not self._accepting:
                return
            try:
                if not worker.submit(frame):
                    self.stats.count("dropped")
            except RuntimeError:  # closed between the check and the hand-off (shutdown)
                return

    def _on_imu(self, msg: Imu) -> None:
        a = msg.linear_acceleration
        gravity = self._gravity
        if gravity is not None:
            gravity.add((a.x, a.y, a.z), time.monotonic(), str(msg.header.frame_id))

    def _up_direction(self, settings: NodeSettings, frame_id: str) -> Optional[np.ndarray]:
        """The upright prior for this frame (:func:`roca_ros.gravity.choose_up`)."""
        choice = choose_up(self._gravity, time.monotonic(), frame_id, settings.up_vector,
                           settings.imu_frame_is_camera_optical)
        if choice.problem is not None:
            self._warn.report("imu frame", choice.problem)
        self._up_source = choice.source
        return choice.up

    def _clear_markers(self) -> None:
        """DELETEALL for the node's marker namespace, if markers are shown (shutdown, publish_markers off)."""
        with self._marker_lock:
            publisher = self._outputs.get("markers")
            if publisher is None or self._marker_frame is None:
                return
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._marker_frame)
            publisher.publish(delete_all_markers(header, MARKER_NAMESPACE))
            self._marker_frame = None

    # ------------------------------------------------------------------ worker thread
    def _process_frame(self, frame: Frame) -> None:
        settings = self._settings
        t_start = time.perf_counter()
        try:
            image = frame.image
            # raw rgb8 is a view of the message (no copy); remap and decoding make new arrays
            pixels = rgb_pixels(image) if isinstance(image, Image) else decode_compressed(image)
            rgb = frame.camera.rectify(pixels)
        except ImageConversionError as exc:
            self._reject("image", exc, stamp_to_ns(frame.image.header.stamp))
            return
        inputs: dict[str, "np.ndarray | float"] = {}  # only what is given: stand-in predictors may take (rgb, K)
        if frame.depth is not None:
            try:
                inputs["depth"] = frame.camera.rectify(depth_metres(frame.depth), nearest=True)
            except DepthInputError as exc:  # the frame goes on RGB-only
                self._reject("depth", exc, stamp_to_ns(frame.depth.header.stamp))
        up = self._up_direction(settings, frame.image.header.frame_id)
        if up is not None:
            inputs["up"] = up
            if settings.camera_height > 0.0:  # the ground-plane prior needs the up direction
                inputs["camera_height"] = settings.camera_height
        elif settings.camera_height > 0.0:
            self._warn.report("camera height", "camera_height is set but no up direction is known (up_vector, "
                                               "or a reading on imu_topic in the camera's axes): the "
                                               "ground-plane prior is off")
        t_converted = time.perf_counter()
        with self._predictor_lock:
            if self._predictor is None:
                return
            self._apply_thresholds(settings)
            with self._autocast():
                detections = self._predictor.predict(rgb, frame.camera.K, **inputs)
            refine_s = float(getattr(self._predictor, "last_refine_seconds", 0.0))
        t_predicted = time.perf_counter()
        self.stats.count("with_depth" if "depth" in inputs else "without_depth")
        detections = sorted((d for d in detections if float(d.score) >= settings.score_threshold
                             and (not settings.classes or d.class_name in settings.classes)),
                            key=lambda d: -float(d.score))[: settings.max_objects]
        header = frame.image.header
        if settings.camera_frame_id:
            header = Header(stamp=header.stamp, frame_id=settings.camera_frame_id)
        uri_of = self._mesh_uris
        outputs = [("objects", detections_to_msg(detections, header, t_predicted - t_converted, uri_of))]
        if settings.publish_markers:
            outputs.append(("markers", build_marker_array(detections, header, MARKER_NAMESPACE,
                                                          settings.marker_lifetime, uri_of=uri_of,
                                                          mesh_mode=settings.marker_mesh_mode)))
        debug_pub = self._outputs["debug_image"]
        if settings.publish_debug_image and debug_pub.get_subscription_count() > 0:
            from roca_core.visualize import draw_overlay
            overlay = draw_overlay(rgb, detections, frame.camera.K, db=self._cad_db)
            outputs.append(("debug_image", rgb_to_image_msg(overlay, header)))
        t_built = time.perf_counter()
        for name, msg in outputs:
            if name == "markers":
                with self._marker_lock:
                    if self._settings.publish_markers:  # not switched off while this frame ran
                        self._outputs[name].publish(msg)
                        self._marker_frame = header.frame_id
                continue
            self._outputs[name].publish(msg)
        t_published = time.perf_counter()
        self.stats.count("processed")
        stages = dict(sync=frame.paired - frame.arrived, handoff=t_start - frame.paired,
                      convert=t_converted - t_start, predict=t_predicted - t_converted,
                      build=t_built - t_predicted, publish=t_published - t_built,
                      latency=t_published - frame.arrived)
        if frame.age_s is not None:
            stages["transport"] = frame.age_s
        if refine_s > 0:
            stages["refine"] = refine_s
        self.stats.record(**stages)

    def _on_worker_error(self, frame: Frame, exc: BaseException) -> None:
        self.stats.count("errors")
        stamp = stamp_to_ns(frame.image.header.stamp) / 1e9
        self._error.report(f"error: {type(exc).__name__}",
                           f"inference failed on frame stamp {stamp:.3f}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ CAD database
    def _update_mesh_uris(self) -> None:
        db = self._cad_db
        self._mesh_uris = MeshUris(self._settings.mesh_uri_prefix, db.mesh_paths if db is not None else ())

    def _publish_cad_database_info(self) -> None:
        publisher = self._outputs.get("cad_database")
        if publisher is None or self._cad_db is None:
            return  # published on the next open_io
        header = Header(stamp=self.get_clock().now().to_msg())
        publisher.publish(cad_database_to_msg(self._cad_db, self._cad_db_path, header, self._mesh_uris))

    def reload_cad_database(self, path: str = "") -> tuple[bool, str]:
        """Load ``path`` (or the current one) and switch to it; on failure keep the old one."""
        requested = path or self._cad_db_path
        try:
            db, shown_path = load_cad_database(requested)
            with self._predictor_lock:
                if self._predictor is None:
                    raise RuntimeError("no model loaded")
                self._predictor.set_cad_database(db)
                self._cad_db, self._cad_db_path = db, shown_path
            self._update_mesh_uris()
        except Exception as exc:  # noqa: BLE001 - reported to the caller, old database kept
            message = f"could not load CAD database {requested}: {exc}; keeping {self._cad_db_path}"
            self.get_logger().error(message)
            return False, message
        self._publish_cad_database_info()
        if path and path != self._settings.cad_database:  # the parameter tells what is loaded
            self._setting_by_service = True
            try:
                self.set_parameters([Parameter("cad_database", value=path)])
            finally:
                self._setting_by_service = False
        message = f"loaded CAD database {shown_path} ({len(db)} models)"
        self.get_logger().info(message)
        return True, message

    def _on_reload(self, request: ReloadCadDatabase.Request,
                   response: ReloadCadDatabase.Response) -> ReloadCadDatabase.Response:
        response.success, response.message = self.reload_cad_database(request.database_path)
        response.num_models = len(self._cad_db) if self._cad_db is not None else 0
        return response

    # ------------------------------------------------------------------ stats
    def _on_stats_tick(self) -> None:
        now = time.monotonic()
        if self._depth is not None:
            frames, note = self._depth.tick(now)
            self._log_depth_state(note)
            self._hand_off(frames)
        if now - self._diagnostics_at >= DIAGNOSTICS_PERIOD_S:
            self._publish_diagnostics(now)
        period = self._settings.stats_period
        if period <= 0 or now - self._last_report < period:
            return
        self._last_report = now
        self._count_unpaired()
        snapshot = self.stats.snapshot()
        if snapshot["received"] != self._last_reported_received:  # stay quiet while idle
            self.get_logger().debug(format_report(snapshot))  # /diagnostics carries the health
            self._last_reported_received = snapshot["received"]
        self._outputs["stats"].publish(String(data=json.dumps(snapshot)))

    def _count_unpaired(self) -> None:
        if self._sync is not None:
            waited_for_depth = self._depth.sync.unpaired_images if self._depth is not None else 0
            self.stats.unpaired = self._sync.unpaired_images + self._unpaired_without_info + waited_for_depth

    def _publish_diagnostics(self, now: float) -> None:
        self._count_unpaired()
        snapshot = self.stats.snapshot(reset_stages=False)
        clock = time.perf_counter()
        info_age = "never" if self._last_info_at is None else f"{clock - self._last_info_at:.2f}"
        pairing = {"image topic": self._input_topic(), "camera_info topic": self.resolve_topic_name("camera_info"),
                   "camera_info_mode": self._settings.camera_info_mode, "camera_info age (s)": info_age,
                   "intrinsics from": self._camera_source or "no frame paired yet",
                   "frames with depth": str(snapshot["with_depth"]),
                   "frames without depth": str(snapshot["without_depth"]), "upright prior": self._up_source}
        depth = self._depth
        if depth is not None:
            pairing.update({"depth topic": depth.liveness.topic, "depth": depth.liveness.state(),
                            "depth unpaired": str(depth.sync.unpaired_images)})
        input_age = None if self._last_image_at is None else clock - self._last_image_at
        result = assess(snapshot, self._diagnostics_before, now - self._diagnostics_at, input_age, pairing)
        self._diagnostics_before, self._diagnostics_at = snapshot, now
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [to_status(result, f"{self.get_fully_qualified_name()}: input and inference",
                                  self._input_topic())]
        self._outputs["diagnostics"].publish(array)
