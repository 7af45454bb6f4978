"""roca_ros.camera_model against OpenCV's own projection of known 3D points.

For pixels of the pinhole (P) image, the undistortion map must point at the raw pixel where
cv2.projectPoints (cv2.fisheye.projectPoints) puts the same 3D point through K and D; the
intrinsics handed to the model must project those points where the undistorted image has them.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from roca_ros.camera_info import CameraInfoError  # noqa: E402
from roca_ros.camera_model import CameraModelCache, camera_model_for, resolve_rectified  # noqa: E402

W, H = 640, 480
K = np.array([[520.0, 0.0, 318.3], [0.0, 515.0, 243.7], [0.0, 0.0, 1.0]])
# P as cv2.getOptimalNewCameraMatrix / camera_calibration choose it: another focal length and centre.
P3 = np.array([[470.0, 0.0, 322.0], [0.0, 468.0, 238.0], [0.0, 0.0, 1.0]])
DISTORTIONS = {
    "plumb_bob": [-0.28, 0.09, 0.0012, -0.0007, -0.012],
    "rational_polynomial": [0.4, -0.2, 0.001, 0.0005, 0.02, 0.7, -0.1, 0.03],
    "equidistant": [0.05, -0.01, 0.004, -0.001],
}


def camera_info(model: str = "plumb_bob", d=None, width: int = W, height: int = H, binning: int = 0,
                roi=(0, 0, 0, 0), p3: np.ndarray = P3, k: np.ndarray = K) -> SimpleNamespace:
    p = np.zeros((3, 4))
    p[:, :3] = p3
    x, y, w, h = roi
    return SimpleNamespace(k=k.reshape(-1).tolist(), d=list(DISTORTIONS[model] if d is None else d),
                           r=np.eye(3).reshape(-1).tolist(), p=p.reshape(-1).tolist(), distortion_model=model,
                           width=width, height=height, binning_x=binning, binning_y=binning,
                           roi=SimpleNamespace(x_offset=x, y_offset=y, width=w, height=h))


def with_model(name: str) -> SimpleNamespace:
    """A plumb_bob CameraInfo whose distortion_model says ``name``."""
    return SimpleNamespace(**{**vars(camera_info("plumb_bob")), "distortion_model": name})


def opencv_projection(points: np.ndarray, model: str) -> np.ndarray:
    """Raw (distorted) full-resolution pixels of camera-frame points, as OpenCV computes them."""
    zero = np.zeros(3)
    d = np.array(DISTORTIONS[model])
    if model == "equidistant":
        pixels, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), zero, zero, K, d)
    else:
        pixels, _ = cv2.projectPoints(points, zero, zero, K, d)
    return pixels.reshape(-1, 2)


def points_behind_pixels(pixels: np.ndarray, M: np.ndarray, rng) -> np.ndarray:
    """3D points at random depths that the pinhole matrix M projects onto ``pixels``."""
    depth = rng.uniform(0.5, 6.0, size=len(pixels))
    rays = np.linalg.solve(M, np.c_[pixels, np.ones(len(pixels))].T).T
    return rays * depth[:, None]


@pytest.mark.parametrize("model", sorted(DISTORTIONS))
def test_undistortion_map_points_at_opencvs_projection(model):
    camera = camera_model_for(camera_info(model), W, H, rectified=False)
    np.testing.assert_allclose(camera.K, P3)
    assert camera.maps is not None and "undistorted from " + model in camera.source
    rng = np.random.default_rng(1)
    pixels = np.c_[rng.integers(80, W - 80, 200), rng.integers(60, H - 60, 200)]
    raw = opencv_projection(points_behind_pixels(pixels.astype(float), P3, rng), model)
    mapped = np.c_[camera.maps[0][pixels[:, 1], pixels[:, 0]], camera.maps[1][pixels[:, 1], pixels[:, 0]]]
    assert np.abs(mapped - raw).max() < 0.02, f"{model}: map off by {np.abs(mapped - raw).max():.3f} px"


@pytest.mark.parametrize("model", ["plumb_bob", "equidistant"])
def test_binning_and_roi_keep_the_maps_exact(model):
    x0, y0, bin_ = 96, 64, 2
    info = camera_info(model, roi=(x0, y0, 384, 288), binning=bin_)
    width, height = 384 // bin_, 288 // bin_
    camera = camera_model_for(info, width, height, rectified=False)
    expected_K = P3.copy()
    expected_K[0, 2] -= x0
    expected_K[1, 2] -= y0
    expected_K[:2] /= bin_
    np.testing.assert_allclose(camera.K, expected_K)
    assert camera.maps[0].shape == (height, width)
    rng = np.random.default_rng(2)
    pixels = np.c_[rng.integers(10, width - 10, 100), rng.integers(10, height - 10, 100)]
    points = points_behind_pixels(pixels.astype(float), camera.K, rng)
    raw_full = opencv_projection(points, model)
    raw_binned = (raw_full - [x0, y0]) / bin_
    mapped = np.c_[camera.maps[0][pixels[:, 1], pixels[:, 0]], camera.maps[1][pixels[:, 1], pixels[:, 0]]]
    assert np.abs(mapped - raw_binned).max() < 0.02


def test_undistorted_image_shows_points_where_k_projects_them():
    """A bright dot drawn at OpenCV's raw projection lands at P's pinhole projection after rectify."""
    camera = camera_model_for(camera_info("plumb_bob"), W, H, rectified=False)
    point = np.array([[-1.1, 0.6, 2.0]])  # far from the centre: distortion moves it ~7 px
    u, v = opencv_projection(point, "plumb_bob")[0]
    pinhole = (camera.K @ point[0])[:2] / point[0, 2]
    assert np.hypot(*(pinhole - (u, v))) > 5  # the test would notice a missing undistortion
    yy, xx = np.mgrid[0:H, 0:W]
    blob = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5 ** 2))
    raw = np.repeat((blob * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    out = camera.rectify(raw)[:, :, 0].astype(float)
    assert out.shape == (H, W)
    window = out > 0.3 * out.max()
    centroid = np.array([(xx * out)[window].sum(), (yy * out)[window].sum()]) / out[window].sum()
    assert np.hypot(*(centroid - pinhole)) < 0.5, (centroid, pinhole)


def test_rectified_input_uses_p_and_raw_pinhole_input_uses_k():
    rect = camera_model_for(camera_info("plumb_bob"), W, H, rectified=True)
    np.testing.assert_allclose(rect.K, P3)
    assert rect.maps is None and rect.source == "P"
    image = np.zeros((H, W, 3), np.uint8)
    assert rect.rectify(image) is image
    pinhole = camera_model_for(camera_info("plumb_bob", d=[0.0] * 5), W, H, rectified=False)
    np.testing.assert_allclose(pinhole.K, K)
    assert pinhole.maps is None
    binned = camera_model_for(camera_info("plumb_bob", binning=2), W // 2, H // 2, rectified=True)
    np.testing.assert_allclose(binned.K[:2], P3[:2] / 2)


def test_unsupported_or_inconsistent_camera_infos_are_rejected_with_reasons():
    with pytest.raises(CameraInfoError, match="distortion model 'inverse_brown_conrady' of a raw image is not "
                                              "supported; supported: \\['equidistant', 'plumb_bob', "
                                              "'rational_polynomial'\\]"):
        camera_model_for(with_model("inverse_brown_conrady"), W, H, rectified=False)
    with pytest.raises(CameraInfoError, match="needs 4 coefficients in D, got 5"):
        camera_model_for(camera_info("equidistant", d=[0.1, 0, 0, 0, 0]), W, H, rectified=False)
    with pytest.raises(CameraInfoError, match="P is all zeros"):
        camera_model_for(camera_info("plumb_bob", p3=np.zeros((3, 3))), W, H, rectified=True)
    with pytest.raises(CameraInfoError, match="camera P is not upper triangular"):
        camera_model_for(camera_info("plumb_bob", p3=P3 + np.tri(3, k=-1)), W, H, rectified=True)
    with pytest.raises(CameraInfoError, match="does not match image size"):
        camera_model_for(camera_info("plumb_bob"), W // 2, H // 2, rectified=False)
    # Unknown model names are harmless when D is zero or the image is rectified.
    assert camera_model_for(with_model("custom"), W, H, rectified=True).source == "P"


def test_rectified_auto_follows_the_topic_name():
    assert resolve_rectified("auto", "/camera/image_rect") is True
    assert resolve_rectified("auto", "/camera/color/image_rect_raw") is True
    assert resolve_rectified("auto", "/camera/color/image_raw") is False
    assert resolve_rectified("auto", "/rectifier/image") is False  # only the topic's own name counts
    assert resolve_rectified("true", "/camera/image_raw") is True
    assert resolve_rectified("false", "/camera/image_rect") is False
    with pytest.raises(ValueError, match="rectified must be one of"):
        resolve_rectified("yes", "/x")


def test_cache_builds_maps_once_per_camera_info():
    seen = []
    cache = CameraModelCache(entries=2, on_new=seen.append)
    first = cache.get(camera_info("plumb_bob"), W, H, False)
    assert cache.get(camera_info("plumb_bob"), W, H, False) is first and len(seen) == 1
    cache.get(camera_info("equidistant"), W, H, False)
    cache.get(camera_info("plumb_bob"), W, H, True)
    assert len(cache) == 2 and len(seen) == 3
    assert cache.get(camera_info("plumb_bob"), W, H, False) is not first  # evicted, rebuilt
