"""sensor_msgs/Image <-> numpy without cv_bridge.

cv_bridge needs a full ROS install; the pip-installed node must work without one, so the
encodings camera drivers publish are converted here: RGB/BGR(A) and mono in 8 and 16 bits,
YUV 4:2:2 (usb_cam and v4l2_camera with YUYV or UYVY), the four 8-bit Bayer patterns of
industrial cameras (demosaiced with OpenCV), and the ``8UC1``/``8UC3``/``8UC4`` that cv_bridge
writes for plain OpenCV images (OpenCV's BGR channel order). Every check raises :class:`ImageConversionError` (a
``ValueError``) naming the bad field, because the node turns these messages into its
"rejected frame" warnings.

The checks only look at the message's fields, so they work on any object with
``height``, ``width``, ``encoding``, ``step``, ``is_bigendian`` and ``data`` (tests use a
plain dataclass as well as the real message).
"""
from __future__ import annotations

import array as pyarray
from dataclasses import dataclass
from typing import Any

import numpy as np

# Larger sides are rejected: they would only come from a corrupt header and could make
# the node allocate gigabytes.
MAX_IMAGE_SIDE = 8192


class ImageConversionError(ValueError):
    """An Image message that cannot be converted; the message says which field is wrong."""


@dataclass(frozen=True)
class EncodingInfo:
    channels: int
    dtype: np.dtype
    # Channel order to reach RGB (None: not a colour encoding).
    to_rgb: tuple[int, ...] | None
    # cv2.COLOR_* conversion to RGB instead of a channel reordering (YUV 4:2:2, Bayer).
    cv2_code: str = ""

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.dtype.itemsize


ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(3, np.dtype(np.uint8), (0, 1, 2)),
    "bgr8": EncodingInfo(3, np.dtype(np.uint8), (2, 1, 0)),
    "rgba8": EncodingInfo(4, np.dtype(np.uint8), (0, 1, 2)),
    "bgra8": EncodingInfo(4, np.dtype(np.uint8), (2, 1, 0)),
    "mono8": EncodingInfo(1, np.dtype(np.uint8), (0, 0, 0)),
    # 16-bit colour and mono: the full range is scaled to 8 bits (value >> 8), as cv_bridge does.
    "rgb16": EncodingInfo(3, np.dtype(np.uint16), (0, 1, 2)),
    "bgr16": EncodingInfo(3, np.dtype(np.uint16), (2, 1, 0)),
    "mono16": EncodingInfo(1, np.dtype(np.uint16), (0, 0, 0)),
    # cv_bridge's names for plain OpenCV images, which are BGR(A).
    "8UC1": EncodingInfo(1, np.dtype(np.uint8), (0, 0, 0)),
    "8UC3": EncodingInfo(3, np.dtype(np.uint8), (2, 1, 0)),
    "8UC4": EncodingInfo(4, np.dtype(np.uint8), (2, 1, 0)),
    # YUV 4:2:2, two bytes per pixel: yuv422_yuy2 is Y0 U Y1 V (YUYV), ROS' yuv422 is U Y0 V Y1 (UYVY).
    "yuv422_yuy2": EncodingInfo(2, np.dtype(np.uint8), (), "COLOR_YUV2RGB_YUY2"),
    "yuv422": EncodingInfo(2, np.dtype(np.uint8), (), "COLOR_YUV2RGB_UYVY"),
    # Bayer mosaics. OpenCV names a pattern by the second row's second and third pixels, so
    # ROS' bayer_rggb8 (R G / G B from the top-left) is OpenCV's BayerBG (checked on a known
    # image in test_image_conversion.py).
    "bayer_rggb8": EncodingInfo(1, np.dtype(np.uint8), (), "COLOR_BayerBG2RGB"),
    "bayer_bggr8": EncodingInfo(1, np.dtype(np.uint8), (), "COLOR_BayerRG2RGB"),
    "bayer_gbrg8": EncodingInfo(1, np.dtype(np.uint8), (), "COLOR_BayerGR2RGB"),
    "bayer_grbg8": EncodingInfo(1, np.dtype(np.uint8), (), "COLOR_BayerGB2RGB"),
    "16UC1": EncodingInfo(1, np.dtype(np.uint16), None),
    "32FC1": EncodingInfo(1, np.dtype(np.float32), None),
}
COLOUR_ENCODINGS: tuple[str, ...] = tuple(sorted(k for k, v in ENCODINGS.items() if v.to_rgb is not None))


def _as_int(value: Any, field: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImageConversionError(f"image {field} is not an integer: {value!r}") from None
    if number != value:
        raise ImageConversionError(f"image {field} is not an integer: {value!r}")
    return number


def _data_buffer(data: Any) -> np.ndarray:
    """The message payload as a flat uint8 array without copying when possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        # A list of ints (what rosidl accepts on assignment).
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise ImageConversionError(f"image data is not a byte buffer ({type(data).__name__})") from None


def check_image_header(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> EncodingInfo:
    """Validate size, encoding, step and data length without reading pixels; returns the encoding.

    Cheap (O(1)), so the node runs it on the executor thread to reject frames before
    queueing them.
    """
    height = _as_int(msg.height, "height")
    width = _as_int(msg.width, "width")
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image size is zero: {width}x{height} (width x height)")
    if height > max_side or width > max_side:
        raise ImageConversionError(
            f"image size {width}x{height} exceeds the limit of {max_side} pixels per side")
    encoding = str(msg.encoding)
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    if info.cv2_code.startswith("COLOR_YUV") and width % 2:
        raise ImageConversionError(f"image width {width} is odd; {encoding} pairs of pixels share U and V")
    step = _as_int(msg.step, "step")
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width {width} x {info.bytes_per_pixel} bytes per "
            f"pixel ({encoding}) = {row_bytes}")
    if step > row_bytes + 4096 or step > 4 * row_bytes + 64:
        raise ImageConversionError(
            f"image step {step} does not match width {width} ({encoding} rows need {row_bytes} bytes)")
    size = _data_length(msg.data)
    if size != step * height:
        raise ImageConversionError(
            f"image data has {size} bytes, expected step {step} x height {height} = {step * height}")
    return info


def check_colour_image_header(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> EncodingInfo:
    """:func:`check_image_header`, and the encoding must be one the model takes (colour or mono8).

    O(1) like the header check, so the node rejects depth images before pairing them. An
    unknown encoding's message lists exactly the encodings the node takes.
    """
    _check_colour_encoding(str(msg.encoding))
    return check_image_header(msg, max_side)


def _check_colour_encoding(encoding: str) -> None:
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(COLOUR_ENCODINGS)}")
    if info.to_rgb is None:
        raise ImageConversionError(
            f"image encoding {encoding!r} is a depth/scalar encoding, not a colour image; "
            f"expected one of {', '.join(COLOUR_ENCODINGS)}")


def _data_length(data: Any) -> int:
    if isinstance(data, np.ndarray):
        return int(data.nbytes)
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def image_to_array(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Image message -> (H, W, C) array in the encoding's own channel order and dtype.

    Row padding (step > width * bytes per pixel) is removed; big-endian multi-byte data is
    swapped to native order. The result owns its memory (the message can be freed).
    """
    info = check_image_header(msg, max_side)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buf = _data_buffer(msg.data)
    expected = step * height
    if buf.size != expected:
        raise ImageConversionError(
            f"image data has {buf.size} bytes, expected step {step} x height {height} = {expected}")
    rows = buf.reshape(height, step)[:, : width * info.bytes_per_pixel]
    dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<") if info.dtype.itemsize > 1 else info.dtype
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, info.channels)
    return pixels.astype(info.dtype.newbyteorder("="), copy=True)


def image_to_rgb(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Image message of a colour or mono encoding -> (H, W, 3) uint8 RGB (a new array)."""
    encoding = str(getattr(msg, "encoding", ""))
    _check_colour_encoding(encoding)
    pixels = image_to_array(msg, max_side)
    info = ENCODINGS[encoding]
    if info.cv2_code:
        import cv2
        source = pixels[:, :, 0] if info.channels == 1 else pixels
        return cv2.cvtColor(np.ascontiguousarray(source), getattr(cv2, info.cv2_code))
    if info.dtype.itemsize == 2:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.ascontiguousarray(pixels[:, :, list(info.to_rgb)])


def rgb_pixels(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """(H, W, 3) uint8 RGB for the model, sharing the message's buffer when it already is that.

    Unpadded rgb8 (what most drivers send) costs no copy: the result is a view that lives as
    long as the message and must not be written to. Every other case is :func:`image_to_rgb`.
    """
    check_image_header(msg, max_side)
    height, width = int(msg.height), int(msg.width)
    if msg.encoding == "rgb8" and int(msg.step) == width * 3:
        return _data_buffer(msg.data).reshape(height, width, 3)
    return image_to_rgb(msg, max_side)


def _byte_array(array: np.ndarray) -> "pyarray.array":
    """The bytes of ``array`` as array.array('B'), the type rosidl keeps for uint8[] (one copy)."""
    out = pyarray.array("B")
    out.frombytes(np.ascontiguousarray(array).data.cast("B"))
    return out


def rgb_to_image_msg(rgb: np.ndarray, header: Any = None) -> Any:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8 (imports ROS messages lazily)."""
    from sensor_msgs.msg import Image

    array = np.ascontiguousarray(rgb)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {array.shape} {array.dtype}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(array.shape[1] * 3)
    msg.data = _byte_array(array)
    return msg


def array_to_image_msg(array: np.ndarray, encoding: str, header: Any = None) -> Any:
    """(H, W[, C]) array -> sensor_msgs/Image of ``encoding`` (any of :data:`ENCODINGS`)."""
    from sensor_msgs.msg import Image

    info = ENCODINGS.get(encoding)
    if info is None:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    data = np.ascontiguousarray(array, dtype=info.dtype)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[2] != info.channels:
        raise ValueError(f"encoding {encoding} needs {info.channels} channels, got array {array.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(data.shape[1] * info.bytes_per_pixel)
    msg.data = data.astype(info.dtype.newbyteorder("<"), copy=False).tobytes()
    return msg
