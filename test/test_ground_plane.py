"""The ground-plane prior: objects scaled about the camera until they stand on the floor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roca_core.geometry.ground_plane import (GroundPlaneConfig, bottom_drops, camera_height_from_objects,
                                             canonical_half_heights, floor_factors)

UP = np.array([0.0, -1.0, 0.0])  # a level camera: OpenCV's y points down


def _tilted_up(pitch_deg: float) -> np.ndarray:
    """Up in the frame of a camera looking ``pitch_deg`` below the horizon."""
    a = np.radians(pitch_deg)
    return np.array([0.0, -np.cos(a), np.sin(a)])


def _standing_objects(up: np.ndarray, height: float, rng: np.random.Generator, n: int = 5):
    """n objects standing on the floor ``height`` below a camera with up direction ``up``."""
    half = rng.uniform(0.3, 0.5, n)                 # canonical half heights
    scales = rng.uniform(0.5, 2.0, (n, 3))
    ground = rng.uniform(-1.5, 1.5, (n, 3))
    ground[:, 2] = rng.uniform(2.0, 5.0, n)          # points in front of the camera ...
    ground -= ((ground @ up) + height)[:, None] * up  # ... moved onto the floor: up . p = -height
    centres = ground + (scales[:, 1] * half)[:, None] * up
    return centres, scales, half


def test_half_heights_come_from_the_occupied_layers():
    vox = np.zeros((3, 32, 32, 32), bool)
    vox[0, 10, 8:24, 5] = True    # y layers 8..23: 16 of 32 -> half height 0.25
    vox[1, :, :, :] = True        # the full box: 0.5
    # an empty grid falls back to the unit box
    np.testing.assert_allclose(canonical_half_heights(vox), [0.25, 0.5, 0.5])
    with pytest.raises(ValueError, match="voxels"):
        canonical_half_heights(np.zeros((32, 32, 32)))


@pytest.mark.parametrize("pitch", [0.0, 25.0])
def test_factor_puts_an_object_scaled_about_the_camera_back_on_the_floor(pitch):
    up, height = _tilted_up(pitch), 1.4
    centres, scales, half = _standing_objects(up, height, np.random.default_rng(0))
    np.testing.assert_allclose(bottom_drops(centres, scales, half, up), height)
    wrong = np.array([1.3, 0.8, 1.1, 0.9, 1.25])    # the same images, other distances
    f = floor_factors(centres * wrong[:, None], scales * wrong[:, None], half, up, height)
    np.testing.assert_allclose(f, 1.0 / wrong, rtol=1e-9)
    np.testing.assert_allclose(centres * wrong[:, None] * f[:, None], centres, atol=1e-9)
    # half the weight goes half the way in log space
    f_half = floor_factors(centres * wrong[:, None], scales * wrong[:, None], half, up, height,
                           GroundPlaneConfig(weight=0.5))
    np.testing.assert_allclose(f_half, wrong ** -0.5, rtol=1e-9)


def test_factor_is_not_applied_near_the_horizon_or_far_from_the_prediction():
    up, height = UP, 1.4
    centres = np.array([[0.0, 1.0, 3.0],     # bottom 1.2 m below: applied (1.4 / 1.2)
                        [0.0, 0.1, 3.0],     # bottom 0.3 m below: factor 4.7
                        [0.0, -0.5, 3.0],    # bottom above the camera
                        [0.0, 0.35, 3.0]])   # bottom 0.05 m below the camera
    scales = np.full((4, 3), 0.4)
    half = np.full(4, 0.5)                   # bottom = centre + 0.2 m down
    f = floor_factors(centres, scales, half, up, height)
    assert f[0] == pytest.approx(1.4 / 1.2)
    assert f[1] == 1.0                       # 1.4 / 0.3 = 4.7 > max_factor 2
    assert f[2] == 1.0 and f[3] == 1.0
    assert floor_factors(centres, scales, half, up, height, GroundPlaneConfig(max_factor=5.0))[1] \
        == pytest.approx(1.4 / 0.3)
    assert floor_factors(centres, scales, half, up, height, GroundPlaneConfig(weight=0.0))[0] == 1.0


def test_camera_height_is_the_largest_drop_and_inputs_are_checked():
    up, height = _tilted_up(15.0), 1.6
    centres, scales, half = _standing_objects(up, height, np.random.default_rng(1))
    on_table = centres[:1] + 0.7 * up        # an object standing on a 0.7 m table
    assert camera_height_from_objects(np.vstack([centres, on_table]), np.vstack([scales, scales[:1]]),
                                      np.append(half, half[0]), up) == pytest.approx(height)
    assert camera_height_from_objects(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), up) is None
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="camera height"):
            floor_factors(centres, scales, half, up, bad)
    for kwargs in ({"weight": 1.5}, {"min_drop_m": 0.0}, {"max_factor": 1.0}, {"size_exponent": -0.5}):
        with pytest.raises(ValueError, match="ground plane"):
            GroundPlaneConfig(**kwargs)


def test_predictor_refuses_a_camera_height_without_up_or_cad_database():
    from roca_core.model.roca import RocaModel
    from roca_core.predictor import Predictor
    from training_fixtures import tiny_model_config

    torch.manual_seed(0)
    cfg = tiny_model_config()
    image = np.zeros((48, 64, 3), np.uint8)
    K = np.array([[58.0, 0, 32], [0, 58.0, 24], [0, 0, 1]])
    no_db = Predictor(RocaModel(cfg), cad_database=False, device="cpu")
    with pytest.raises(ValueError, match="CAD database"):
        no_db.predict(image, K, up=UP, camera_height=1.2)
    with pytest.raises(ValueError, match="up direction"):
        no_db.predict(image, K, camera_height=1.2)
    with pytest.raises(ValueError, match="camera height"):
        no_db.predict(image, K, up=UP, camera_height=-1.0)
