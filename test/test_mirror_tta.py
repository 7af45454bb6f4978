"""Mirror test-time augmentation of the crop heads (roca_core/model/mirror_tta.py): each
averaged answer must be exactly equivariant to a left-right mirror of the crop (the yaw bins
map k -> -k, the centre's horizontal offset changes sign, class and shape stay), and the
model must apply it to the heads ``ModelConfig.mirror_heads`` names, and only at inference."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import model_synthetic_samples, tiny_model_config  # noqa: E402

from roca_core.config_io import ConfigError  # noqa: E402
from roca_core.model import mirror_tta  # noqa: E402
from roca_core.model.centre_head import CentreHead, mirror_geometry  # noqa: E402
from roca_core.model.class_head import ClassHead  # noqa: E402
from roca_core.model.config import ModelConfig  # noqa: E402
from roca_core.model.shape_head import ShapeHead  # noqa: E402
from roca_core.model.yaw_head import YawHead, mirror_bins  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(n: int = 6, size: int = 16):
    g = torch.Generator().manual_seed(0)
    crops = torch.rand(n, 3, size, size, generator=g)
    geometry = torch.randn(n, 10, generator=g)
    geometry[:, 6:] = (geometry[:, 6:] > 0).float()  # border flags
    classes = torch.randint(0, 3, (n,), generator=g)
    return crops, geometry, classes


def test_yaw_probabilities_are_mirror_equivariant_and_normalised():
    torch.manual_seed(0)
    head = YawHead(num_classes=3, bins=8, crop=16, width=4).eval()
    crops, _, classes = _inputs()
    logp = mirror_tta.yaw_log_probs(head, crops, classes)
    torch.testing.assert_close(logp.exp().sum(dim=1), torch.ones(len(crops)))
    logp_m = mirror_tta.yaw_log_probs(head, crops.flip(-1), classes)
    torch.testing.assert_close(logp_m, logp[:, mirror_bins(8)])
    # and it is not the plain head's answer: the mirror pass contributes
    assert not torch.allclose(logp, head(crops, classes).log_softmax(dim=1))


def test_centre_outputs_are_mirror_equivariant():
    torch.manual_seed(0)
    head = CentreHead(num_classes=3, crop=16, width=4).eval()
    crops, geometry, classes = _inputs()
    out = mirror_tta.centre_outputs(head, crops, geometry, classes)
    out_m = mirror_tta.centre_outputs(head, crops.flip(-1), mirror_geometry(geometry), classes)
    expected = out.clone()
    expected[:, 1] = -expected[:, 1]  # the horizontal offset in the box changes sign
    torch.testing.assert_close(out_m, expected)
    assert not torch.allclose(out, head(crops, geometry, classes))


def test_class_and_shape_answers_are_mirror_invariant():
    torch.manual_seed(0)
    crops, geometry, classes = _inputs()
    cls_head = ClassHead(num_classes=3, crop=16, width=4).eval()
    logp = mirror_tta.class_log_probs(cls_head, crops, geometry)
    torch.testing.assert_close(logp, mirror_tta.class_log_probs(cls_head, crops.flip(-1), mirror_geometry(geometry)))
    torch.testing.assert_close(logp.exp().sum(dim=1), torch.ones(len(crops)))
    shape_head = ShapeHead(num_classes=3, crop=16, width=4, embedding_dim=8).eval()
    size = torch.rand(len(crops), 3) + 0.5
    z = mirror_tta.shape_embeddings(shape_head, crops, classes, size)
    torch.testing.assert_close(z, mirror_tta.shape_embeddings(shape_head, crops.flip(-1), classes, size))


def test_the_model_mirrors_the_heads_its_config_names_at_inference_only():
    from roca_core.model.roca import RocaModel

    base = replace(tiny_model_config(), yaw_bins=8, yaw_crop=16, yaw_width=4, centre_width=4, centre_crop=16)
    torch.manual_seed(0)
    plain = RocaModel(replace(base, mirror_heads=()))
    mirrored = RocaModel(replace(base, mirror_heads=("yaw", "centre")))
    mirrored.load_state_dict(plain.state_dict())
    samples = model_synthetic_samples(1)
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    boxes, labels = [targets[0]["boxes"]], [targets[0]["labels"]]
    K = [targets[0]["K"]]
    # training: the same losses (the mirror pass is inference-only)
    plain.train(), mirrored.train()
    torch.manual_seed(1)
    la = plain(images, targets)
    torch.manual_seed(1)
    lb = mirrored(images, targets)
    torch.testing.assert_close(la["loss_yaw"], lb["loss_yaw"])
    # inference on the same boxes: other translations and rotations
    plain.eval(), mirrored.eval()
    a = plain(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)[0]
    b = mirrored(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)[0]
    assert a["translations"].shape == b["translations"].shape and a["translations"].shape[0] > 0
    assert not torch.allclose(a["translations"], b["translations"])
    assert not torch.allclose(a["rotations"], b["rotations"])


def test_config_checks_the_mirrored_heads():
    assert ModelConfig().mirror_heads == ("yaw", "centre", "class")
    assert ModelConfig.from_dict({"mirror_heads": []}).mirror_heads == ()
    with pytest.raises(ConfigError, match="mirror_heads"):
        ModelConfig(mirror_heads=("yaw", "depth"))
    with pytest.raises(ConfigError, match="mirror_heads"):
        ModelConfig(mirror_heads=("yaw", "yaw"))


def test_roca_eval_can_switch_the_mirrored_heads(tiny_render, tmp_path, capsys):
    """``roca-eval --mirror-heads`` overrides the checkpoint's setting (the model card's rows
    without mirroring come from it), reports it, and rejects unknown heads."""
    import json

    from roca_core.checkpoint import save_checkpoint
    from roca_core.cli.eval import main as eval_main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = replace(tiny_model_config(), yaw_bins=8, yaw_crop=16, yaw_width=4, centre_width=4, centre_crop=16)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", RocaModel(cfg), cfg)
    reports = {}
    for name, flag in (("default", []), ("none", ["--mirror-heads", "none"]), ("yaw", ["--mirror-heads", "yaw"])):
        out = tmp_path / f"{name}.json"
        assert eval_main(["--checkpoint", str(ckpt), "--data", str(tiny_render), "--gt-boxes", "--max-images", "2",
                          "--out", str(out), "--no-progress", "--device", "cpu"] + flag) == 0
        reports[name] = json.loads(out.read_text())
    assert reports["default"]["mirror_heads"] == ["yaw", "centre", "class"]
    assert reports["none"]["mirror_heads"] == [] and reports["yaw"]["mirror_heads"] == ["yaw"]
    t = {k: r["pose_errors"]["median_translation_m"] for k, r in reports.items()}
    assert t["none"] == t["yaw"] != t["default"]  # the centre head's mirror moves the objects
    capsys.readouterr()
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", str(ckpt), "--data", str(tiny_render), "--mirror-heads", "yaw,depth"])
    assert "--mirror-heads" in capsys.readouterr().err
