"""roca-graft-heads: image-only heads of one checkpoint onto another network."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import tiny_model_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_graft_takes_the_named_heads_and_their_config_and_keeps_the_rest(tmp_path, capsys):
    from roca_core.checkpoint import load_checkpoint, save_checkpoint
    from roca_core.cli.graft_heads import main
    from roca_core.model.roca import RocaModel

    torch.manual_seed(0)
    net_cfg = replace(tiny_model_config(), yaw_bins=8, yaw_crop=16, yaw_width=4)
    heads_cfg = replace(tiny_model_config(), yaw_bins=8, yaw_crop=16, yaw_width=4, shape_width=4, shape_crop=16,
                        class_width=4, class_crop=16, class_mix=0.7)
    net_model, heads_model = RocaModel(net_cfg), RocaModel(heads_cfg)
    other = save_checkpoint(tmp_path / "other.safetensors", heads_model, heads_cfg)  # its own CAD encoder
    # the shape head moves only between networks with the same CAD encoder (e.g. after the GPU
    # stages, heads from a checkpoint trained on the same network)
    heads_model.retrieval_head.cad_encoder.load_state_dict(net_model.retrieval_head.cad_encoder.state_dict())
    network = save_checkpoint(tmp_path / "net.safetensors", net_model, net_cfg)
    heads = save_checkpoint(tmp_path / "heads.safetensors", heads_model, heads_cfg)
    out = tmp_path / "grafted.safetensors"
    assert main(["--network", str(network), "--heads", str(heads), "--out", str(out),
                 "--modules", "yaw_head,shape_head"]) == 0
    assert "wrote" in capsys.readouterr().out
    model, cfg, extra = load_checkpoint(out)
    assert (cfg.shape_width, cfg.shape_crop, cfg.class_width) == (4, 16, 0)  # the class head was not asked for
    assert replace(cfg, shape_width=0, shape_crop=net_cfg.shape_crop) == net_cfg
    assert extra["grafted"]["modules"] == ["yaw_head", "shape_head"]
    sd, sd_net = model.state_dict(), load_checkpoint(network)[0].state_dict()
    sd_heads = load_checkpoint(heads)[0].state_dict()
    for k, v in sd.items():
        src = sd_heads if k.startswith(("yaw_head.", "shape_head.")) else sd_net
        assert torch.equal(v, src[k]), k
    # a head the source lacks, an unknown module and a missing file are errors, not crashes
    assert main(["--network", str(heads), "--heads", str(network), "--out", str(out), "--modules", "shape_head"]) == 2
    assert main(["--network", str(network), "--heads", str(heads), "--out", str(out), "--modules", "backbone"]) == 2
    assert main(["--network", str(tmp_path / "missing.safetensors"), "--heads", str(heads), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no shape_head" in err and "not a graftable head" in err
    # a shape head next to another CAD encoder would retrieve the wrong CAD models: refused
    assert main(["--network", str(network), "--heads", str(other), "--out", str(out), "--modules", "shape_head"]) == 2
    assert "CAD encoders differ" in capsys.readouterr().err
    assert main(["--network", str(network), "--heads", str(other), "--out", str(out), "--modules", "yaw_head"]) == 0
    # ... unless its CAD encoder comes along: the retrieval head (CAD and NOC encoders) of the
    # heads' checkpoint, the rest of the network kept
    assert main(["--network", str(network), "--heads", str(other), "--out", str(out),
                 "--modules", "shape_head,retrieval_head"]) == 0
    model, cfg, extra = load_checkpoint(out)
    sd_other = load_checkpoint(other)[0].state_dict()
    for k, v in model.state_dict().items():
        src = sd_other if k.startswith(("shape_head.", "retrieval_head.")) else sd_net
        assert torch.equal(v, src[k]), k
    assert (cfg.shape_width, cfg.shape_crop) == (4, 16)
    assert extra["grafted"]["modules"] == ["shape_head", "retrieval_head"]
    # a retrieval head of other shapes does not fit
    wide_cfg = replace(tiny_model_config(), embedding_dim=2 * net_cfg.embedding_dim)
    wide = save_checkpoint(tmp_path / "wide.safetensors", RocaModel(wide_cfg), wide_cfg)
    assert main(["--network", str(network), "--heads", str(wide), "--out", str(out),
                 "--modules", "retrieval_head"]) == 2
    assert "different shapes" in capsys.readouterr().err
