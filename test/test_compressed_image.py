"""CompressedImage decoding: JPEG and PNG written by Pillow (an encoder other than the decoder's),
sizes read from the headers, and corrupt payloads rejected with reasons."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("cv2")
from PIL import Image as PilImage  # noqa: E402

from driver_images import patch_image, patch_interior  # noqa: E402
from roca_ros.compressed_image import compressed_image_size, decode_compressed  # noqa: E402
from roca_ros.image_conversion import ImageConversionError  # noqa: E402


@dataclass
class FakeCompressed:
    """Same fields as sensor_msgs/CompressedImage."""
    format: str
    data: bytes


def encoded(rgb: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if rgb.ndim == 2 else "RGB"
    PilImage.fromarray(rgb, mode).save(buffer, format=fmt, **options)
    return buffer.getvalue()


RGB = patch_image(scale=4)  # 64 x 48


@pytest.mark.parametrize("fmt,options,ros_format,tolerance", [
    ("PNG", {}, "rgb8; png compressed bgr8", 0),
    ("JPEG", {"quality": 95}, "rgb8; jpeg compressed bgr8", 6),
    ("JPEG", {"quality": 95, "progressive": True}, "jpeg", 6),
])
def test_jpeg_and_png_decode_to_the_known_image(fmt, options, ros_format, tolerance):
    msg = FakeCompressed(ros_format, encoded(RGB, fmt, **options))
    assert compressed_image_size(msg) == (64, 48)
    out = decode_compressed(msg)
    assert out.shape == RGB.shape and out.dtype == np.uint8
    interior = patch_interior(scale=4)
    assert np.abs(out[interior].astype(int) - RGB[interior]).max() <= tolerance


def test_grey_jpeg_becomes_three_equal_channels():
    grey = RGB[:, :, 1]
    out = decode_compressed(FakeCompressed("jpeg", encoded(grey, "JPEG", quality=95)))
    assert out.shape == (48, 64, 3)
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def _corrupt_png() -> bytes:
    data = bytearray(encoded(RGB, "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 20] ^= 0xFF  # CRC of the image data no longer matches
    return bytes(data)


@pytest.mark.parametrize("fmt,data,reason", [
    ("jpeg", b"", "has no data"),
    ("jpeg", b"GIF89a" + bytes(40), "neither JPEG nor PNG"),
    ("jpeg", encoded(RGB, "JPEG")[:-300], "truncated"),
    ("png", encoded(RGB, "PNG")[:-20], "truncated"),
    ("png", None, "could not be decoded"),
    ("jpeg", b"\xff\xd8" + b"\x00" * 50 + b"\xff\xd9", "corrupt"),
    ("16UC1; compressedDepth png", encoded(RGB, "PNG"), "depth stream"),
    ("tiff", encoded(RGB, "PNG"), "unsupported compressed image format 'tiff'"),
])
def test_bad_payloads_are_rejected_with_reasons(fmt, data, reason):
    msg = FakeCompressed(fmt, _corrupt_png() if data is None else data)
    with pytest.raises(ImageConversionError, match=reason):
        decode_compressed(msg)


def test_size_limit_applies_before_decoding():
    msg = FakeCompressed("png", encoded(RGB, "PNG"))
    with pytest.raises(ImageConversionError, match="exceeds the limit of 32 pixels"):
        compressed_image_size(msg, max_side=32)
