"""sensor_msgs/Image <-> numpy: every supported encoding, and malformed headers rejected."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roca_ros.camera_info import CameraInfoError, check_frame_ids, intrinsics_for_image, intrinsics_from_k
from driver_images import DRIVER_ENCODINGS, bayer_bytes, driver_image, patch_image, patch_interior
from roca_ros.image_conversion import (
    COLOUR_ENCODINGS, ENCODINGS, MAX_IMAGE_SIDE, ImageConversionError, array_to_image_msg, image_to_array, image_to_rgb,
    rgb_to_image_msg,
)


@dataclass
class FakeImage:
    """Same fields as sensor_msgs/Image: the converter must accept any such object."""
    height: int
    width: int
    encoding: str
    step: int
    data: bytes
    is_bigendian: int = 0


@dataclass
class FakeRoi:
    x_offset: int = 0
    y_offset: int = 0
    width: int = 0
    height: int = 0


@dataclass
class FakeInfo:
    k: list
    width: int
    height: int
    binning_x: int = 0
    binning_y: int = 0
    roi: FakeRoi = None


def random_rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding,order", [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0])])
def test_three_channel_encodings_give_rgb(encoding, order):
    rgb = random_rgb()
    raw = rgb[:, :, order]
    msg = FakeImage(5, 7, encoding, 21, raw.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding,order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_four_channel_encodings_drop_alpha(encoding, order):
    rgb = random_rgb()
    alpha = np.full((5, 7, 1), 77, np.uint8)
    raw = np.concatenate([rgb[:, :, order], alpha], axis=2)
    out = image_to_rgb(FakeImage(5, 7, encoding, 28, raw.tobytes()))
    np.testing.assert_array_equal(out, rgb)


def test_mono8_is_replicated_to_three_channels():
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    out = image_to_rgb(FakeImage(5, 7, "mono8", 7, grey.tobytes()))
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


@pytest.mark.parametrize("encoding", DRIVER_ENCODINGS)
def test_driver_encodings_give_the_known_image(encoding):
    """Each encoding of the patch image (built from the encoding's definition) converts back."""
    raw, expected, tolerance = driver_image(encoding)
    out = image_to_rgb(array_to_image_msg(raw, encoding))
    assert out.shape == expected.shape and out.dtype == np.uint8
    interior = patch_interior()
    error = np.abs(out[interior].astype(int) - expected[interior]).max()
    assert error <= tolerance, f"{encoding}: off by {error}"


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_are_not_interchangeable(pattern):
    """The mosaic read with any other pattern gives wrong colours (so the naming is really checked)."""
    rgb = patch_image()
    mosaic = bayer_bytes(rgb, pattern)
    interior = patch_interior()
    for other in {"rggb", "bggr", "gbrg", "grbg"} - {pattern}:
        out = image_to_rgb(array_to_image_msg(mosaic, f"bayer_{other}8"))
        assert np.abs(out[interior].astype(int) - rgb[interior]).max() > 50, (pattern, other)


def test_sixteen_bit_big_endian_and_padded_rows():
    raw, expected, _ = driver_image("rgb16")
    h, w = raw.shape[:2]
    padded = np.zeros((h, w * 6 + 4), np.uint8)
    padded[:, : w * 6] = raw.astype(">u2").view(np.uint8).reshape(h, w * 6)
    out = image_to_rgb(FakeImage(h, w, "rgb16", w * 6 + 4, padded.tobytes(), is_bigendian=1))
    np.testing.assert_array_equal(out, expected)


def test_yuv422_needs_an_even_width():
    with pytest.raises(ImageConversionError, match="width 7 is odd; yuv422_yuy2"):
        image_to_rgb(FakeImage(2, 7, "yuv422_yuy2", 14, bytes(28)))


def test_unknown_encoding_message_lists_exactly_the_supported_encodings():
    with pytest.raises(ImageConversionError) as info:
        image_to_rgb(FakeImage(2, 2, "nv21", 6, bytes(12)))
    listed = str(info.value).split("supported: ", 1)[1].split(", ")
    assert listed == sorted(listed) and set(listed) == set(DRIVER_ENCODINGS) == set(COLOUR_ENCODINGS)
    with pytest.raises(ImageConversionError, match="depth/scalar encoding"):
        image_to_rgb(FakeImage(2, 2, "16UC1", 4, bytes(8)))


def test_row_padding_is_removed():
    rgb = random_rgb(4, 3)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :9] = rgb.reshape(4, 9)
    padded[:, 9:] = 255
    out = image_to_rgb(FakeImage(4, 3, "rgb8", 16, padded.tobytes()))
    np.testing.assert_array_equal(out, rgb)


def test_depth_encodings_and_big_endian():
    depth = np.array([[1, 2, 3], [1000, 65535, 0]], dtype=np.uint16)
    little = image_to_array(FakeImage(2, 3, "16UC1", 6, depth.astype("<u2").tobytes()))
    big = image_to_array(FakeImage(2, 3, "16UC1", 6, depth.astype(">u2").tobytes(), is_bigendian=1))
    np.testing.assert_array_equal(little[:, :, 0], depth)
    np.testing.assert_array_equal(big[:, :, 0], depth)
    metres = np.array([[0.5, np.nan]], dtype=np.float32)
    out = image_to_array(FakeImage(1, 2, "32FC1", 8, metres.tobytes()))
    np.testing.assert_array_equal(out[:, :, 0], metres)
    with pytest.raises(ImageConversionError, match="not a colour image"):
        image_to_rgb(FakeImage(2, 3, "16UC1", 6, depth.tobytes()))


def test_output_does_not_alias_message_buffer():
    raw = bytearray(random_rgb().tobytes())
    out = image_to_rgb(FakeImage(5, 7, "rgb8", 21, raw))
    before = out.copy()
    raw[:] = bytes(len(raw))
    np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("kwargs,match", [
    (dict(encoding="nv21"), "unsupported image encoding 'nv21'"),
    (dict(encoding=""), "unsupported image encoding ''"),
    (dict(step=20), "step 20 is smaller than width 7"),
    (dict(step=21 + 100000), "step .* does not match width"),
    (dict(width=0, step=0, data=b""), "size is zero"),
    (dict(height=0, data=b""), "size is zero"),
    (dict(width=MAX_IMAGE_SIDE + 1, step=3 * (MAX_IMAGE_SIDE + 1)), "exceeds the limit"),
    (dict(data=b"\x00" * 104), "has 104 bytes, expected step 21 x height 5 = 105"),
    (dict(data=b"\x00" * 106), "has 106 bytes"),
    (dict(height=-1), "size is zero"),
    (dict(height=2.5), "height is not an integer"),
])
def test_bad_headers_are_rejected_with_reason(kwargs, match):
    fields = dict(height=5, width=7, encoding="rgb8", step=21, data=b"\x00" * 105)
    fields.update(kwargs)
    with pytest.raises(ImageConversionError, match=match):
        image_to_rgb(FakeImage(**fields))


def test_rejection_error_is_a_value_error():
    assert issubclass(ImageConversionError, ValueError)


@st.composite
def image_fields(draw):
    """Image headers near and far from valid, with data of a drawn length."""
    encoding = draw(st.sampled_from(sorted(ENCODINGS) + ["yuv422", "RGB8", "bayer_rggb8", "", "rgb16"]))
    height = draw(st.one_of(st.integers(-3, 12), st.sampled_from([MAX_IMAGE_SIDE, MAX_IMAGE_SIDE + 1, 2**31])))
    width = draw(st.one_of(st.integers(-3, 12), st.sampled_from([MAX_IMAGE_SIDE + 1, 2**31])))
    bpp = ENCODINGS[encoding].bytes_per_pixel if encoding in ENCODINGS else 3
    step = draw(st.one_of(st.just(max(width, 0) * bpp), st.integers(-2, 60)))
    size_mode = draw(st.sampled_from(["exact", "random"]))
    if size_mode == "exact" and 0 <= height <= 12 and 0 <= step <= 100:
        n = height * step
    else:
        n = draw(st.integers(0, 300))
    data = draw(st.binary(min_size=n, max_size=n))
    return FakeImage(height, width, encoding, step, data, is_bigendian=draw(st.integers(0, 1)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_fields())
def test_malformed_images_either_convert_exactly_or_raise_value_error(msg):
    """No input crashes the converter with anything but a ValueError naming the problem."""
    try:
        out = image_to_array(msg)
    except ImageConversionError as exc:
        assert str(exc)
        return
    info = ENCODINGS[msg.encoding]
    assert out.shape == (msg.height, msg.width, info.channels)
    assert msg.step >= msg.width * info.bytes_per_pixel
    assert len(msg.data) == msg.step * msg.height
    # The first pixel row is read from the first bytes of the buffer.
    first = np.frombuffer(msg.data[: msg.width * info.bytes_per_pixel],
                          dtype=info.dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    np.testing.assert_array_equal(out[0].reshape(-1), first)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_real_message_roundtrip(h, w, seed):
    rgb = random_rgb(h, w, seed)
    msg = rgb_to_image_msg(rgb)
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("rgb8", 3 * w, h, w)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    bgr = array_to_image_msg(rgb[:, :, ::-1], "bgr8")
    np.testing.assert_array_equal(image_to_rgb(bgr), rgb)


def test_rgb_to_image_msg_rejects_wrong_arrays():
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_image_msg(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        rgb_to_image_msg(np.zeros((2, 2), np.uint8))


# --- CameraInfo ------------------------------------------------------------------------------

K_GOOD = [400.0, 0.0, 159.5, 0.0, 410.0, 119.5, 0.0, 0.0, 1.0]


def test_good_camera_info_gives_k():
    K = intrinsics_for_image(FakeInfo(K_GOOD, 320, 240), 320, 240)
    np.testing.assert_allclose(K, np.array(K_GOOD).reshape(3, 3))


def test_camera_info_without_size_is_accepted():
    K = intrinsics_for_image(FakeInfo(K_GOOD, 0, 0), 640, 480)
    assert K[0, 0] == 400.0


@pytest.mark.parametrize("k,match", [
    ([0.0] * 9, "all zeros"),
    ([float("nan")] + K_GOOD[1:], "NaN or inf"),
    (K_GOOD[:4] + [float("inf")] + K_GOOD[5:], "NaN or inf"),
    ([-400.0] + K_GOOD[1:], "focal lengths must be positive"),
    (K_GOOD[:8] + [0.0], "K\\[2\\]\\[2\\]"),
    (K_GOOD[:6] + [1.0] + K_GOOD[7:], "upper triangular"),
    (K_GOOD[:8], "9 entries"),
])
def test_bad_k_is_rejected(k, match):
    with pytest.raises(CameraInfoError, match=match):
        intrinsics_from_k(k)


def test_size_mismatch_is_rejected():
    with pytest.raises(CameraInfoError, match="camera_info size 640x480 does not match image size 320x240"):
        intrinsics_for_image(FakeInfo(K_GOOD, 640, 480), 320, 240)


def test_binning_and_roi_adjust_k():
    binned = intrinsics_for_image(FakeInfo(K_GOOD, 640, 480, binning_x=2, binning_y=2), 320, 240)
    np.testing.assert_allclose(binned[0], np.array(K_GOOD[:3]) / 2)
    roi = FakeRoi(x_offset=100, y_offset=50, width=200, height=100)
    cropped = intrinsics_for_image(FakeInfo(K_GOOD, 640, 480, roi=roi), 200, 100)
    assert cropped[0, 2] == pytest.approx(59.5) and cropped[1, 2] == pytest.approx(69.5)


def test_frame_ids_must_match():
    check_frame_ids("camera", "camera")
    with pytest.raises(CameraInfoError, match="frame ids differ: image 'camera' vs camera_info 'other'"):
        check_frame_ids("camera", "other")
