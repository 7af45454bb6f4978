"""The class head (roca_core/model/class_head.py): re-scoring, learning a class from crops and
box geometry, its place in the model (joint loss, re-scored and re-ranked detections), the
held-out recall it is judged by, and stand-alone training (roca-train-class) on the network's
own detections."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import model_synthetic_samples, tiny_model_config  # noqa: E402

from roca_core.model.class_head import ClassHead, class_loss, rescore  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K1 = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])


def test_rescore_mixes_the_detector_score_and_the_head_probability():
    scores = torch.tensor([0.9, 0.4, 0.6])
    labels = torch.tensor([1, 2, 2])
    # the head: sure of class 1 for the first box, of class 2 for the second, of background for the third
    logits = torch.tensor([[0.0, 8.0, 0.0], [0.0, 0.0, 8.0], [8.0, 0.0, 0.0]])
    p = logits.softmax(dim=1)[torch.arange(3), labels]
    for mean in ("arithmetic", "geometric"):
        torch.testing.assert_close(rescore(scores, labels, logits, 0.0, mean), scores)
        torch.testing.assert_close(rescore(scores, labels, logits, 1.0, mean), p)
    half = rescore(scores, labels, logits, 0.5)  # arithmetic by default
    torch.testing.assert_close(half, 0.5 * (scores + p))
    torch.testing.assert_close(rescore(scores, labels, logits, 0.5, "geometric"), (scores * p).sqrt())
    assert half[1] > scores[1] and half[2] < 0.31  # a confirmed detection rises, a rejected one falls


def test_arithmetic_mean_keeps_a_confirmed_detection_above_the_threshold_where_the_geometric_drops_it():
    # a sure detector (0.7) and an unsure head (0.35 for the label, its most likely class):
    # the geometric mean falls under the alignment metric's 0.5, the arithmetic one stays above
    scores = torch.tensor([0.7])
    labels = torch.tensor([1])
    logits = torch.log(torch.tensor([[0.33, 0.35, 0.32]]))
    assert rescore(scores, labels, logits, 0.5, "geometric").item() == pytest.approx(0.4950, abs=1e-4)
    assert rescore(scores, labels, logits, 0.5, "arithmetic").item() == pytest.approx(0.525)
    with pytest.raises(ValueError, match="arithmetic"):
        rescore(scores, labels, logits, 0.5, "harmonic")


def _class_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Boxes of two classes that look the same (a grey square) but differ in size (0.5 m and 1 m
    at 2-4 m, standing on a floor 1.2 m below the camera: where the box's bottom sits gives the
    distance, its height then the size) and background boxes (an empty crop)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (n,), generator=g)  # 0 background, 1 small, 2 large
    size = torch.where(target == 2, 1.0, 0.5)
    z = 2.0 + 2.0 * torch.rand(n, generator=g)
    u = 64 + (torch.rand(n, generator=g) - 0.5) * 40
    v_bottom = 48 + 100 * 1.2 / z
    v_top = v_bottom - 100 * size / z
    half = 50 * size / z
    boxes = torch.stack([u - half, v_top, u + half, v_bottom], dim=1)
    crops = torch.zeros(n, 3, 16, 16)
    crops[:, :, 4:12, 4:12] = torch.where(target > 0, 0.6, 0.0)[:, None, None, None]
    return {"x": (crops * 255).to(torch.uint8), "boxes": boxes, "K": K1.expand(n, 3, 3).clone(), "target": target,
            "det_label": torch.where(target > 0, target, 1), "det_score": torch.full((n,), 0.45),
            "gt_id": torch.where(target > 0, torch.arange(n), -1), "gt_cls": target.clone(),
            "num_gt": torch.tensor(int((target > 0).sum()))}


def test_the_head_learns_classes_that_only_the_box_geometry_separates():
    from roca_core.training.class_stage import ClassStageConfig, class_errors, train_class_head

    torch.manual_seed(0)
    train, val = _class_data(1536, 0), _class_data(384, 1)
    head = ClassHead(num_classes=2, crop=16, width=4)
    before = class_errors(head, val, (96, 128), 0.5)
    hist = train_class_head(head, train, val, ClassStageConfig(crop=16, width=4, epochs=12, batch=64, lr=3e-3),
                            (96, 128))
    after = class_errors(head, val, (96, 128), 0.5)
    # every detection scores 0.45: none passes 0.5 until the head confirms the right ones
    assert before["recall_before"] == after["recall_before"] == 0.0
    assert after["accuracy"] > 0.9 > 0.6 > before["accuracy"], (before, after)
    assert after["recall"] > 0.85 and after["precision"] > 0.85, after
    assert hist[-1]["loss"] < hist[0]["loss"] and len(hist) == 12
    # the held-out numbers re-score as the model will (model.class_mix_mean reaches rescore)
    assert class_errors(head, val, (96, 128), 0.5, "geometric")["recall"] <= after["recall"]
    with pytest.raises(ValueError, match="class score mean"):
        class_errors(head, val, (96, 128), 0.5, "harmonic")


def test_detection_recall_counts_objects_once_and_leaves_ground_truth_boxes_out():
    from roca_core.training.class_stage import detection_recall

    data = {"det_label": torch.tensor([1, 1, 2, 2, 0]), "gt_cls": torch.tensor([1, 1, 1, 0, 1]),
            "gt_id": torch.tensor([0, 0, 1, -1, 1]), "num_gt": torch.tensor(2)}
    scores = torch.tensor([0.9, 0.8, 0.9, 0.7, 1.0])
    # object 0 found twice (counted once), object 1 only with the wrong class, a false alarm,
    # and object 1's own ground-truth box, which is not a detection
    assert detection_recall(scores, data) == {"recall": 0.5, "precision": 0.5, "detections": 4}
    assert detection_recall(scores, data, threshold=0.85)["recall"] == 0.5
    assert detection_recall(scores * 0.5, data) == {"recall": 0.0, "precision": 0.0, "detections": 0}


def test_loss_weights_samples():
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert class_loss(logits, labels, torch.tensor([1.0, 0.0])) < 0.05 < class_loss(logits, labels)


def _tiny_class_cfg():
    return replace(tiny_model_config(), class_width=4, class_crop=16)


def test_model_trains_the_class_head_jointly_and_rescores_detections_in_eval():
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    model = RocaModel(replace(_tiny_class_cfg(), box_score_thresh=0.0))
    samples = model_synthetic_samples(2)
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    losses = model(images, targets)
    assert "loss_class_head" in losses and torch.isfinite(losses["loss_class_head"])
    sum(losses.values()).backward()
    assert model.class_head.net[0][0].weight.grad.abs().sum() > 0
    model.eval()
    K = [t["K"] for t in targets]
    with torch.no_grad():  # make the head's output depend on the crop, so scores move
        model.class_head.mlp[-1].weight.normal_(0, 1.0)
    with_head = model(images, intrinsics=K)
    model.use_class_head = False
    without = model(images, intrinsics=K)
    mix = model.cfg.class_mix
    for a, w in zip(with_head, without):
        assert a["scores"].shape == w["scores"].shape and a["scores"].numel() > 0
        assert (a["scores"][1:] <= a["scores"][:-1]).all()  # ranked by the new score
        # the same detections (box and label), each scored (1 - mix) * detector score + mix * p(label)
        key = lambda r: sorted(zip(r["boxes"].round(decimals=3).tolist(), r["labels"].tolist()))  # noqa: E731
        assert key(a) == key(w)
        assert not torch.allclose(a["scores"].sort().values, w["scores"].sort().values)
        assert (a["scores"] <= (1 - mix) * w["scores"].max() + mix + 1e-6).all()
        assert (a["scores"] >= (1 - mix) * w["scores"].min() - 1e-6).all()
    # ground-truth boxes are not re-scored: they stay at 1
    boxes, labels = [t["boxes"] for t in targets], [t["labels"] for t in targets]
    model.use_class_head = True
    gt = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
    assert all(torch.equal(r["scores"], torch.ones_like(r["scores"])) for r in gt)


def test_config_rejects_a_bad_class_head():
    from roca_core.config_io import ConfigError
    with pytest.raises(ConfigError, match="class_width"):
        replace(tiny_model_config(), class_width=-1)
    with pytest.raises(ConfigError, match="class_mix_mean"):
        replace(tiny_model_config(), class_mix_mean="harmonic")
    with pytest.raises(ConfigError, match="class_crop"):
        replace(tiny_model_config(), class_width=4, class_crop=4)
    with pytest.raises(ConfigError, match="class_mix"):
        replace(tiny_model_config(), class_mix=1.5)


def test_roca_train_class_cli_trains_a_head_that_eval_uses(tiny_render, tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.eval import main as eval_main
    from roca_core.cli.train_class import main as train_class_main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = replace(tiny_model_config(), box_score_thresh=0.0)  # an untrained detector: keep its weak boxes
    base = save_checkpoint(tmp_path / "base.safetensors", RocaModel(cfg), cfg)
    out = tmp_path / "class"
    args = ["--checkpoint", str(base), "--data", str(tiny_render), "--out", str(out), "--epochs", "2",
            "--crop", "16", "--width", "4", "--workers", "1", "--no-progress"]
    assert train_class_main(args) == 0
    text = capsys.readouterr().out
    assert "running the detector" in text and "held-out: objects with a right-class detection" in text
    model, cfg2, extra = load_checkpoint(out / "model_class.safetensors")
    assert (cfg2.class_width, cfg2.class_crop, cfg2.class_mix) == (4, 16, 0.25) and model.class_head is not None
    assert replace(cfg2, class_width=0, class_crop=cfg.class_crop, class_mix=cfg.class_mix) == cfg  # nothing else changed
    hist = json.loads((out / "class_history.json").read_text())
    assert len(hist["history"]) == 2 and 0 <= hist["heldout"]["recall"] <= 1
    assert extra["class_stage"]["heldout"]["detections"] == hist["heldout"]["detections"] > 0
    assert (out / "class_curve.png").stat().st_size > 1000
    samples = torch.load(out / "class_crops_train.pt")["samples"]
    n = samples["x"].shape[0]
    # every ground-truth box is a sample of its own class, besides the detections
    gt_rows = samples["det_label"] == 0
    assert int(gt_rows.sum()) == int(samples["num_gt"]) > 0 and (samples["target"][gt_rows] > 0).all()
    assert samples["boxes"].shape == (n, 4) and n > int(samples["num_gt"])
    base_model, _, _ = load_checkpoint(base)  # the rest of the network is the base network's
    sd_base, sd_new = base_model.state_dict(), model.state_dict()
    assert all(torch.equal(sd_base[k], sd_new[k]) for k in sd_base)
    assert train_class_main(args) == 0  # cached detections reused
    assert "running the detector" not in capsys.readouterr().out
    for flag, state in (([], "on"), (["--no-class-head"], "off")):
        rc = eval_main(["--checkpoint", str(out / "model_class.safetensors"), "--data", str(tiny_render),
                        "--out", str(tmp_path / f"r_{state}.json"), "--no-progress", "--device", "cpu"] + flag)
        assert rc == 0
        assert json.loads((tmp_path / f"r_{state}.json").read_text())["class_head"] == state
    assert train_class_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert train_class_main(args + ["--mix", "2"]) == 2
