"""The retrieval stage (roca_core/training/retrieval_stage.py, roca-train-retrieval): ground-truth
NOCs cut on the ROI grid, a NOC encoder that learns which CAD model a NOC cloud is, the query
embedding without the shape code, and the CLI end to end."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import tiny_model_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gt_noc_rois_keep_the_objects_pixels_with_depth_only():
    from roca_core.model.roi_sampling import gt_noc_rois

    h, w = 8, 8
    noc = torch.zeros(3, h, w)
    noc[0] = torch.arange(w).float()[None].expand(h, w) / 10  # x NOC = column / 10
    noc[1] = torch.arange(h).float()[:, None].expand(h, w) / 10
    masks = torch.zeros(2, h, w)
    masks[0, 2:6, 2:6] = 1
    masks[1, :, 4:] = 1
    depth = torch.ones(h, w)
    depth[3, 3] = 0  # no depth: dropped although on the object
    boxes = torch.tensor([[2.0, 2, 6, 6], [0.0, 0, 8, 8]])
    points, weights = gt_noc_rois(noc, masks, depth, boxes, 4)
    assert points.shape == (2, 16, 3) and weights.shape == (2, 16)
    # object 0: its box is its mask, one sample per pixel, all kept but the one without depth
    assert weights[0].sum() == 15 and weights[0].reshape(4, 4)[1, 1] == 0
    torch.testing.assert_close(points[0, :, 0].reshape(4, 4)[0], torch.tensor([0.2, 0.3, 0.4, 0.5]))
    torch.testing.assert_close(points[0, :, 1].reshape(4, 4)[:, 0], torch.tensor([0.2, 0.3, 0.4, 0.5]))
    # object 1 covers the right half of its box: only those samples count (nearest, no blending)
    assert weights[1].reshape(4, 4)[:, :2].sum() == 0 and weights[1].reshape(4, 4)[:, 2:].sum() == 8
    assert (points[1, :, 0][weights[1] > 0] >= 0.4 - 1e-6).all()  # the right half's columns, 4 to 7


def _noc_data(n: int, seed: int, size: int = 8) -> dict[str, torch.Tensor]:
    """Two classes with two CAD models each; an object's visible NOCs lie on a plane whose side
    tells its CAD model: x = -0.3 or +0.3 (class 0), y = -0.3 or +0.3 (class 1)."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 2, (n,), generator=g)
    which = torch.randint(0, 2, (n,), generator=g)
    p = torch.rand(n, size * size, 3, generator=g) - 0.5
    side = torch.where(which == 0, -0.3, 0.3)
    p[torch.arange(n), :, cls] = side[:, None].expand(n, size * size)  # class 0: x, class 1: y
    w = torch.rand(n, size * size, generator=g) < 0.8
    return {"p": p.half(), "w": w, "cls": cls, "cad": 2 * cls + which}


def test_the_noc_encoder_learns_which_cad_model_the_nocs_are():
    from roca_core.model.retrieval_head import RetrievalHead
    from roca_core.training.retrieval_stage import (RetrievalStageConfig, noc_retrieval_accuracy,
                                                    train_noc_encoder)
    from roca_core.training.shape_stage import CadTargets

    torch.manual_seed(0)
    cfg = tiny_model_config()
    head = RetrievalHead(cfg)
    cads = CadTargets.from_embeddings(["a0", "a1", "b0", "b1"], torch.tensor([0, 0, 1, 1]),
                                      torch.randn(4, cfg.embedding_dim))
    train, val = _noc_data(192, 1), _noc_data(96, 2)
    before = noc_retrieval_accuracy(head, val, cads)
    assert before["chance_top1"] == pytest.approx(0.5) and before["objects"] == 96
    cad_before = {k: v.clone() for k, v in head.cad_encoder.state_dict().items()}
    history = train_noc_encoder(head, train, val, cads, RetrievalStageConfig(epochs=6, batch=32, lr=3e-3))
    after = noc_retrieval_accuracy(head, val, cads)
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    assert after["top1"] > 0.95, (before, after)
    assert all(torch.equal(cad_before[k], v) for k, v in head.cad_encoder.state_dict().items())  # frozen
    # the CAD model is in the NOCs: moving class 0's planes to the other side flips the answers
    cls0 = torch.where(val["cls"] == 0)[0]
    flipped = {k: v[cls0].clone() for k, v in val.items()}
    flipped["p"][:, :, 0] = -flipped["p"][:, :, 0]
    assert noc_retrieval_accuracy(head, flipped, cads)["top1"] < 0.05


def test_noc_only_makes_the_query_the_nocs_alone():
    from roca_core.model.retrieval_head import RetrievalHead
    from roca_core.training.retrieval_stage import noc_only

    torch.manual_seed(0)
    cfg = tiny_model_config()
    head = RetrievalHead(cfg).eval()
    noc = torch.rand(3, 16, 3) - 0.5
    weights = torch.ones(3, 16)
    codes = torch.randn(2, 3, cfg.shape_code_dim)
    with torch.no_grad():
        z0, _ = head.embed_noc(noc, weights, codes[0])
        z1, _ = head.embed_noc(noc, weights, codes[1])
        assert not torch.allclose(z0, z1)  # the shape code counts before
        noc_only(head)
        z0, grid = head.embed_noc(noc, weights, codes[0])
        z1, _ = head.embed_noc(noc, weights, codes[1])
    torch.testing.assert_close(z0, z1)
    torch.testing.assert_close(z0, head.noc_encoder(grid))


def test_roca_train_retrieval_cli_trains_the_noc_encoder_only(tiny_render, tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.train_retrieval import main as train_retrieval_main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    cfg = tiny_model_config()
    base = save_checkpoint(tmp_path / "base.safetensors", RocaModel(cfg), cfg)
    out = tmp_path / "retrieval"
    args = ["--checkpoint", str(base), "--data", str(tiny_render), "--out", str(out), "--epochs", "2",
            "--workers", "1", "--no-progress"]
    assert train_retrieval_main(args) == 0
    text = capsys.readouterr().out
    assert "CAD models;" in text and "held-out, from ground-truth NOCs: the right CAD model first for" in text
    model, cfg2, extra = load_checkpoint(out / "model_retrieval.safetensors")
    assert cfg2 == cfg
    hist = json.loads((out / "retrieval_history.json").read_text())
    assert len(hist["history"]) == 2 and 0 <= hist["heldout"]["top1"] <= hist["heldout"]["top5"] <= 1
    assert hist["heldout_before"]["objects"] == hist["heldout"]["objects"] > 0
    assert extra["retrieval_stage"]["heldout"]["objects"] == hist["heldout"]["objects"]
    assert (out / "retrieval_curve.png").stat().st_size > 1000
    nocs = torch.load(out / "nocs_train.pt", weights_only=False)["nocs"]
    assert (nocs["cad"] >= 0).all() and nocs["w"].any(dim=1).all()  # every object has its CAD and pixels
    # only the NOC encoder and the shape code's output layer changed
    sd_base, sd_new = load_checkpoint(base)[0].state_dict(), model.state_dict()
    changed = {k for k in sd_base if not torch.equal(sd_base[k], sd_new[k])}
    assert changed and all(k.startswith(("retrieval_head.noc_encoder.", "retrieval_head.shape_mlp.2."))
                           for k in changed), changed
    assert not any(k.startswith("retrieval_head.cad_encoder.") for k in changed)
    assert train_retrieval_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert train_retrieval_main(args + ["--noise", "-1"]) == 2
