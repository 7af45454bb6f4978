"""sensor_msgs/CompressedImage (JPEG, PNG) -> RGB, for ``image_transport: compressed``.

Most bags are recorded as ``.../image_raw/compressed``, and a pip-only install has no
``image_transport republish`` to decode them, so the node subscribes to ``<image>/compressed``
itself. :func:`compressed_image_size` reads the size from the JPEG/PNG header without decoding
(cheap, on the executor thread, so pairing checks the CameraInfo's size as for raw images);
:func:`decode_compressed` decodes on the worker. Every failure is an
:class:`~roca_ros.image_conversion.ImageConversionError` that says why.
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

from roca_ros.image_conversion import MAX_IMAGE_SIDE, ImageConversionError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01} | set(range(0xD0, 0xDA))
MAX_PAYLOAD_BYTES = 64 << 20


def _payload(msg: Any) -> memoryview:
    data = msg.data
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).view(np.uint8)).cast("B")
    try:
        return memoryview(data).cast("B")
    except TypeError:
        return memoryview(bytes(data))


def image_format(msg: Any) -> str:
    """"jpeg" or "png" from the payload's signature (the format string is only checked against it)."""
    data = _payload(msg)
    fmt = str(getattr(msg, "format", "")).lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressed image format {msg.format!r} is a depth stream, not a colour image")
    if len(data) == 0:
        raise ImageConversionError("compressed image has no data")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ImageConversionError(f"compressed image of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")
    head = bytes(data[:8])
    if head.startswith(PNG_SIGNATURE):
        found = "png"
    elif head.startswith(JPEG_SOI):
        found = "jpeg"
    else:
        raise ImageConversionError(
            f"compressed image payload is neither JPEG nor PNG (starts with {head.hex()}, format {msg.format!r})")
    if fmt and "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ImageConversionError(f"unsupported compressed image format {msg.format!r}; supported: jpeg, png")
    return found


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    if bytes(data[-2:]) != JPEG_EOI:
        raise ImageConversionError("compressed JPEG is truncated (no end-of-image marker)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageConversionError(f"compressed JPEG is corrupt: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            i += 2
            continue
        (length,) = struct.unpack(">H", bytes(data[i + 2:i + 4]))
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", bytes(data[i + 5:i + 9]))
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            break
        i += 2 + length
    raise ImageConversionError("compressed JPEG is corrupt: no frame header (SOF) before the image data")


def _png_size(data: memoryview) -> tuple[int, int]:
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        raise ImageConversionError("compressed PNG is corrupt: no IHDR chunk")
    if bytes(data[-8:-4]) != b"IEND":
        raise ImageConversionError("compressed PNG is truncated (no IEND chunk)")
    return struct.unpack(">II", bytes(data[16:24]))


def compressed_image_size(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> tuple[int, int]:
    """(width, height) from the JPEG/PNG header, without decoding; raises ImageConversionError."""
    fmt = image_format(msg)
    data = _payload(msg)
    width, height = _jpeg_size(data) if fmt == "jpeg" else _png_size(data)
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"compressed image size is zero: {width}x{height} (width x height)")
    if width > max_side or height > max_side:
        raise ImageConversionError(
            f"compressed image size {width}x{height} exceeds the limit of {max_side} pixels per side")
    return int(width), int(height)


def decode_compressed(msg: Any, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """CompressedImage (JPEG or PNG, colour or grey, 8 or 16 bit) -> (H, W, 3) uint8 RGB."""
    import cv2

    width, height = compressed_image_size(msg, max_side)
    fmt = image_format(msg)
    bgr = cv2.imdecode(np.frombuffer(_payload(msg), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"compressed {fmt.upper()} image could not be decoded (corrupt data)")
    if bgr.shape[:2] != (height, width):
        raise ImageConversionError(
            f"compressed {fmt.upper()} decoded to {bgr.shape[1]}x{bgr.shape[0]}, header says {width}x{height}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
