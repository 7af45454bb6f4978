"""The centre head (roca_core/model/centre_head.py): its box geometry, targets and decoding,
learning distance and size cues, the translation and scale replacement in the model, and
stand-alone training (roca-train-centre) on the shared crop cache."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import model_synthetic_samples, tiny_model_config  # noqa: E402

from roca_core.model.centre_head import (CentreHead, box_geometry, centre_loss, centre_targets,  # noqa: E402
                                         decode_centre, decode_size)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K1 = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])


def test_targets_and_decoding_are_inverse_and_camera_independent():
    t = torch.tensor([[0.3, -0.2, 2.5], [-1.0, 0.4, 4.0], [0.0, 0.0, 1.0]])
    boxes = torch.tensor([[60.0, 30, 90, 60], [20, 50, 40, 70], [50, 40, 80, 60]])
    K = K1.expand(3, 3, 3)
    scale = torch.tensor([[0.5, 0.8, 0.5], [1.0, 1.0, 2.0], [0.3, 0.3, 0.3]])
    tg = centre_targets(t, boxes, K, scale)
    assert tg.shape == (3, 6)
    torch.testing.assert_close(tg[:, 0], t[:, 2].log())
    torch.testing.assert_close(decode_size(tg), scale)
    # the third centre projects to (64, 48): a 30th of the box left of its centre, a 10th above
    torch.testing.assert_close(tg[2, 1:3], torch.tensor([-1 / 30, -0.1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(decode_centre(tg, boxes, K), t, atol=1e-5, rtol=0)
    # the same scene at twice the resolution: same targets, same geometry
    K2 = K1.clone()
    K2[:2] *= 2
    K2[0, 2], K2[1, 2] = 128, 96
    g1 = box_geometry(boxes, K, (96, 128))
    g2 = box_geometry(boxes * 2, K2.expand(3, 3, 3), (192, 256))
    torch.testing.assert_close(g1[:, :6], g2[:, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(centre_targets(t, boxes * 2, K2.expand(3, 3, 3), scale), tg, atol=1e-5, rtol=0)


def test_geometry_flags_the_sides_on_the_image_border():
    boxes = torch.tensor([[0.0, 10, 30, 40], [10, 0, 127.5, 95.5], [5, 5, 20, 20]])
    g = box_geometry(boxes, K1.expand(3, 3, 3), (96, 128))
    assert g[:, 6:].tolist() == [[1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]]
    torch.testing.assert_close(g[2, :4], torch.tensor([-0.59, -0.43, -0.44, -0.28]))
    torch.testing.assert_close(g[2, 4:6], torch.tensor([0.15, 0.15]).log())


def test_a_mirrored_image_has_the_mirrored_geometry_and_targets():
    """What the centre stage's augmentation relies on: mirroring the image about the principal
    point's column mirrors the box geometry (``mirror_geometry``) and flips the sign of the
    centre's offset u in the box; depth, offset v and size stay."""
    from roca_core.model.centre_head import mirror_geometry

    boxes = torch.tensor([[0.0, 10, 30, 40], [70, 5, 127.5, 95.5]])
    K = K1.clone()
    K[0, 2] = 63.5  # the principal point on the middle column: a mirror keeps the image
    mirrored = torch.stack([127 - boxes[:, 2], boxes[:, 1], 127 - boxes[:, 0], boxes[:, 3]], dim=1)
    Ks = K.expand(2, 3, 3)
    g = box_geometry(boxes, Ks, (96, 128))
    torch.testing.assert_close(mirror_geometry(g)[:, :6], box_geometry(mirrored, Ks, (96, 128))[:, :6])
    assert mirror_geometry(g)[:, 6:].tolist() == [[0, 0, 1, 0], [1, 0, 0, 1]]
    t = torch.tensor([[-0.5, 0.1, 3.0], [0.8, 0.2, 2.0]])
    scale = torch.tensor([[0.5, 0.8, 0.5], [1.0, 1.0, 2.0]])
    tg = centre_targets(t, boxes, Ks, scale)
    tm = centre_targets(t * torch.tensor([-1.0, 1.0, 1.0]), mirrored, Ks, scale)
    torch.testing.assert_close(tm, tg * torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, 1.0]), atol=1e-5, rtol=0)


def test_loss_is_lower_for_the_right_distance_and_weighted():
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    right, wrong = target.clone(), target + torch.tensor([0.3, 0.0, 0.0])
    w = torch.ones(2)
    assert centre_loss(right, target, w) < 1e-6 < centre_loss(wrong, target, w)
    mixed = torch.stack([right[0], wrong[1]])
    assert centre_loss(mixed, target, torch.tensor([1.0, 0.0])) < 1e-6


def _distance_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Objects of two classes (0.5 m and 1.0 m tall) at 1.5-5 m, seen at random places: the
    distance follows from the box height and the class, the crop shows a lit square whose
    brightness tells the class."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 2, (n,), generator=g)
    size = torch.where(cls == 0, 0.5, 1.0)
    z = 1.5 + 3.5 * torch.rand(n, generator=g)
    x = (torch.rand(n, generator=g) - 0.5) * 0.8 * z
    y = (torch.rand(n, generator=g) - 0.5) * 0.5 * z
    t = torch.stack([x, y, z], dim=1)
    K = K1.expand(n, 3, 3).clone()
    u, v = 100 * x / z + 64, 100 * y / z + 48
    half = 0.5 * 100 * size / z
    boxes = torch.stack([u - half, v - half, u + half, v + half], dim=1)
    crops = torch.zeros(n, 3, 16, 16)
    crops[:, :, 3:13, 3:13] = (0.3 + 0.6 * cls.float())[:, None, None, None]
    return {"x": (crops * 255).to(torch.uint8), "cls": cls, "boxes": boxes, "K": K, "t": t,
            "s": size[:, None].expand(n, 3).contiguous()}


@pytest.mark.parametrize("augment", [False, True])
def test_the_head_learns_distance_from_the_box(augment):
    from roca_core.training.centre_stage import CentreStageConfig, centre_errors, train_centre_head

    torch.manual_seed(0)
    train, val = _distance_data(1024, 0), _distance_data(256, 1)
    head = CentreHead(num_classes=2, crop=16, width=4)
    before = centre_errors(head, val, (96, 128))
    hist = train_centre_head(head, train, val, CentreStageConfig(crop=16, width=4, epochs=15, batch=64, lr=3e-3,
                                                                 augment=augment), (96, 128))
    after = centre_errors(head, val, (96, 128))
    assert before["within_20cm"] < 0.3 and before["median_error_m"] > 0.5, before
    assert after["depth_rel_median"] < 0.05 and after["within_20cm"] > 0.7, after
    # the initial 1 m fits one class only; trained, each class gets its own size
    assert before["scale_within_20pct"] < 0.6 < 0.95 < after["scale_within_20pct"], (before, after)
    assert after["scale_error_median"] < 0.05, after
    assert hist[-1]["loss"] < hist[0]["loss"] and len(hist) == 15


def _tiny_centre_cfg():
    return replace(tiny_model_config(), centre_width=4, centre_crop=16)


def test_model_trains_the_centre_head_jointly_and_uses_its_translation_in_eval():
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    model = RocaModel(_tiny_centre_cfg())
    samples = model_synthetic_samples(2)
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    losses = model(images, targets)
    assert "loss_centre" in losses and torch.isfinite(losses["loss_centre"])
    sum(losses.values()).backward()
    assert model.centre_head.net[0][0].weight.grad.abs().sum() > 0
    model.eval()
    K = [t["K"] for t in targets]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    with_head = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
    model.use_centre_head = False
    without = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
    # the head's translation: its decoded centre, which projects to where the head says
    head = model.centre_head
    for img, k, b, lab, a, w in zip(images, K, boxes, labels, with_head, without):
        # images and boxes are at the tiny network's input size already
        assert tuple(img.shape[-2:]) == model.cfg.image_size
        from roca_core.model.yaw_head import yaw_crops
        from roca_core.model.mirror_tta import centre_outputs
        assert "centre" in model.cfg.mirror_heads  # inference averages the crop and its mirror
        crops = yaw_crops(img[None].float(), b.float(), torch.zeros(b.shape[0], dtype=torch.int64), 16)
        pred = centre_outputs(head, crops, box_geometry(b.float(), k.expand(b.shape[0], 3, 3), model.cfg.image_size),
                              lab - 1)
        torch.testing.assert_close(a["translations"], decode_centre(pred, b.float(), k.expand(b.shape[0], 3, 3)),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a["scales"], decode_size(pred), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a["rotations"], w["rotations"])  # the rotation stays ROCA's
        assert not torch.allclose(a["translations"], w["translations"])
        assert not torch.allclose(a["scales"], w["scales"])
    # measured depth keeps ROCA's translation for its image only; the head's size stays
    depths = [targets[0]["depth"], None]
    model.use_centre_head = True
    mixed = model(images, depths=depths, **dict(intrinsics=K, gt_boxes=boxes, gt_labels=labels))
    model.use_centre_head = False
    roca_measured = model(images, depths=depths, **dict(intrinsics=K, gt_boxes=boxes, gt_labels=labels))
    torch.testing.assert_close(mixed[0]["translations"], roca_measured[0]["translations"])
    torch.testing.assert_close(mixed[1]["translations"], with_head[1]["translations"])
    torch.testing.assert_close(mixed[0]["scales"], with_head[0]["scales"])


def test_config_rejects_a_bad_centre_head():
    from roca_core.config_io import ConfigError
    with pytest.raises(ConfigError, match="centre_width"):
        replace(tiny_model_config(), centre_width=-1)
    with pytest.raises(ConfigError, match="centre_crop"):
        replace(tiny_model_config(), centre_width=4, centre_crop=4)


def test_roca_train_centre_cli_trains_a_head_that_eval_uses(tiny_render, tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.eval import main as eval_main
    from roca_core.cli.train_centre import main as train_centre_main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = tiny_model_config()
    base = save_checkpoint(tmp_path / "base.safetensors", RocaModel(cfg), cfg)
    out = tmp_path / "centre"
    args = ["--checkpoint", str(base), "--data", str(tiny_render), "--out", str(out), "--epochs", "2",
            "--crop", "16", "--width", "4", "--workers", "1", "--no-progress"]
    assert train_centre_main(args) == 0
    assert "held-out: median centre error" in capsys.readouterr().out
    model, cfg2, extra = load_checkpoint(out / "model_centre.safetensors")
    assert (cfg2.centre_width, cfg2.centre_crop) == (4, 16) and model.centre_head is not None
    assert replace(cfg2, centre_width=0, centre_crop=cfg.centre_crop) == cfg  # nothing else changed
    hist = json.loads((out / "centre_history.json").read_text())
    assert 0 <= hist["heldout"]["within_20cm"] <= 1 and hist["heldout"]["median_error_m"] > 0
    assert len(hist["history"]) == 2 and extra["centre_stage"]["heldout"]["objects"] == hist["heldout"]["objects"] > 0
    assert (out / "centre_curve.png").stat().st_size > 1000
    crops = torch.load(out / "crops_val.pt")["crops"]  # the cache holds what the head needs
    assert crops["t"].shape == crops["s"].shape == (crops["x"].shape[0], 3) and (crops["t"][:, 2] > 0).all()
    base_model, _, _ = load_checkpoint(base)  # the rest of the network is the base network's
    sd_base, sd_new = base_model.state_dict(), model.state_dict()
    assert all(torch.equal(sd_base[k], sd_new[k]) for k in sd_base)
    assert train_centre_main(args[:-3] + ["--workers", "1", "--no-progress"]) == 0  # cached crops reused
    assert "cutting" not in capsys.readouterr().out
    for flag, state in (([], "on"), (["--no-centre-head"], "off")):
        rc = eval_main(["--checkpoint", str(out / "model_centre.safetensors"), "--data", str(tiny_render),
                        "--out", str(tmp_path / f"r_{state}.json"), "--no-progress", "--device", "cpu"] + flag)
        assert rc == 0
        assert json.loads((tmp_path / f"r_{state}.json").read_text())["centre_head"] == state
    assert train_centre_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert train_centre_main(args + ["--crop", "4"]) == 2
