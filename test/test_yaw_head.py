"""The yaw head (roca_core/model/yaw_head.py): its angles, targets, loss and decoding, the
yaw replacement in the alignment head, joint and stand-alone training (roca-train-yaw)."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import model_synthetic_samples, tiny_model_config  # noqa: E402

from roca_core.classes import Symmetry  # noqa: E402
from roca_core.geometry.procrustes import weighted_procrustes, weighted_translation  # noqa: E402
from roca_core.model.yaw_head import (YawHead, angle_to_bin, camera_yaw, decode_yaw, ray_angle,  # noqa: E402
                                      replace_yaw, square_boxes, yaw_crops, yaw_loss, yaw_targets)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s = a.cos(), a.sin()
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).view(-1, 3, 3)


def rot_x(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])


K1 = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])


def test_camera_yaw_and_ray_angle():
    psi = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.5])
    torch.testing.assert_close(camera_yaw(rot_y(psi)), psi)
    # a tilted camera (pitched 25 degrees) changes the measured yaw by a few degrees at most
    tilted = rot_x(0.44)[None] @ rot_y(psi)
    err = torch.remainder(camera_yaw(tilted) - psi + math.pi, 2 * math.pi) - math.pi
    assert err.abs().max() < math.radians(6)
    boxes = torch.tensor([[54.0, 10, 74, 30], [154.0, 10, 174, 30]])  # centres at u = 64 and 164
    theta = ray_angle(boxes, K1.expand(2, 3, 3))
    torch.testing.assert_close(theta, torch.tensor([0.0, math.atan(1.0)]))


def test_targets_are_allocentric_and_symmetry_aware():
    bins = 8
    # the same view of an object: turn object and its position together about the camera's y
    psi = torch.tensor([0.3, 0.3 + math.atan(1.0)])
    boxes = torch.tensor([[54.0, 10, 74, 30], [154.0, 10, 174, 30]])
    sym = torch.tensor([int(Symmetry.NONE)] * 2)
    allowed, valid = yaw_targets(rot_y(psi), boxes, K1.expand(2, 3, 3), sym, bins)
    assert valid.all() and torch.equal(allowed[0], allowed[1]) and allowed.sum(1).tolist() == [1, 1]
    assert allowed[0, angle_to_bin(torch.tensor([0.3]), bins)[0]]
    # 2-fold: the bin and the one half a turn away; 4-fold: four bins; infinite: no yaw
    sym = torch.tensor([int(Symmetry.ROTATE_UP_2), int(Symmetry.ROTATE_UP_4), int(Symmetry.ROTATE_UP_INF)])
    allowed, valid = yaw_targets(rot_y(torch.zeros(3)), boxes[:1].expand(3, 4), K1.expand(3, 3, 3), sym, bins)
    assert valid.tolist() == [True, True, False]
    assert torch.where(allowed[0])[0].tolist() == [0, 4] and torch.where(allowed[1])[0].tolist() == [0, 2, 4, 6]


def test_loss_rewards_the_right_bins_and_ignores_objects_without_yaw():
    allowed = torch.zeros(3, 8, dtype=torch.bool)
    allowed[0, 2] = allowed[1, 0] = allowed[1, 4] = True
    valid = torch.tensor([True, True, False])
    good = torch.full((3, 8), -5.0)
    good[0, 2] = good[1, 4] = 5.0
    bad = torch.roll(good, 1, dims=1)
    w = torch.ones(3)
    assert yaw_loss(good, allowed, valid, w) < 0.01 < 5 < yaw_loss(bad, allowed, valid, w)
    # the third ROI (no yaw) does not count, whatever its logits
    wild = good.clone()
    wild[2] = torch.randn(8) * 100
    torch.testing.assert_close(yaw_loss(wild, allowed, valid, w), yaw_loss(good, allowed, valid, w))


def test_decode_yaw_interpolates_between_bins_and_adds_the_ray():
    logits = torch.full((2, 8), -20.0)
    logits[0, 2] = 5.0  # exactly bin 2: 90 degrees
    logits[1, 1] = logits[1, 2] = 5.0  # halfway between bins 1 and 2: 67.5 degrees
    boxes = torch.tensor([[54.0, 10, 74, 30], [154.0, 10, 174, 30]])
    psi, conf = decode_yaw(logits, boxes, K1.expand(2, 3, 3))
    torch.testing.assert_close(psi, torch.tensor([math.pi / 2, math.radians(67.5) + math.atan(1.0)]), atol=1e-4, rtol=0)
    assert (conf > 0.99).all()


def test_replace_yaw_keeps_the_up_axis_and_sets_the_yaw():
    g = torch.Generator().manual_seed(0)
    psi0 = torch.rand(16, generator=g) * 6.28 - 3.14
    rot = rot_x(0.35)[None] @ rot_y(psi0)  # tilted camera
    target = torch.rand(16, generator=g) * 6.28 - 3.14
    out = replace_yaw(rot, target)
    err = torch.remainder(camera_yaw(out) - target + math.pi, 2 * math.pi) - math.pi
    assert err.abs().max() < math.radians(1.0)
    torch.testing.assert_close(out[:, :, 1], rot[:, :, 1])  # the object's up axis stays
    torch.testing.assert_close(out @ out.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(out), torch.ones(16), atol=1e-5, rtol=0)


def test_weighted_translation_is_procrustes_translation_for_its_rotation():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 50, 3, generator=g)
    dst = src @ rot_y(torch.tensor([0.3, 1.0, -2.0])).transpose(1, 2) + torch.randn(3, 1, 3, generator=g)
    w = torch.rand(3, 50, generator=g)
    rot, t = weighted_procrustes(src, dst + 0.01 * torch.randn(3, 50, 3, generator=g), w)
    torch.testing.assert_close(weighted_translation(src, dst + 0.0, w, rot), t, atol=0.02, rtol=0)
    torch.testing.assert_close(weighted_translation(src, dst, torch.zeros(3, 50), rot),
                               weighted_translation(src, dst, torch.ones(3, 50), rot))  # uniform fallback


def test_crops_are_square_around_the_box():
    img = torch.zeros(1, 3, 40, 60)
    img[:, :, 10:20, 20:40] = 1.0  # a 20x10 white box
    boxes = torch.tensor([[20.0, 10, 40, 20]])
    sq = square_boxes(boxes)
    assert torch.allclose(sq[0, 2] - sq[0, 0], sq[0, 3] - sq[0, 1]) and torch.allclose(sq[0, 2] - sq[0, 0], torch.tensor(23.0))
    crop = yaw_crops(img, boxes, torch.zeros(1, dtype=torch.int64), 16)[0]
    assert crop.shape == (3, 16, 16) and crop[:, 8, 8].min() > 0.99 and crop[:, 0, 8].max() < 0.01


def _arrow_crops(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops showing a bright tip at the yaw angle around a dim centre: a learnable yaw cue."""
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(n, generator=g) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    tip_x, tip_y = 0.6 * ang.cos(), 0.6 * ang.sin()
    d = (xs[None] - tip_x[:, None, None]) ** 2 + (ys[None] - tip_y[:, None, None]) ** 2
    img = torch.exp(-d / 0.05) + 0.3 * torch.exp(-(xs ** 2 + ys ** 2) / 0.1)[None]
    x = img[:, None].expand(n, 3, size, size) + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), ang


def test_the_head_learns_a_yaw_cue_from_crops():
    """The stand-alone trainer (roca-train-yaw's loop) learns a yaw that the crops show."""
    from roca_core.training.yaw_stage import YawStageConfig, train_yaw_head, yaw_accuracy

    torch.manual_seed(0)
    bins = 8

    def data(n, seed):
        x, ang = _arrow_crops(n, 16, seed)
        allowed = torch.zeros(n, bins, dtype=torch.bool)
        allowed[torch.arange(n), angle_to_bin(ang, bins)] = True
        return {"x": (x * 255).round().to(torch.uint8), "allowed": allowed,
                "valid": torch.ones(n, dtype=torch.bool), "cls": torch.zeros(n, dtype=torch.int64),
                "allo": ang, "fold": torch.ones(n, dtype=torch.int64)}

    train, val = data(512, 0), data(128, 1)
    head = YawHead(num_classes=2, bins=bins, crop=16, width=8)
    before = yaw_accuracy(head, val)["exact"]
    hist = train_yaw_head(head, train, val, YawStageConfig(bins=bins, crop=16, width=8, epochs=12, batch=64, lr=3e-3))
    after = yaw_accuracy(head, val)
    assert before < 0.3 and after["exact"] > 0.7 and after["within_one_bin"] > 0.95, hist[-1]
    # the decoded angle (interpolated between bins) is finer than a 45-degree bin
    assert after["within_20deg"] > 0.6 and after["median_error_deg"] < 15, after
    assert hist[-1]["loss"] < hist[0]["loss"] and len(hist) == 12


def _tiny_yaw_cfg():
    return replace(tiny_model_config(), yaw_bins=8, yaw_crop=16, yaw_width=4)


def test_model_trains_the_yaw_head_jointly_and_applies_it_in_eval():
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    model = RocaModel(_tiny_yaw_cfg())
    samples = model_synthetic_samples(2)
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    losses = model(images, targets)
    assert "loss_yaw" in losses and torch.isfinite(losses["loss_yaw"])
    sum(losses.values()).backward()
    assert model.yaw_head.net[0][0].weight.grad.abs().sum() > 0
    model.eval()
    K = [t["K"] for t in targets]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    with_head = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
    model.use_yaw_head = False
    without = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
    assert model.cfg.yaw_bins == 8
    for a, b in zip(with_head, without):
        ok = a["valid"]
        # the head changes only the yaw: the object's up axis is the same either way
        torch.testing.assert_close(a["rotations"][ok][:, :, 1], b["rotations"][ok][:, :, 1], atol=1e-5, rtol=0)
    assert any(not torch.allclose(a["rotations"], b["rotations"]) for a, b in zip(with_head, without))


def test_config_rejects_a_bad_yaw_head():
    from roca_core.config_io import ConfigError
    with pytest.raises(ConfigError, match="yaw_bins"):
        replace(tiny_model_config(), yaw_bins=2)
    with pytest.raises(ConfigError, match="yaw_crop"):
        replace(tiny_model_config(), yaw_bins=8, yaw_crop=4)


def test_roca_train_yaw_cli_adds_and_trains_a_head_that_eval_uses(tiny_render, tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.eval import main as eval_main
    from roca_core.cli.train_yaw import main as train_yaw_main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = tiny_model_config()
    base = save_checkpoint(tmp_path / "base.safetensors", RocaModel(cfg), cfg)
    out = tmp_path / "yaw"
    args = ["--checkpoint", str(base), "--data", str(tiny_render), "--out", str(out), "--epochs", "2",
            "--crop", "16", "--width", "4", "--workers", "1", "--no-progress"]
    assert train_yaw_main(args) == 0
    err = capsys.readouterr()
    assert "held-out:" in err.out
    model, cfg2, extra = load_checkpoint(out / "model_yaw.safetensors")
    assert (cfg2.yaw_bins, cfg2.yaw_crop, cfg2.yaw_width) == (8, 16, 4) and model.yaw_head is not None
    assert replace(cfg2, yaw_bins=0, yaw_crop=cfg.yaw_crop, yaw_width=cfg.yaw_width) == cfg  # nothing else changed
    hist = json.loads((out / "yaw_history.json").read_text())
    assert 0 <= hist["heldout"]["within_20deg"] <= 1 and "median_error_deg" in hist["heldout"]
    assert len(hist["history"]) == 2 and extra["yaw_stage"]["heldout"]["objects"] == hist["heldout"]["objects"] > 0
    assert (out / "yaw_curve.png").stat().st_size > 1000 and (out / "crops_train.pt").is_file()
    base_model, _, _ = load_checkpoint(base)  # the rest of the network is the base network's
    sd_base, sd_new = base_model.state_dict(), model.state_dict()
    assert all(torch.equal(sd_base[k], sd_new[k]) for k in sd_base)
    # a second run reuses the cached crops
    assert train_yaw_main(args[:-3] + ["--workers", "1", "--no-progress"]) == 0
    assert "cutting" not in capsys.readouterr().out
    for flag, state in (([], "on"), (["--no-yaw-head"], "off")):
        rc = eval_main(["--checkpoint", str(out / "model_yaw.safetensors"), "--data", str(tiny_render),
                        "--out", str(tmp_path / f"r_{state}.json"), "--no-progress", "--device", "cpu"] + flag)
        assert rc == 0
        assert json.loads((tmp_path / f"r_{state}.json").read_text())["yaw_head"] == state
    assert train_yaw_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert train_yaw_main(args + ["--bins", "2"]) == 2


def test_chance_level_counts_the_equivalent_bins_of_symmetric_objects():
    from roca_core.training.yaw_stage import chance_levels

    allowed = torch.zeros(3, 8, dtype=torch.bool)
    allowed[0, 0] = True  # no symmetry: 1 of 8 bins, 3 of 8 within one
    allowed[1, [0, 4]] = True  # 2-fold: 2 of 8, 6 of 8 within one
    data = {"allowed": allowed, "valid": torch.tensor([True, True, False])}
    ch = chance_levels(data)
    assert ch["exact"] == pytest.approx(1.5 / 8) and ch["within_one_bin"] == pytest.approx(4.5 / 8)


def test_mirrored_crops_show_the_mirrored_yaw_bins():
    """A left-right mirror of the image turns an object (symmetric about its own y-z plane, as
    furniture is) at allocentric yaw a into one at -a: ``mirror_bins`` maps its right bins."""
    from roca_core.model.yaw_head import mirror_bins

    bins = 8
    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    psi = torch.tensor([0.3, 1.2, 2.9, -2.0, 0.0])
    c, s = psi.cos(), psi.sin()
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=1).view(-1, 3, 3)  # yaw about y
    tilt = torch.tensor([[1.0, 0, 0], [0, 0.94, -0.34], [0, 0.34, 0.94]])  # a camera looking down
    rot = tilt @ rot
    boxes = torch.tensor([[10.0, 30, 40, 60], [60, 20, 100, 70], [90, 40, 120, 60], [30, 10, 70, 50], [50, 50, 78, 80]])
    mirrored_boxes = torch.stack([2 * 64 - boxes[:, 2], boxes[:, 1], 2 * 64 - boxes[:, 0], boxes[:, 3]], dim=1)
    sym = torch.zeros(5, dtype=torch.int64)
    allowed, _ = yaw_targets(rot, boxes, K.expand(5, 3, 3), sym, bins)
    allowed_m, _ = yaw_targets(M @ rot @ M, mirrored_boxes, K.expand(5, 3, 3), sym, bins)  # camera and object mirrored
    assert torch.equal(allowed_m, allowed[:, mirror_bins(bins)])


def test_augmented_crops_keep_their_targets_consistent():
    from roca_core.model.yaw_head import mirror_bins
    from roca_core.training.crop_augment import relight, shift_zoom
    from roca_core.training.yaw_stage import augment_crops

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 3, 16, 16)
    x[:, :, :, :8] = 0.2 + 0.6 * torch.rand(64, 1, 1, 1, generator=g)  # lit on the left only
    allowed = torch.zeros(64, 8, dtype=torch.bool)
    allowed[torch.arange(64), torch.arange(64) % 3 + 1] = True  # bins 1-3: a mirror moves them to 7-5
    xa, aa = augment_crops(x, allowed, torch.Generator().manual_seed(1))
    assert xa.shape == x.shape and 0 <= float(xa.min()) and float(xa.max()) <= 1 and not torch.equal(xa, x)
    # shifts and zooms are small: a crop lit on the right is a mirrored one, and only those
    # have their bins mirrored
    flipped = xa[:, :, :, 8:].sum(dim=(1, 2, 3)) > xa[:, :, :, :8].sum(dim=(1, 2, 3))
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(aa[flipped], allowed[flipped][:, mirror_bins(8)]) and torch.equal(aa[~flipped], allowed[~flipped])
    # without a shift, zoom or light change the crops stay as they are
    torch.testing.assert_close(shift_zoom(x, g, shift=0.0, zoom=0.0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(relight(x, g, light=0.0), x)
