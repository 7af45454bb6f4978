"""The up head (roca_core/model/up_head.py): targets, learning a tilt cue from thumbnails, the
predicted upright prior in the model, and stand-alone training (roca-train-up)."""
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

from roca_core.model.up_head import UpHead, angle_deg, thumbnails, up_loss, up_targets  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pitched_up(pitch: torch.Tensor) -> torch.Tensor:
    """Camera-frame up of a camera looking ``pitch`` radians down, no roll (OpenCV axes)."""
    return torch.stack([torch.zeros_like(pitch), -pitch.cos(), -pitch.sin()], dim=-1)


def test_targets_are_the_objects_up_axis_and_the_loss_measures_the_angle():
    up = _pitched_up(torch.tensor(0.3))
    x = torch.tensor([1.0, 0, 0])
    z = torch.linalg.cross(x, up)
    rots = torch.stack([torch.stack([x, up, z], dim=1)] * 3)  # three objects, same up
    torch.testing.assert_close(up_targets(rots), up)
    a = torch.stack([up, up])
    b = torch.stack([up, _pitched_up(torch.tensor(0.3 + math.radians(5)))])
    torch.testing.assert_close(angle_deg(a, b), torch.tensor([0.0, 5.0]), atol=1e-3, rtol=0)
    assert up_loss(a, a) < 1e-6 < up_loss(a, b)


def _horizon_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Thumbnails of a bright wall over a dark floor; the edge between them sits lower the
    less the camera looks down (pitch 10-35 degrees), as in a room."""
    g = torch.Generator().manual_seed(seed)
    pitch = torch.deg2rad(10 + 25 * torch.rand(n, generator=g))
    rows = torch.arange(48, dtype=torch.float32)[None, :, None]
    edge = (40 - (pitch - math.radians(10)) / math.radians(25) * 32)[:, None, None]
    img = torch.where(rows < edge, 0.8, 0.25).expand(n, 48, 64)[:, None].expand(n, 3, 48, 64)
    return {"thumbs": (img * 255).to(torch.uint8).contiguous(), "up": _pitched_up(pitch)}


def test_the_head_learns_the_camera_tilt_from_thumbnails():
    from roca_core.training.up_stage import UpStageConfig, train_up_head, up_errors

    torch.manual_seed(0)
    train, val = _horizon_data(512, 0), _horizon_data(128, 1)
    head = UpHead(width=4)
    before = up_errors(head, val)
    hist = train_up_head(head, train, val, UpStageConfig(width=4, epochs=10, batch=32, lr=3e-3))
    after = up_errors(head, val)
    assert before["median_error_deg"] > 8, before
    assert after["median_error_deg"] < 3 and after["within_5deg"] > 0.8, after
    assert hist[-1]["loss"] < hist[0]["loss"] and len(hist) == 10


def test_thumbnails_keep_the_picture():
    img = torch.zeros(1, 3, 96, 128)
    img[:, :, :48] = 1.0
    th = thumbnails(img)
    assert th.shape == (1, 3, 48, 64)
    assert th[0, :, :23].min() > 0.99 and th[0, :, 25:].max() < 0.01


def _tiny_up_cfg():
    return replace(tiny_model_config(), up_width=4)


def test_model_trains_the_up_head_jointly_and_uses_its_up_unless_one_is_measured():
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    model = RocaModel(_tiny_up_cfg())
    samples = model_synthetic_samples(2)
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    losses = model(images, targets)
    assert "loss_up" in losses and torch.isfinite(losses["loss_up"])
    sum(losses.values()).backward()
    assert model.up_head.net[0][0].weight.grad.abs().sum() > 0
    model.eval()
    kw = dict(intrinsics=[t["K"] for t in targets], gt_boxes=[t["boxes"] for t in targets],
              gt_labels=[t["labels"] for t in targets])
    predicted = model(images, **kw)
    pred_up = model.up_head(thumbnails(torch.stack(images)))
    measured_up = torch.tensor([0.0, -0.8, -0.6])
    measured = model(images, up=[measured_up, None], **kw)
    model.use_up_head = False
    full = model(images, **kw)
    for i, (p, m, f) in enumerate(zip(predicted, measured, full)):
        ok = p["valid"]
        assert ok.any()
        # solved about the predicted up: every object's up axis is it
        torch.testing.assert_close(p["rotations"][ok][:, :, 1], pred_up[i].expand(int(ok.sum()), 3),
                                   atol=1e-4, rtol=0)
        # a measured up wins for its image; the other image still gets the predicted one
        want = measured_up if i == 0 else pred_up[i]
        torch.testing.assert_close(m["rotations"][ok][:, :, 1], want.expand(int(ok.sum()), 3), atol=1e-4, rtol=0)
        # switched off: the full rotation, whose up axes differ from the prediction
        assert not torch.allclose(f["rotations"][ok][:, :, 1], pred_up[i].expand(int(ok.sum()), 3), atol=1e-3)


def test_config_rejects_a_bad_up_head():
    from roca_core.config_io import ConfigError
    with pytest.raises(ConfigError, match="up_width"):
        replace(tiny_model_config(), up_width=-2)


def test_roca_train_up_cli_trains_a_head_that_eval_uses(tiny_render, tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.eval import main as eval_main
    from roca_core.cli.train_up import main as train_up_main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = tiny_model_config()
    base = save_checkpoint(tmp_path / "base.safetensors", RocaModel(cfg), cfg)
    out = tmp_path / "up"
    args = ["--checkpoint", str(base), "--data", str(tiny_render), "--out", str(out), "--epochs", "2",
            "--width", "4", "--crop", "16", "--workers", "1", "--no-progress"]
    assert train_up_main(args) == 0
    assert "held-out: median up error" in capsys.readouterr().out
    model, cfg2, extra = load_checkpoint(out / "model_up.safetensors")
    assert cfg2.up_width == 4 and model.up_head is not None
    assert replace(cfg2, up_width=0) == cfg  # nothing else changed
    hist = json.loads((out / "up_history.json").read_text())
    assert hist["heldout"]["images"] > 0 and 0 <= hist["heldout"]["within_5deg"] <= 1
    assert len(hist["history"]) == 2 and extra["up_stage"]["heldout"] == hist["heldout"]
    assert (out / "up_curve.png").stat().st_size > 1000
    base_model, _, _ = load_checkpoint(base)
    sd_base, sd_new = base_model.state_dict(), model.state_dict()
    assert all(torch.equal(sd_base[k], sd_new[k]) for k in sd_base)
    for flag, state in (([], "on"), (["--no-up-head"], "off")):
        rc = eval_main(["--checkpoint", str(out / "model_up.safetensors"), "--data", str(tiny_render),
                        "--out", str(tmp_path / f"r_{state}.json"), "--no-progress", "--device", "cpu"] + flag)
        assert rc == 0
        assert json.loads((tmp_path / f"r_{state}.json").read_text())["up_head"] == state
    assert train_up_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert train_up_main(args + ["--width", "0"]) == 2
