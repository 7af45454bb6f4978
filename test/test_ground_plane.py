"""The ground-plane prior: objects scaled about the camera until they stand on the floor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roca_core.geometry.ground_plane import (GroundPlaneConfig, bottom_drops, camera_height_from_objects,
                                             canonical_half_heights, floor_factors, floor_shift_to_box_bottom)

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
    for kwargs in ({"weight": 1.5}, {"min_drop_m": 0.0}, {"max_factor": 1.0}, {"size_exponent": -0.5},
                   {"bottom_edge_weight": 1.5}, {"bottom_edge_max_shift_m": 0.0}, {"bottom_edge_margin_px": -1.0}):
        with pytest.raises(ValueError, match="ground plane"):
            GroundPlaneConfig(**kwargs)


K_480 = np.array([[435.0, 0.0, 240.0], [0.0, 435.0, 180.0], [0.0, 0.0, 1.0]])


def _box_on_floor(up: np.ndarray, height: float, ground: np.ndarray, size: float = 0.8) -> np.ndarray:
    """(8 * 125, 3) camera-frame samples of a cube of side ``size`` standing on the floor
    ``height`` below the camera, its bottom face centred on ``ground`` (moved onto the floor)."""
    ground = ground - ((ground @ up) + height) * up
    side = np.cross(up, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    third = np.cross(up, side)
    g = np.linspace(-0.5, 0.5, 5)
    a, b, c = (x.ravel() for x in np.meshgrid(g, g, g + 0.5, indexing="ij"))
    return ground + size * (a[:, None] * side + b[:, None] * third + c[:, None] * up)


def _lowest_v(points: np.ndarray, K: np.ndarray) -> float:
    return float((K[1, 1] * points[:, 1] / points[:, 2] + K[1, 2]).max())


@pytest.mark.parametrize("pitch", [0.0, 20.0])
def test_box_bottom_slide_finds_the_distance_the_bottom_edge_says(pitch):
    """An object standing on the floor, predicted 0.4 m too far (or too near) along the floor
    in its ray's horizontal direction: the slide onto the row of its true lowest point brings
    it back and keeps it on the floor and on its vertical line of the image."""
    up, height = _tilted_up(pitch), 1.3
    truth = _box_on_floor(up, height, np.array([0.7, 0.0, 3.0]))
    centre = truth.mean(0)
    away = centre - (centre @ up) * up
    away /= np.linalg.norm(away)
    row = _lowest_v(truth, K_480)
    for error in (0.4, -0.4):
        wrong = truth + error * away
        move = floor_shift_to_box_bottom(wrong, wrong.mean(0), row, K_480, up, max_shift_m=0.6)
        assert move is not None
        np.testing.assert_allclose(move, -error * away, atol=1e-6)
        assert abs(float(move @ up)) < 1e-9                      # along the floor
        # in the plane of the camera, the centre and up: the same vertical line of the image
        assert abs(np.linalg.det(np.stack([wrong.mean(0) + move, wrong.mean(0), up]))) < 1e-9
    # out of reach: the edge asks for 0.4 m, the cap allows 0.3
    assert floor_shift_to_box_bottom(truth + 0.4 * away, centre + 0.4 * away, row, K_480, up, 0.3) is None
    # an edge higher than any slide can lift the bottom (e.g. hidden behind a table in front)
    assert floor_shift_to_box_bottom(truth, centre, K_480[1, 2] - 5.0, K_480, up, 0.6) is None
    # straight below the camera there is no direction to slide in
    assert floor_shift_to_box_bottom(truth, -height * up, row, K_480, up, 0.6) is None


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
