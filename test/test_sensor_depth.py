"""Sensor-like depth (roca_core.data.sensor_depth) and `roca-make-dataset --sensor-depth`."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from roca_core.cli import make_dataset as make_dataset_cli
from roca_core.data.loader import RocaDataset
from roca_core.data.sensor_depth import (SensorDepthConfig, depth_noise_sigma_m, occlusion_shadow_mask,
                                         simulate_sensor_depth, surface_incidence_deg)

H, W, F = 160, 200, 435.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])
NO_DROPOUTS = dict(edge_drop_probability=0.0, dropout_probability=0.0)


def wall(z: float) -> np.ndarray:
    return np.full((H, W), z, np.float32)


def box_before_wall(z_box: float = 1.0, z_wall: float = 3.0) -> np.ndarray:
    depth = wall(z_wall)
    depth[50:110, 80:130] = z_box
    return depth


def test_noise_grows_with_the_square_of_the_distance():
    cfg = SensorDepthConfig(**NO_DROPOUTS)
    stds = {}
    for z in (1.0, 2.0, 4.0):
        s = simulate_sensor_depth(wall(z), K, 0, cfg=cfg)
        err = s[s > 0].astype(np.float64) - z
        assert (s > 0).mean() > 0.99
        assert abs(err.mean()) < 0.2 * depth_noise_sigma_m(z, cfg)  # unbiased
        stds[z] = err.std()
        assert stds[z] == pytest.approx(depth_noise_sigma_m(z, cfg), rel=0.2)
    assert stds[4.0] / stds[1.0] == pytest.approx(16.0, rel=0.25)
    assert stds[2.0] / stds[1.0] == pytest.approx(4.0, rel=0.25)


def test_output_is_quantised_in_disparity_and_millimetres():
    cfg = SensorDepthConfig(**NO_DROPOUTS)
    s = simulate_sensor_depth(wall(5.0), K, 1, cfg=cfg).astype(np.float64)
    v = np.unique(s[s > 0])
    assert np.allclose(v * 1000, np.rint(v * 1000), atol=1e-3)  # whole millimetres
    steps = cfg.focal_px * cfg.baseline_m / (v * cfg.disparity_step_px)  # disparity in matcher steps
    tolerance = 1.05 * steps * 0.0005 / v  # what the mm rounding can move it by (first order)
    assert np.all(np.abs(steps - np.rint(steps)) <= tolerance)
    assert len(v) < 30  # a few disparity layers, not a continuum


def test_the_same_seed_gives_the_same_depth():
    depth = box_before_wall()
    a = simulate_sensor_depth(depth, K, 7)
    assert np.array_equal(a, simulate_sensor_depth(depth, K, np.random.default_rng(7)))
    assert not np.array_equal(a, simulate_sensor_depth(depth, K, 8))


def test_the_occlusion_shadow_lies_left_of_a_foreground_object():
    depth = box_before_wall(1.0, 3.0)
    s = simulate_sensor_depth(depth, K, 0, cfg=SensorDepthConfig(**NO_DROPOUTS))
    width = F * 0.05 * (1 / 1.0 - 1 / 3.0)  # 14.5 px of the colour image
    rows = slice(52, 108)
    assert np.all(s[rows, 80 - int(width) + 1:80] == 0)  # hidden from the second imager
    assert (s[rows, 80 - int(width) - 6:80 - int(width) - 1] > 0).all()  # beyond the shadow
    assert (s[rows, 131:160] > 0).all()  # nothing hidden on the right side
    assert (s[rows, 85:125] > 0).all()  # the box itself
    hidden = occlusion_shadow_mask(depth.astype(np.float64), F * 0.05)
    assert hidden[rows, 70].all() and not hidden[rows, 60].any() and not hidden[rows, 135].any()


def test_holes_gather_at_depth_edges():
    depth = box_before_wall(1.0, 3.0)
    cfg = SensorDepthConfig(occlusion_shadow=False, dropout_probability=0.0, edge_drop_probability=0.7)
    valid = np.mean([simulate_sensor_depth(depth, K, seed, cfg=cfg) > 0 for seed in range(4)], axis=0)
    right_edge = valid[55:105, 129:131].mean()   # the band along the box's right edge
    interior = valid[60:100, 90:120].mean()
    assert interior == 1.0
    assert 0.15 < right_edge < 0.45  # 70 % drop probability along the edge


def test_nothing_beyond_the_maximum_range_or_too_near():
    cfg = SensorDepthConfig(**NO_DROPOUTS)
    assert not simulate_sensor_depth(wall(7.0), K, 0, cfg=cfg).any()
    assert not simulate_sensor_depth(wall(0.2), K, 0, cfg=cfg).any()
    assert (simulate_sensor_depth(wall(5.0), K, 0, cfg=cfg) > 0).mean() > 0.99
    assert (simulate_sensor_depth(wall(7.0), K, 0, cfg=dataclasses.replace(cfg, max_range_m=10.0)) > 0).all()
    depth = wall(2.0)
    depth[:, :50] = 0.0
    depth[0, 60] = np.nan
    s = simulate_sensor_depth(depth, K, 0, cfg=cfg)
    assert not s[:, :50].any() and s[0, 60] == 0 and np.isfinite(s).all()


def test_dark_and_glancing_surfaces_lose_their_depth():
    cfg = SensorDepthConfig(**NO_DROPOUTS)
    image = np.full((H, W, 3), 180, np.uint8)
    image[:, :100] = 3  # black cloth
    s = simulate_sensor_depth(wall(2.0), K, 0, image=image, cfg=cfg)
    assert not s[:, :100].any() and (s[:, 110:] > 0).all()
    # a plane turned 80 deg about the y axis: incidence from about 67 to 93 deg across the image
    theta = np.radians(80.0)
    x_ray = (np.arange(W) - K[0, 2]) / F * np.ones((H, 1))
    denominator = np.sin(theta) * x_ray + np.cos(theta)
    plane = np.where(denominator > 1e-3, 2.0 * np.cos(theta) / np.maximum(denominator, 1e-3), 0.0)
    s = simulate_sensor_depth(plane.astype(np.float32), K, 0, cfg=dataclasses.replace(cfg, max_range_m=50.0))
    incidence = surface_incidence_deg(plane, K)
    seen = (plane > 0) & (plane < 50.0)
    assert (s[seen & (incidence < cfg.glancing_start_deg - 1)] > 0).all()
    assert not s[seen & (incidence > cfg.glancing_full_deg + 1)].any()
    assert (seen & (incidence > cfg.glancing_full_deg + 1)).sum() > 100
    with pytest.raises(ValueError, match="max_range_m"):
        simulate_sensor_depth(wall(2.0), K, 0, cfg=SensorDepthConfig(max_range_m=0.1))


def test_make_dataset_writes_sensor_depth_that_the_loader_reads(roca_home, tmp_path, capsys):
    out = tmp_path / "with"
    common = ["--images", "2", "--seed", "5", "--workers", "1", "--height", "96", "--width", "128",
              "--focal", "116", "--split-val", "0", "--no-progress"]
    assert make_dataset_cli.main(["--out", str(out), "--sensor-depth", *common]) == 0
    plain = tmp_path / "plain"
    assert make_dataset_cli.main(["--out", str(plain), *common]) == 0
    capsys.readouterr()
    assert json.loads((out / "dataset_info.json").read_text())["sensor_depth"] is True
    true_files = sorted((out / "rendering").glob("*/depth/*.png"))
    assert len(true_files) == 2
    for true_file in true_files:
        sensor_file = true_file.parent.parent / "sensor_depth" / true_file.name
        true_mm = cv2.imread(str(true_file), cv2.IMREAD_UNCHANGED)
        sensor_mm = cv2.imread(str(sensor_file), cv2.IMREAD_UNCHANGED)
        assert sensor_mm.dtype == np.uint16 and sensor_mm.shape == true_mm.shape
        both = (sensor_mm > 0) & (true_mm > 0)
        assert both.mean() > 0.5 and (sensor_mm != true_mm)[both].mean() > 0.5
        assert ((sensor_mm == 0) & (true_mm > 0)).any()  # holes
        # switching sensor depth on changes no other output
        twin = plain / true_file.relative_to(out)
        assert twin.read_bytes() == true_file.read_bytes()
        assert not (twin.parent.parent / "sensor_depth").exists()
    assert (out / "annotations_train.json").read_bytes() == (plain / "annotations_train.json").read_bytes()

    ds = RocaDataset(out, "train")
    image, target = ds[0]
    scene, frame = ds.images[0]["scene_id"], ds.images[0]["file_name"].rsplit("/", 1)[1][:-4]
    stored = cv2.imread(str(out / "rendering" / scene / "sensor_depth" / f"{frame}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(target["sensor_depth"].numpy(), stored.astype(np.float32) / 1000.0)
    assert not np.array_equal(target["sensor_depth"].numpy(), target["depth"].numpy())
    small = RocaDataset(out, "train", image_size=(48, 64))[0][1]
    assert small["sensor_depth"].shape == small["depth"].shape == (48, 64)
    assert "sensor_depth" not in RocaDataset(plain, "train")[0][1]
