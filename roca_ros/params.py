"""The node's parameters as data: name, default, description, validation.

One table feeds the declarations (with descriptions for ``ros2 param describe``), the
start-up validation, the on-change validation and ``config/roca.yaml``'s test, so they
cannot drift apart. Validation is pure Python (no rclpy) and returns the value coerced to
its type (an int given for a float parameter is accepted, a bool never counts as a number).
"""
from __future__ import annotations

import array
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ParameterError(ValueError):
    """A parameter value outside its allowed range or of the wrong type."""


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError(f"{name} must be a string, got {value!r}")
    return value


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{name} must be a bool (true/false), got {value!r}")
    return value


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    return number


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _as_str_tuple(name: str, value: Any) -> tuple[str, ...]:
    if value is None:  # a string-array parameter declared without a value
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ParameterError(f"{name} must be a list of strings, got {value!r}")
    return tuple(value)


def _as_float_tuple(name: str, value: Any) -> tuple[float, ...]:
    if value is None:  # declared without a value
        return ()
    if isinstance(value, array.array):  # rclpy hands integer and double arrays over as array.array
        value = value.tolist()
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise ParameterError(f"{name} must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _up_vector(name: str, value: tuple[float, ...]) -> None:
    if value and (len(value) != 3 or not all(math.isfinite(v) for v in value) or not any(value)):
        raise ParameterError(f"{name} must be empty or 3 finite numbers, not all zero, got {list(value)}")


def _class_names(name: str, value: tuple[str, ...]) -> None:
    from roca_core.classes import CLASS_NAMES

    unknown = [v for v in value if v not in CLASS_NAMES]
    if unknown:
        raise ParameterError(f"{name}: unknown classes {unknown}; known: {list(CLASS_NAMES)}")


def _mesh_uri_prefix(name: str, value: str) -> None:
    if value:
        from roca_ros.mesh_uris import MeshUriError, parse_prefix
        try:
            parse_prefix(value)
        except MeshUriError as exc:
            raise ParameterError(str(exc)) from None


def _range(low: float | None = None, high: float | None = None, low_open: bool = False):
    def check(name: str, value: float) -> None:
        if low is not None and (value <= low if low_open else value < low):
            bound = f"> {low}" if low_open else f">= {low}"
            raise ParameterError(f"{name} must be {bound}, got {value}")
        if high is not None and value > high:
            raise ParameterError(f"{name} must be <= {high}, got {value}")
    return check


def _one_of(*choices: str):
    def check(name: str, value: str) -> None:
        if value not in choices:
            raise ParameterError(f"{name} must be one of {list(choices)}, got {value!r}")
    return check


def _device(name: str, value: str) -> None:
    if not _DEVICE_RE.match(value):
        raise ParameterError(f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = False
    constraints: str = ""
    check: Callable[[str, Any], None] | None = None
    # Bounds shown by `ros2 param describe` (FloatingPointRange / IntegerRange) and enforced by
    # rclpy before ``check`` runs; ``check`` holds what a range cannot say (an open bound).
    bounds: tuple[float, float] | None = None
    # Changed only by this service (which validates and loads first); `ros2 param set` is refused.
    set_by_service: str = ""
    # A list of numbers (default ()): declared with dynamic typing so [0, -1, 0] and [0.0, -1.0, 0.0] both work.
    float_array: bool = False

    def coerce(self, value: Any) -> Any:
        """Value converted to the parameter's type, or :class:`ParameterError`."""
        kind = type(self.default)
        if self.float_array:
            out = _as_float_tuple(self.name, value)
        elif kind is tuple:
            out = _as_str_tuple(self.name, value)
        elif kind is bool:
            out = _as_bool(self.name, value)
        elif kind is int:
            out = _as_int(self.name, value)
        elif kind is float:
            out = _as_float(self.name, value)
        else:
            out = _as_str(self.name, value)
        if self.check is not None:
            self.check(self.name, out)
        return out


PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", "Model checkpoint (.safetensors) to load; empty uses the committed demo "
              "model models/roca_demo.safetensors.", read_only=True,
              constraints="path to an existing file, or empty"),
    ParamSpec("cad_database", "", "CAD database file to retrieve from; empty uses the embedded procedural "
              "CAD library. Switch at run time with the reload_cad_database service, which updates this value.",
              set_by_service="reload_cad_database", constraints="path to an existing file, or empty"),
    ParamSpec("device", "auto", "Torch device for inference: auto (CUDA when available), cpu, cuda or cuda:N.",
              read_only=True, constraints="auto | cpu | cuda | cuda:N", check=_device),
    ParamSpec("score_threshold", 0.5, "Minimum detection score of a published object.",
              constraints="0 <= value <= 1", check=_range(0.0, 1.0), bounds=(0.0, 1.0)),
    ParamSpec("mask_threshold", 0.7, "Mask probability above which a pixel counts as the object's for "
              "the pose solve.", constraints="0 <= value <= 1", check=_range(0.0, 1.0), bounds=(0.0, 1.0)),
    ParamSpec("max_objects", 50, "Maximum number of objects published per image (highest scores first).",
              constraints="1 <= value <= 1000", check=_range(1, 1000), bounds=(1, 1000)),
    ParamSpec("classes", (), "Classes to publish (an allow-list of the model's class names, e.g. "
              "['chair', 'table']); unset or empty publishes every class.",
              constraints="names from roca_core.classes.CLASS_NAMES", check=_class_names),
    ParamSpec("sync_slop", 0.05, "Largest stamp difference in seconds between an image and the camera_info "
              "it is paired with.", constraints="0 < value <= 10", check=_range(0.0, 10.0, low_open=True),
              bounds=(0.0, 10.0)),
    ParamSpec("camera_info_mode", "synced", "synced: pair each image with the camera_info whose stamp is within "
              "sync_slop of its own; latest: with the newest camera_info of the image's frame and size, whatever "
              "its stamp (drivers that publish camera_info rarely, once, or with their own stamps).",
              constraints="synced | latest", check=_one_of("synced", "latest")),
    ParamSpec("fallback_hfov_deg", 0.0, "Horizontal field of view (degrees) assumed when camera_info K is all "
              "zero (an uncalibrated camera; camera_info_manager without a calibration file), with a warning; "
              "0 disables the fallback and such frames are rejected.",
              constraints="0 <= value <= 179", check=_range(0.0, 179.0), bounds=(0.0, 179.0)),
    ParamSpec("image_transport", "raw", "raw: subscribe to sensor_msgs/Image on 'image'; compressed: to "
              "sensor_msgs/CompressedImage (JPEG or PNG) on '<image>/compressed', as image_transport names it.",
              read_only=True, constraints="raw | compressed", check=_one_of("raw", "compressed")),
    ParamSpec("rectified", "auto", "Whether the input image is rectified. true: use P[:3,:3]; false: a raw "
              "image, undistorted in the node (plumb_bob, rational_polynomial, equidistant) when D is non-zero, "
              "then P; auto: rectified when the image topic's name contains 'rect' (image_rect, image_rect_raw).",
              constraints="auto | true | false", check=_one_of("auto", "true", "false")),
    ParamSpec("depth_topic", "", "Depth image registered to the colour image (same size and frame_id; "
              "RealSense: aligned_depth_to_color/image_raw with align_depth.enable:=true), 16UC1 millimetres or "
              "32FC1 metres, paired with each image by stamp within sync_slop; empty: RGB only.",
              read_only=True, constraints="topic name, or empty"),
    ParamSpec("depth_timeout", 1.0, "Seconds of colour frames without a depth image after which the node "
              "carries on RGB-only (said once; and again when depth returns).", constraints="0 < value <= 60",
              check=_range(0.0, 60.0, low_open=True), bounds=(0.0, 60.0)),
    ParamSpec("refine", "auto", "Refine poses against depth by fitting the retrieved CAD model: auto (only with "
              "measured depth), on (also against the predicted depth), off.",
              constraints="auto | on | off", check=_one_of("auto", "on", "off")),
    ParamSpec("up_vector", (), "Upright prior: the camera's up direction (against gravity) in its optical frame "
              "(x right, y down, z forward), e.g. [0.0, -1.0, 0.0] for a level camera; only each object's yaw is "
              "solved. Empty: off. An IMU on imu_topic, while it has a reading, takes precedence.",
              constraints="empty, or 3 numbers not all zero", check=_up_vector, float_array=True),
    ParamSpec("imu_topic", "", "sensor_msgs/Imu whose low-passed linear_acceleration (near 1 g) gives the "
              "upright prior; used only when its frame_id is the image's or imu_frame_is_camera_optical is true "
              "(no tf2 here). Empty: no IMU.", read_only=True, constraints="topic name, or empty"),
    ParamSpec("imu_frame_is_camera_optical", False, "The IMU's axes are the camera's optical axes whatever its "
              "frame_id says (RealSense D435i/D455 camera_imu_optical_frame)."),
    ParamSpec("camera_height", 0.0, "Ground-plane prior: height of the camera's optical centre above the floor in "
              "metres (a fixed, calibrated mount); each object is scaled about the camera until it stands on the "
              "floor. Needs an up direction (up_vector or imu_topic). 0: off.",
              constraints="0 <= value <= 100", check=_range(0.0, 100.0), bounds=(0.0, 100.0)),
    ParamSpec("camera_frame_id", "", "frame_id of the published results instead of the image's (for drivers "
              "whose frame_id is not the optical frame, or is empty); poses are in the OpenCV optical "
              "convention (x right, y down, z forward). Empty: the image's frame_id."),
    ParamSpec("marker_lifetime", 0.0, "Lifetime of the RViz markers in seconds; 0 keeps them until the next "
              "frame replaces them.", constraints="0 <= value <= 3600", check=_range(0.0, 3600.0),
              bounds=(0.0, 3600.0)),
    ParamSpec("mesh_uri_prefix", "", "Mesh URIs for RViz elsewhere: URI_PREFIX or LOCAL_DIR=URI_PREFIX; a mesh "
              "under LOCAL_DIR (default: the folder of all the database's meshes) is published as URI_PREFIX/"
              "<relative path> (package://PKG/DIR, http://HOST:PORT/DIR). Empty: file:// URIs, and package:// "
              "for meshes in an installed package's share directory.",
              constraints="empty, URI_PREFIX or /LOCAL_DIR=URI_PREFIX", check=_mesh_uri_prefix),
    ParamSpec("marker_mesh_mode", "resource", "How markers carry the CAD mesh: resource (MESH_RESOURCE, a URI "
              "RViz loads) or triangles (TRIANGLE_LIST with the triangles in the message: RViz on any machine "
              "shows it; meshes over 5000 triangles stay resource).",
              constraints="resource | triangles", check=_one_of("resource", "triangles")),
    ParamSpec("publish_markers", True, "Publish visualization_msgs/MarkerArray on 'markers'."),
    ParamSpec("publish_debug_image", True, "Publish the overlay image on 'debug_image' (only computed while "
              "someone subscribes)."),
    ParamSpec("half_precision", False, "Run the network in float16 autocast; only on a CUDA device "
              "(ignored with a warning on CPU).", read_only=True),
    ParamSpec("stats_period", 5.0, "Seconds between ~/stats messages (and DEBUG log lines) with frame "
              "counters and per-stage latency; 0 disables them. Health goes to /diagnostics at 1 Hz.",
              constraints="0 <= value <= 3600", check=_range(0.0, 3600.0), bounds=(0.0, 3600.0)),
)
SPECS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAM_SPECS}


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values; the node swaps in a new instance on every accepted change."""

    checkpoint: str = ""
    cad_database: str = ""
    device: str = "auto"
    score_threshold: float = 0.5
    mask_threshold: float = 0.7
    max_objects: int = 50
    classes: tuple[str, ...] = ()
    sync_slop: float = 0.05
    camera_info_mode: str = "synced"
    fallback_hfov_deg: float = 0.0
    image_transport: str = "raw"
    rectified: str = "auto"
    depth_topic: str = ""
    depth_timeout: float = 1.0
    refine: str = "auto"
    up_vector: tuple[float, ...] = ()
    imu_topic: str = ""
    imu_frame_is_camera_optical: bool = False
    camera_height: float = 0.0
    camera_frame_id: str = ""
    marker_lifetime: float = 0.0
    mesh_uri_prefix: str = ""
    marker_mesh_mode: str = "resource"
    publish_markers: bool = True
    publish_debug_image: bool = True
    half_precision: bool = False
    stats_period: float = 5.0

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeSettings":
        """Validate ``values`` (missing names take their defaults); unknown names are errors."""
        unknown = sorted(set(values) - set(SPECS_BY_NAME))
        if unknown:
            raise ParameterError(f"unknown parameters {unknown}; known: {sorted(SPECS_BY_NAME)}")
        return cls(**{name: spec.coerce(values.get(name, spec.default))
                      for name, spec in SPECS_BY_NAME.items()})

    def updated(self, changes: Mapping[str, Any]) -> "NodeSettings":
        """A copy with ``changes`` validated and applied (raises on the first bad value)."""
        unknown = sorted(set(changes) - set(SPECS_BY_NAME))
        if unknown:
            raise ParameterError(f"unknown parameters {unknown}")
        return dataclasses.replace(self, **{k: SPECS_BY_NAME[k].coerce(v) for k, v in changes.items()})


def validate_parameter(name: str, value: Any) -> Any:
    """Coerced value of one parameter; :class:`ParameterError` naming the problem otherwise."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        raise ParameterError(f"unknown parameter {name!r}")
    return spec.coerce(value)

