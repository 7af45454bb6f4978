"""The shape head (roca_core/model/shape_head.py): nearest-CAD logits within a class, learning
which CAD model a crop shows, its place in the model (retrieval embeddings in eval), and
stand-alone training (roca-train-shape) on cached crops."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import model_synthetic_samples, tiny_model_config  # noqa: E402

from roca_core.model.shape_head import ShapeHead, shape_logits, shape_loss  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shape_logits_rank_the_nearest_cad_model_of_the_class_first():
    cads = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    classes = torch.tensor([0, 0, 1, 1])
    emb = torch.tensor([[0.95, 0.05], [0.95, 0.05]])  # nearest overall: CAD 1 (class 0), CAD 3 (class 1)
    allowed = classes[None, :] == torch.tensor([0, 1])[:, None]
    logits = shape_logits(emb, cads, allowed, torch.tensor(0.0))
    assert logits.argmax(dim=1).tolist() == [1, 3]
    assert torch.isinf(logits[0, 2:]).all() and torch.isinf(logits[1, :2]).all()  # other classes excluded
    torch.testing.assert_close(logits[0, 1], -(torch.tensor([0.05, 0.05]) ** 2).sum())
    # a sharper temperature keeps the order and lowers the loss of the right answer
    target = torch.tensor([1, 3])
    sharp = shape_logits(emb, cads, allowed, torch.tensor(3.0))
    assert sharp.argmax(dim=1).tolist() == [1, 3] and shape_loss(sharp, target) < shape_loss(logits, target)


def _crop_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Two classes with two CAD models each. Class 0's CAD models look different (a bright
    square in the left or the right half of the crop; mirror-safe only without augmentation, so
    the tests train without it) and have the same size; class 1's look the same and differ in
    size (0.5 m and 1 m)."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 2, (n,), generator=g)
    which = torch.randint(0, 2, (n,), generator=g)
    x = torch.full((n, 3, 16, 16), 0.2)
    for i in range(n):
        c0 = 2 if (which[i] == 0 or cls[i] == 1) else 9
        x[i, :, 4:12, c0:c0 + 5] = 0.9
    side = torch.where((cls == 1) & (which == 1), 1.0, 0.5) * (1 + 0.03 * torch.randn(n, generator=g))
    return {"x": (x * 255).to(torch.uint8), "cls": cls, "cad": 2 * cls + which, "size": side[:, None].expand(n, 3)}


def test_the_head_learns_which_cad_model_a_crop_shows():
    from roca_core.training.shape_stage import (CadTargets, ShapeStageConfig, retrieval_accuracy,
                                                train_shape_head)

    torch.manual_seed(0)
    cads = CadTargets.from_embeddings(["a0", "a1", "b0", "b1"], torch.tensor([0, 0, 1, 1]), torch.randn(4, 8))
    head = ShapeHead(num_classes=2, crop=16, width=4, embedding_dim=8)
    train, val = _crop_data(256, 1), _crop_data(128, 2)
    before = retrieval_accuracy(head, val, cads)
    assert before["chance_top1"] == pytest.approx(0.5) and before["top5"] == 1.0  # 2 per class
    history = train_shape_head(head, train, val, cads,
                               ShapeStageConfig(crop=16, width=4, epochs=12, batch=32, lr=3e-3, augment=False))
    after = retrieval_accuracy(head, val, cads)
    assert len(history) == 12 and history[-1]["loss"] < history[0]["loss"]
    assert after["top1"] > 0.95 and after["objects"] == 128
    # class 1's CAD models differ only in size: swapping the sizes swaps the answers
    cls1 = torch.where(val["cls"] == 1)[0]
    swapped = dict(val, size=val["size"].clone())
    swapped["size"][cls1] = torch.where(val["cad"][cls1, None] == 3, 0.5, 1.0).expand(-1, 3)
    assert retrieval_accuracy(head, {k: v[cls1] for k, v in swapped.items()}, cads)["top1"] < 0.05


def test_model_retrieves_with_the_shape_head_in_eval_only():
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = replace(tiny_model_config(), box_score_thresh=0.0, shape_width=4, shape_crop=16)
    model = RocaModel(cfg)
    samples = model_synthetic_samples(2)
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    losses = model(images, targets)  # the joint loss leaves it alone (trained by roca-train-shape)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.shape_head.parameters())
    model.eval()
    K = [t["K"] for t in targets]
    boxes, labels = [t["boxes"] for t in targets], [t["labels"] for t in targets]
    with torch.no_grad():
        with_head = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
        model.use_shape_head = False
        without = model(images, intrinsics=K, gt_boxes=boxes, gt_labels=labels)
        from roca_core.model.yaw_head import yaw_crops
        for img, b, lab, a, w in zip(images, boxes, labels, with_head, without):
            expect = model.shape_head(yaw_crops(img[None], b, torch.zeros(len(b), dtype=torch.long), 16), lab - 1,
                                      a["scales"])
            torch.testing.assert_close(a["noc_embeddings"], expect)
            assert w["noc_embeddings"].shape == expect.shape and not torch.allclose(w["noc_embeddings"], expect)
            torch.testing.assert_close(a["translations"], w["translations"])  # only retrieval changes


def test_config_rejects_a_bad_shape_head():
    from roca_core.config_io import ConfigError
    with pytest.raises(ConfigError, match="shape_width"):
        replace(tiny_model_config(), shape_width=-1)
    with pytest.raises(ConfigError, match="shape_crop"):
        replace(tiny_model_config(), shape_width=4, shape_crop=4)


def test_roca_train_shape_cli_trains_a_head_that_eval_uses(tiny_render, tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.eval import main as eval_main
    from roca_core.cli.train_shape import main as train_shape_main
    from roca_core.data.loader import RocaDataset
    from roca_core.model.roca import RocaModel
    from roca_core.training.shape_stage import CadTargets, cad_indices

    torch.manual_seed(0)
    cfg = tiny_model_config()
    base = save_checkpoint(tmp_path / "base.safetensors", RocaModel(cfg), cfg)
    out = tmp_path / "shape"
    args = ["--checkpoint", str(base), "--data", str(tiny_render), "--out", str(out), "--epochs", "2",
            "--crop", "16", "--width", "4", "--workers", "1", "--no-progress"]
    assert train_shape_main(args) == 0
    text = capsys.readouterr().out
    assert "CAD models;" in text and "sizes from the truth" in text  # the tiny network has no centre head
    assert "held-out: the right CAD model first for" in text
    model, cfg2, extra = load_checkpoint(out / "model_shape.safetensors")
    assert (cfg2.shape_width, cfg2.shape_crop) == (4, 16) and model.shape_head is not None
    assert replace(cfg2, shape_width=0, shape_crop=cfg.shape_crop) == cfg  # nothing else changed
    hist = json.loads((out / "shape_history.json").read_text())
    assert len(hist["history"]) == 2 and 0 <= hist["heldout"]["top1"] <= hist["heldout"]["top5"] <= 1
    assert extra["shape_stage"]["heldout"]["objects"] == hist["heldout"]["objects"] > 0
    assert (out / "shape_curve.png").stat().st_size > 1000
    base_model, _, _ = load_checkpoint(base)  # the rest of the network, CAD encoder included, is the base's
    sd_base, sd_new = base_model.state_dict(), model.state_dict()
    assert all(torch.equal(sd_base[k], sd_new[k]) for k in sd_base)
    # the CAD model of each cached crop: every object of the render has one in its database
    crops = torch.load(out / "crops_train.pt", weights_only=False)["crops"]
    ds = RocaDataset(tiny_render, "train", image_size=cfg.image_size, class_names=cfg.class_names)
    cads = CadTargets(model, ds.cad_database, cfg.class_names)
    idx = cad_indices(ds, cads, crops)
    assert idx.shape == crops["cls"].shape and (idx >= 0).all()
    assert (cads.classes[idx] == crops["cls"]).all()  # each CAD model is of its object's class
    shuffled = dict(crops, t=crops["t"].flip(0))
    with pytest.raises(ValueError, match="does not match"):
        cad_indices(ds, cads, shuffled)
    for flag, state in (([], "on"), (["--no-shape-head"], "off")):
        rc = eval_main(["--checkpoint", str(out / "model_shape.safetensors"), "--data", str(tiny_render),
                        "--out", str(tmp_path / f"r_{state}.json"), "--no-progress", "--device", "cpu"] + flag)
        assert rc == 0
        assert json.loads((tmp_path / f"r_{state}.json").read_text())["shape_head"] == state
    assert train_shape_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert train_shape_main(args + ["--crop", "4"]) == 2


def test_training_sizes_are_the_centre_heads_when_the_network_has_one():
    from roca_core.model.centre_head import CentreHead, box_geometry, decode_size
    from roca_core.training.shape_stage import predicted_sizes

    torch.manual_seed(0)
    n = 5
    data = {"x": torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8), "cls": torch.tensor([0, 1, 0, 1, 0]),
            "boxes": torch.tensor([[10.0, 10, 30, 40]]).expand(n, 4).clone(),
            "K": torch.tensor([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]).expand(n, 3, 3).clone(),
            "s": torch.full((n, 3), 0.7)}
    without = torch.nn.Module()
    without.centre_head = None
    torch.testing.assert_close(predicted_sizes(without, data, (48, 64)), data["s"])  # the truth
    with_head = torch.nn.Module()
    with_head.centre_head = CentreHead(2, 16, 4)
    expect = decode_size(with_head.centre_head.eval()(data["x"].float() / 255,
                                                      box_geometry(data["boxes"], data["K"], (48, 64)), data["cls"]))
    torch.testing.assert_close(predicted_sizes(with_head, data, (48, 64)), expect)
