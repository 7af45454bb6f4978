"""Checkpoints: one safetensors file, exact round trip, clear errors for bad files."""
from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch

from roca_core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from roca_core.model import RocaModel, load_preset
from roca_core.model.synthetic import make_batch

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = load_preset("small")
    torch.manual_seed(0)
    model = RocaModel(cfg).eval()
    model.set_class_weights(torch.linspace(0.5, 1.0, cfg.num_classes))
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(path, model, cfg, {"iteration": 12, "note": "test"})
    return path, model, cfg


def test_round_trip_gives_identical_outputs(saved):
    path, model, cfg = saved
    loaded, cfg2, extra = load_checkpoint(path)
    assert cfg2 == cfg and extra == {"iteration": 12, "note": "test"}
    assert not loaded.training
    torch.testing.assert_close(loaded.class_weights, model.class_weights)
    images, targets = make_batch(120, 160, batch_size=1, num_objects=1, seed=0)
    K = [targets[0]["K"]]
    a = model(images, intrinsics=K)[0]
    b = loaded(images, intrinsics=K)[0]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_file_is_plain_safetensors_with_config_metadata(saved):
    path = saved[0]
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])  # safetensors: JSON header then raw tensor bytes, no pickle
    meta = header["__metadata__"]
    assert meta["format"] == "roca-checkpoint" and meta["format_version"] == "1"
    assert json.loads(meta["model_config"])["backbone"] == saved[2].backbone


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0.5, 0.999, 8, 100])
def test_truncated_file(saved, tmp_path, keep):
    raw = saved[0].read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(raw[: int(len(raw) * keep) if keep < 1 else int(keep)])
    with pytest.raises(CheckpointError, match=str(bad.name)):
        load_checkpoint(bad)


def test_garbage_and_pickle_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3 + b"not a checkpoint" * 20)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    pkl = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pkl)
    with pytest.raises(CheckpointError):
        load_checkpoint(pkl)


def test_safetensors_without_roca_metadata(tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(CheckpointError, match="not a roca checkpoint"):
        load_checkpoint(p)


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    path, model, cfg = saved
    other = dataclasses.replace(cfg, embedding_dim=cfg.embedding_dim * 2)
    bad = tmp_path / "mismatch.safetensors"
    save_checkpoint(bad, model, other)  # weights of cfg, config of `other`
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(bad)
    # the raw reader still works (for inspection)
    state, cfg2, _ = read_checkpoint(bad)
    assert cfg2 == other and state


def test_extra_must_be_json(saved, tmp_path):
    _, model, cfg = saved
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "x.safetensors", model, cfg, {"bad": object()})
