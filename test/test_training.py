"""Tests of the offline trainer: schedule, class weights, loop, resume, atomic checkpoints."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from roca_core.config_io import ConfigError, load_yaml
from roca_core.model.config import ModelConfig
from roca_core import atomic_io
from roca_core.training import train_state
from roca_core.training.class_weights import (apply_class_weights, class_weights_from_counts,
                                              count_classes)
from roca_core.training.config import (DataConfig, ExperimentConfig, TrainConfig,
                                       experiment_config_from_dict, load_experiment_config)
from roca_core.training.distributed import DistInfo, InfiniteBatchSampler
from roca_core.training.logging import CsvLossLogger, plot_loss_curves, read_loss_csv
from roca_core.training.schedule import build_lr_scheduler
from roca_core.training.train_state import (TrainStateError, find_last_checkpoint, load_train_state,
                                            save_train_state)
from roca_core.training.trainer import LOSS_CSV, LOSS_PNG, Trainer

from training_fixtures import (SyntheticRocaData, TinyRocaStandIn, collate,
                               model_synthetic_samples, tiny_model_config)

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def experiment(**train) -> ExperimentConfig:
    base = dict(max_iter=4, ims_per_batch=2, warmup_iters=2, lr_steps=(3,), base_lr=0.05,
                num_workers=0, checkpoint_period=2, eval_period=0, device="cpu")
    base.update(train)
    return ExperimentConfig(model=ModelConfig(), data=DataConfig(), train=TrainConfig(**base))


def run_standin(out: Path, resume: bool = False, **train) -> Trainer:
    torch.manual_seed(123)  # the stand-in is built before the trainer seeds: fix its init
    trainer = Trainer(experiment(**train), out, resume=resume, overwrite=not resume,
                      model=TinyRocaStandIn(), train_dataset=SyntheticRocaData(8),
                      collate_fn=collate, progress=False, export_inference_model=False,
                      log=lambda _m: None)
    trainer.result = trainer.train()
    return trainer


# ------------------------------------------------------------------------------ config
def test_presets_load_with_train_and_data_sections():
    small = load_experiment_config(REPO / "config" / "small.yaml")
    paper = load_experiment_config(REPO / "config" / "paper.yaml")
    assert paper.train.base_lr == pytest.approx(1e-3) and paper.train.lr_steps == (60000,)
    assert paper.train.max_iter == 80000 and paper.train.ims_per_batch == 4
    assert paper.train.momentum == 0.9 and paper.train.clip_grad_norm == 10.0
    assert paper.train.warmup_iters == 1000
    assert paper.train.base_lr * paper.train.warmup_factor == pytest.approx(1e-4)
    assert small.train.max_iter < paper.train.max_iter
    assert small.model.image_height < paper.model.image_height


def test_every_shipped_training_preset_loads_and_the_demo_chain_fits_together():
    presets = {p.stem: load_experiment_config(p) for p in sorted((REPO / "config").glob("*.yaml"))
               if "train" in load_yaml(p) and "model" in load_yaml(p)}
    assert {"small", "small_stage2", "small_stage3", "small_heads", "small_stage5", "small_stage6",
            "small_stage7", "small_stage8", "small_stage9", "small_stage10", "paper"} <= set(presets)
    # stage 3 trains the yaw network on (its yaw head frozen); the heads' preset adds the
    # centre, up and class heads to that same network
    s3, heads = presets["small_stage3"].model, presets["small_heads"].model
    assert s3.yaw_bins == heads.yaw_bins > 0 and s3.centre_width == s3.up_width == s3.class_width == s3.shape_width == 0
    assert heads.centre_width > 0 and heads.up_width > 0 and heads.class_width > 0 and heads.shape_width > 0
    # (class_mix: the class head's share of the score; stage 3 has no class head)
    assert replace(heads, centre_width=0, up_width=0, class_width=0, shape_width=0,
                   loss_weights=s3.loss_weights, class_mix=s3.class_mix) == s3
    assert presets["small_stage3"].train.lr_multipliers["yaw_head"] < 0.01 and s3.loss_weights.yaw == 0
    # stage 5 continues the heads' network as it is, on rendered sets it has not trained on
    s5 = presets["small_stage5"]
    assert s5.model == heads and s5.data.extra_train_roots and s5.data.root != presets["small_heads"].data.root
    # stage 6 repeats it on two other sets: the same network and schedule, none of stage 5's data
    s6 = presets["small_stage6"]
    assert s6.model == heads and replace(s6.train, out_dir=s5.train.out_dir) == s5.train
    seen5 = {s5.data.root, *s5.data.extra_train_roots}
    assert s6.data.extra_train_roots and not {s6.data.root, *s6.data.extra_train_roots} & seen5
    # stage 7 once more, on two sets neither stage 5 nor stage 6 trained the whole network on
    s7 = presets["small_stage7"]
    assert s7.model == heads and replace(s7.train, out_dir=s5.train.out_dir) == s5.train
    seen6 = seen5 | {s6.data.root, *s6.data.extra_train_roots}
    assert s7.data.extra_train_roots and not {s7.data.root, *s7.data.extra_train_roots} & seen6
    # stage 8: the same recipe for one pass over three new sets (1.5 times the iterations, the
    # learning-rate steps at the same fractions of the run)
    s8 = presets["small_stage8"]
    assert s8.model == heads and len(s8.data.extra_train_roots) == 2
    assert s8.train.max_iter == s5.train.max_iter * 3 // 2
    assert [s / s8.train.max_iter for s in s8.train.lr_steps] == pytest.approx(
        [s / s5.train.max_iter for s in s5.train.lr_steps], abs=0.01)
    assert replace(s8.train, out_dir=s5.train.out_dir, max_iter=s5.train.max_iter,
                   lr_steps=s5.train.lr_steps) == s5.train
    seen7 = seen6 | {s7.data.root, *s7.data.extra_train_roots}
    assert not {s8.data.root, *s8.data.extra_train_roots} & seen7
    # stages 9 and 10: stage 8 again, each on three sets no earlier stage trained the whole
    # network on
    seen = seen7 | {s8.data.root, *s8.data.extra_train_roots}
    for name in ("small_stage9", "small_stage10"):
        stage = presets[name]
        assert stage.model == heads and replace(stage.train, out_dir=s8.train.out_dir) == s8.train, name
        roots = {stage.data.root, *stage.data.extra_train_roots}
        assert len(stage.data.extra_train_roots) == 2 and not roots & seen, name
        seen |= roots


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="max_iterations"):
        experiment_config_from_dict({"train": {"max_iterations": 10}})
    with pytest.raises(ConfigError, match="optimizer"):
        experiment_config_from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match="ims_per_batch"):
        experiment_config_from_dict({"train": {"ims_per_batch": 0}})
    with pytest.raises(ConfigError, match="lr_steps"):
        experiment_config_from_dict({"train": {"lr_steps": [50, 10]}})
    with pytest.raises(ConfigError, match="train.optimizer must be sgd or adamw"):
        experiment_config_from_dict({"train": {"optimizer": "lbfgs"}})


# ------------------------------------------------------------------------------ schedule
def test_lr_schedule_warmup_then_steps():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1e-3, momentum=0.9)
    sched = build_lr_scheduler(opt, warmup_iters=10, warmup_factor=0.1, steps=(20, 30), gamma=0.1)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # strictly rising during warm-up
    assert lrs[10] == pytest.approx(1e-3) and lrs[19] == pytest.approx(1e-3)
    assert lrs[20] == pytest.approx(1e-4) and lrs[29] == pytest.approx(1e-4)
    assert lrs[30] == pytest.approx(1e-5) and lrs[39] == pytest.approx(1e-5)


# ------------------------------------------------------------------------------ class weights
def test_class_weights_inverse_log_frequency_normalised():
    w = class_weights_from_counts([100, 10, 1000])
    # 1/log(n) relative to the rarest class (10): log(10)/log(n)
    assert w.tolist() == pytest.approx([0.5, 1.0, 1.0 / 3.0], rel=1e-6)
    assert w.max() == pytest.approx(1.0)


def test_class_weights_clamp_rare_and_absent_classes():
    w = class_weights_from_counts([0, 1, 2, 4, 10000])
    assert w[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])  # counts <= 2 share the top weight
    assert w[3] == pytest.approx(math.log(2) / math.log(4))
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    with pytest.raises(ValueError, match=">= 0"):
        class_weights_from_counts([3, -1])
    with pytest.raises(ValueError, match="non-empty"):
        class_weights_from_counts([])


def test_count_classes_and_apply_to_model():
    counts = count_classes([torch.tensor([1, 1, 9]), torch.tensor([], dtype=torch.int64),
                            np.array([3])], num_classes=9)
    assert counts.tolist() == [2, 0, 1, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="label 0"):
        count_classes([[0]], num_classes=9)
    model = TinyRocaStandIn()
    weights = class_weights_from_counts(np.arange(9) + 5)
    assert apply_class_weights(model, weights)
    assert torch.allclose(model.class_weights, torch.from_numpy(weights))
    assert not apply_class_weights(torch.nn.Linear(2, 2), weights)


# ------------------------------------------------------------------------------ sampler
def test_infinite_sampler_resumes_mid_epoch_and_shards_ranks():
    full = InfiniteBatchSampler(10, 3, seed=5)
    it = iter(full)
    first = [next(it) for _ in range(7)]  # 3 batches per epoch: crosses two epoch borders
    resumed = iter(InfiniteBatchSampler(10, 3, seed=5, start_iter=4))
    assert [next(resumed) for _ in range(3)] == first[4:]
    assert len(set(sum(first[:3], []))) == 9  # an epoch: 3 whole batches, no repeats
    assert first[:3] != first[3:6]  # reshuffled every epoch
    r0 = InfiniteBatchSampler(10, 2, DistInfo(0, 2), seed=1).epoch_indices(0)
    r1 = InfiniteBatchSampler(10, 2, DistInfo(1, 2), seed=1).epoch_indices(0)
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 5
    with pytest.raises(ValueError, match="too small"):
        InfiniteBatchSampler(3, 2, DistInfo(0, 2))


# ------------------------------------------------------------------------------ the loop
def run_real(out: Path, resume: bool = False, **train) -> Trainer:
    """The real RocaModel (tiny sizes) on self-consistent synthetic samples."""
    cfg = experiment(**train)
    cfg.model = tiny_model_config()
    trainer = Trainer(cfg, out, resume=resume, overwrite=not resume,
                      train_dataset=model_synthetic_samples(4), collate_fn=collate,
                      progress=False, log=lambda _m: None)
    trainer.result = trainer.train()
    return trainer


def test_training_lowers_the_loss(tmp_path):
    trainer = run_real(tmp_path / "run", max_iter=30, checkpoint_period=0, warmup_iters=5,
                       lr_steps=(), base_lr=0.02)
    log = read_loss_csv(tmp_path / "run" / LOSS_CSV)
    assert log["iteration"].tolist() == list(range(1, 31))
    total = log["total_loss"]
    assert total[-5:].mean() < 0.6 * total[:5].mean()
    for name in ("loss_classifier", "loss_depth", "loss_rot"):
        assert log[name][-5:].mean() < log[name][:5].mean(), name
    assert (tmp_path / "run" / LOSS_PNG).stat().st_size > 1000
    assert trainer.result.final_iteration == 30
    assert find_last_checkpoint(tmp_path / "run" / "checkpoints").name == "iter_0000030"
    # class weights from the training frequencies reached the model
    counts = np.zeros(9)
    for _image, target in model_synthetic_samples(4):
        for label in target["labels"].tolist():
            counts[label - 1] += 1
    np.testing.assert_allclose(trainer.model.class_weights.numpy(),
                               class_weights_from_counts(counts), rtol=1e-6)
    # the inference export holds the trained weights
    from roca_core.checkpoint import load_checkpoint
    loaded, model_cfg, extra = load_checkpoint(trainer.result.final_model)
    assert model_cfg == trainer.cfg.model and extra["iteration"] == 30
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path, optimizer):
    straight = run_real(tmp_path / "a", max_iter=4, checkpoint_period=0, optimizer=optimizer)
    rng_straight = torch.get_rng_state()
    run_real(tmp_path / "b", max_iter=2, checkpoint_period=0, optimizer=optimizer)
    resumed = run_real(tmp_path / "b", resume=True, max_iter=4, checkpoint_period=0, optimizer=optimizer)
    expected = torch.optim.AdamW if optimizer == "adamw" else torch.optim.SGD
    assert type(straight.optimizer) is type(resumed.optimizer) is expected
    assert torch.equal(torch.get_rng_state(), rng_straight)  # same RNG stream, too
    assert resumed.start_iter == 2 and resumed.result.final_iteration == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for idx in sa:
        assert sa[idx].keys() == sb[idx].keys()
        for name in sa[idx]:  # momentum_buffer (SGD); step, exp_avg, exp_avg_sq (AdamW)
            assert torch.equal(torch.as_tensor(sa[idx][name]), torch.as_tensor(sb[idx][name])), name
    assert straight.scheduler.state_dict()["last_epoch"] == resumed.scheduler.state_dict()["last_epoch"] == 4
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    # the resumed log continues without duplicated iterations and with the same losses
    log_a = read_loss_csv(tmp_path / "a" / LOSS_CSV)
    log_b = read_loss_csv(tmp_path / "b" / LOSS_CSV)
    assert log_b["iteration"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(log_a["total_loss"], log_b["total_loss"], rtol=1e-5)


def test_resume_with_the_stand_in_restores_dropout_rng(tmp_path):
    """The stand-in uses dropout every step, so a missed RNG restore shows up at once."""
    straight = run_standin(tmp_path / "a", max_iter=4, checkpoint_period=0)
    run_standin(tmp_path / "b", max_iter=2, checkpoint_period=0)
    resumed = run_standin(tmp_path / "b", resume=True, max_iter=4, checkpoint_period=0)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_fresh_run_refuses_an_out_dir_with_checkpoints(tmp_path):
    run_standin(tmp_path / "run", max_iter=2)
    trainer = Trainer(experiment(max_iter=2), tmp_path / "run", model=TinyRocaStandIn(),
                      train_dataset=SyntheticRocaData(8), collate_fn=collate, progress=False,
                      export_inference_model=False, log=lambda _m: None)
    with pytest.raises(FileExistsError, match="--resume"):
        trainer.train()


# ------------------------------------------------------------------------------ checkpoints
def _save(root: Path, iteration: int, model=None):
    model = model or TinyRocaStandIn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = build_lr_scheduler(opt, 2, 0.1, (5,))
    model(*[list(x) for x in collate(list(SyntheticRocaData(2)))])["loss_depth"].backward()
    opt.step()
    sched.step()
    return save_train_state(root, iteration, model, opt, sched, config={"k": 1}, keep=5), model


def test_crash_mid_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    first, model = _save(root, 2)

    def torn_save(obj, path, *args, **kwargs):  # writes half a file, then "the process dies"
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04" + bytes(range(96)))
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(train_state.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        _save(root, 4)
    monkeypatch.undo()
    assert find_last_checkpoint(root) == first
    assert not (root / "iter_0000004").exists()
    fresh = TinyRocaStandIn()
    info = load_train_state(root, fresh)
    assert info.iteration == 2
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_atomic_write_never_leaves_a_torn_file(tmp_path, monkeypatch):
    target = tmp_path / "model.bin"
    atomic_io.atomic_write_bytes(target, b"old complete content")
    real_fsync = os.fsync

    def crash_on_fsync(fd):
        raise OSError("simulated power loss before the rename")

    monkeypatch.setattr(atomic_io.os, "fsync", crash_on_fsync)
    with pytest.raises(OSError, match="power loss"):
        atomic_io.atomic_write_bytes(target, b"new content that never lands" * 1000)
    monkeypatch.setattr(atomic_io.os, "fsync", real_fsync)
    assert target.read_bytes() == b"old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # temp file cleaned up


@pytest.mark.parametrize("damage", ["truncate_weights", "garbage_state", "garbage_meta",
                                    "missing_state"])
def test_corrupted_checkpoint_is_refused_with_a_clear_message(tmp_path, damage):
    path, _ = _save(tmp_path / "ckpt", 3)
    if damage == "truncate_weights":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
        expected = "corrupted or truncated"
    elif damage == "garbage_state":
        (path / "train_state.pt").write_bytes(os.urandom(512))
        expected = "corrupted or truncated"
    elif damage == "garbage_meta":
        (path / "meta.json").write_bytes(b"\x00\xff{not json")
        expected = "corrupted"
    else:
        (path / "train_state.pt").unlink()
        expected = "incomplete"
    with pytest.raises(TrainStateError, match=expected):
        load_train_state(path, TinyRocaStandIn())


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path, _ = _save(tmp_path / "ckpt", 1)
    other = TinyRocaStandIn()
    other.depth = torch.nn.Conv2d(8, 2, 1)
    with pytest.raises(TrainStateError, match="shape mismatch"):
        load_train_state(path, other)


def test_loading_never_unpickles_code(tmp_path):
    """A train_state.pt with a code-running pickle (and matching hashes) is refused unrun."""
    path, _ = _save(tmp_path / "ckpt", 1)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"iteration": 1, "optimizer": Evil()}, path / "train_state.pt")
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"]["train_state.pt"] = train_state._sha256(path / "train_state.pt")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TrainStateError, match="cannot be loaded safely"):
        load_train_state(path, TinyRocaStandIn())
    assert not marker.exists()


def test_old_checkpoints_are_pruned(tmp_path):
    model = TinyRocaStandIn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for it in (1, 2, 3, 4):
        save_train_state(tmp_path, it, model, opt, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["iter_0000003",
                                                                        "iter_0000004"]
    assert (tmp_path / "last").read_text().strip() == "iter_0000004"


# ------------------------------------------------------------------------------ logs
def test_csv_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "losses.csv"
    log = CsvLossLogger(path)
    for it in range(1, 6):
        log.log(it, 0.1, 0.01, {"loss_a": 1.0 / it, "loss_b": 2.0})
    log.close()
    log = CsvLossLogger(path, resume_from=3)
    log.log(4, 0.1, 0.01, {"loss_a": 9.0, "loss_b": 2.0})
    log.close()
    data = read_loss_csv(path)
    assert data["iteration"].tolist() == [1, 2, 3, 4]
    assert data["loss_a"][-1] == 9.0 and data["total_loss"][-1] == 11.0
    with pytest.raises(ValueError, match="loss_c"):
        CsvLossLogger(path, resume_from=4).log(5, 0.1, 0.0, {"loss_c": 1.0})
    assert plot_loss_curves(path, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------ roca-train
def _tiny_dataset(root: Path) -> Path:
    """12 rendered 48x64 images (6 train, 6 val) via roca-make-dataset in a subprocess.

    A subprocess keeps the renderer's EGL context out of this process (importing
    torchvision after an EGL context was created crashes in this environment).
    """
    import subprocess
    import sys
    (root.parent / "render.yaml").write_text("min_visible_pixels: 20\n")
    cmd = [sys.executable, "-m", "roca_core.cli.make_dataset", "--out", str(root), "--images", "12",
           "--split-val", "0.5", "--height", "48", "--width", "64", "--focal", "58",
           "--images-per-scene", "3", "--config", str(root.parent / "render.yaml"), "--workers", "1",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return _tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def test_resume_with_workers_and_augmentation_is_exact(tmp_path, tiny_data):
    """Rendered data, colour jitter on, a loader worker: 4 straight == 2 + resume + 2, and
    the same as loading in the main process (augmentation is seeded per sample)."""
    def run(out: Path, iters: int, workers: int, resume: bool = False) -> Trainer:
        cfg = experiment(max_iter=iters, num_workers=workers, checkpoint_period=0)
        cfg.model = tiny_model_config()
        cfg.data = DataConfig(root=str(tiny_data), augment=True)
        trainer = Trainer(cfg, out, resume=resume, overwrite=not resume, progress=False,
                          log=lambda _m: None, export_inference_model=False)
        trainer.train()
        return trainer

    straight = run(tmp_path / "a", 4, workers=1)
    run(tmp_path / "b", 2, workers=1)
    resumed = run(tmp_path / "b", 4, workers=1, resume=True)
    in_main = run(tmp_path / "c", 4, workers=0)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
        assert torch.equal(value, in_main.model.state_dict()[key]), key
    np.testing.assert_array_equal(read_loss_csv(tmp_path / "a" / LOSS_CSV)["total_loss"],
                                  read_loss_csv(tmp_path / "b" / LOSS_CSV)["total_loss"])


def test_roca_train_cli_end_to_end_with_eval_and_resume(tmp_path, capsys, tiny_data):
    import yaml

    from roca_core.checkpoint import load_checkpoint
    from roca_core.cli.train import main
    from roca_core.config_io import to_dict

    data = tiny_data
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": to_dict(tiny_model_config()), "data": {"root": str(data)},
        "train": {"max_iter": 4, "ims_per_batch": 2, "warmup_iters": 2, "lr_steps": [3],
                  "base_lr": 0.02, "num_workers": 1, "checkpoint_period": 2, "eval_period": 4,
                  "eval_max_images": 3, "device": "auto", "out_dir": str(tmp_path / "unused")}}))
    out = tmp_path / "run"
    assert main(["--config", str(config), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["final_iteration"] == 4 and summary["device"] == "cpu"
    for name in ("losses.csv", "loss_curves.png", "model_final.safetensors",
                 "model_last.safetensors", "eval/iter_0000004.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval" / "iter_0000004.json").read_text())
    assert 0.0 <= report["alignment"]["class_mean"] <= 100.0
    model, model_cfg, extra = load_checkpoint(out / "model_final.safetensors")
    assert model_cfg == tiny_model_config() and extra["iteration"] == 4

    # a second fresh run into the same folder is refused; --resume continues at 4
    assert main(["--config", str(config), "--out", str(out), "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["--config", str(config), "--out", str(out), "--resume", "--iterations", "6",
                 "--eval-period", "0", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["start_iteration"] == 4 and summary["final_iteration"] == 6
    assert read_loss_csv(out / "losses.csv")["iteration"].tolist() == [1, 2, 3, 4, 5, 6]

    # a damaged last checkpoint stops --resume with a clear message
    last = find_last_checkpoint(out / "checkpoints")
    (last / "model.safetensors").write_bytes(b"garbage")
    assert main(["--config", str(config), "--out", str(out), "--resume", "--iterations", "8",
                 "--no-progress"]) == 1
    assert "corrupted or truncated" in capsys.readouterr().err


def test_extra_train_roots_join_the_training_set(tmp_path, tiny_data, capsys):
    """data.extra_train_roots (roca-train --extra-data): the training splits of several data
    sets one after the other, their class counts summed for the class weights, recorded in the
    checkpoint; the validation split stays data.root's; a missing extra root is a clear error."""
    from roca_core.checkpoint import load_checkpoint
    from roca_core.cli.train import main
    from roca_core.data.concat_dataset import ConcatRocaDataset
    from roca_core.data.loader import RocaDataset

    cfg = experiment(max_iter=2, num_workers=0, checkpoint_period=0)
    cfg.model = tiny_model_config()
    cfg.data = DataConfig(root=str(tiny_data), extra_train_roots=[str(tiny_data)], augment=False)
    trainer = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _m: None)
    trainer.train()
    one = RocaDataset(str(tiny_data), split="train")
    joined = trainer.train_dataset
    assert isinstance(joined, ConcatRocaDataset) and len(joined) == 2 * len(one) > 0
    np.testing.assert_array_equal(joined.class_counts(), 2 * one.class_counts())
    img_a, t_a = joined[0]
    img_b, t_b = joined[len(one)]  # the second set's first image: the same rendering here
    assert torch.equal(img_a, img_b) and torch.equal(t_a["boxes"], t_b["boxes"])
    _, _, extra = load_checkpoint(tmp_path / "run" / "model_final.safetensors")
    assert extra["extra_train_roots"] == [str(tiny_data)] and extra["data_root"] == str(tiny_data)
    with pytest.raises(ValueError, match="different classes"):
        ConcatRocaDataset([one, RocaDataset(str(tiny_data), split="train", class_names=("chair", "table"))])

    code = main(["--config", str(REPO / "config" / "small.yaml"), "--data", str(tiny_data), "--extra-data",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 1 and "nowhere" in capsys.readouterr().err


def test_roca_train_cli_rejects_a_bad_config(tmp_path, capsys):
    from roca_core.cli.train import main
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_iter: 0\n")
    assert main(["--config", str(bad)]) == 2
    assert "max_iter" in capsys.readouterr().err


def test_roca_train_cli_init_weights_override_must_exist(tmp_path, capsys):
    """--init-weights (a curriculum's next stage from a fresh clone) names a missing file."""
    from roca_core.cli.train import main
    code = main(["--config", str(REPO / "config" / "small_stage2.yaml"), "--init-weights",
                 str(tmp_path / "stage1.safetensors"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "stage1.safetensors': no such file" in capsys.readouterr().err


def test_roca_train_cli_missing_data_is_a_clear_error(tmp_path, capsys):
    from roca_core.cli.train import main
    code = main(["--config", str(REPO / "config" / "small.yaml"), "--data",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 1
    assert "nowhere" in capsys.readouterr().err


# ------------------------------------------------------------------------------ devices / env
def test_device_resolution_and_torchrun_environment(monkeypatch):
    from roca_core.training.distributed import env_dist_info, resolve_device
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert env_dist_info() == DistInfo(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_dist_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        env_dist_info()


def test_atomic_directory_replace(tmp_path):
    target = tmp_path / "ckpt"
    atomic_io.atomic_write_dir(target, lambda d: (d / "a.txt").write_text("v1"))
    atomic_io.atomic_write_dir(target, lambda d: (d / "b.txt").write_text("v2"))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]

    def broken(d: Path) -> None:
        (d / "c.txt").write_text("partial")
        raise RuntimeError("crash while filling")

    with pytest.raises(RuntimeError):
        atomic_io.atomic_write_dir(target, broken)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp/mkdtemp make 0600/0700 entries; the final files follow the umask instead."""
    import os
    import stat
    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_io.atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_io.atomic_open(tmp_path / "b.bin") as fh:
            fh.write(b"1")
        atomic_io.atomic_write_dir(tmp_path / "d", lambda d: (d / "c.txt").write_text("v"))
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(plain) == 0o640
        assert mode(tmp_path / "a.json") == mode(tmp_path / "b.bin") == 0o640
        assert mode(tmp_path / "d") == 0o750
    finally:
        os.umask(old)


def test_a_signal_stops_at_an_iteration_boundary_with_a_resumable_checkpoint(tmp_path):
    """SIGINT in the middle of iteration 3 -> checkpoint at 3; resuming to 6 == 6 straight."""
    import signal

    class SignalOnThirdStep(TinyRocaStandIn):
        calls = 0

        def forward(self, images, targets=None):
            SignalOnThirdStep.calls += 1
            if SignalOnThirdStep.calls == 3:
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-iteration
            return super().forward(images, targets)

    straight = run_standin(tmp_path / "a", max_iter=6, checkpoint_period=0)
    torch.manual_seed(123)
    trainer = Trainer(experiment(max_iter=6, checkpoint_period=0), tmp_path / "b",
                      model=SignalOnThirdStep(), train_dataset=SyntheticRocaData(8),
                      collate_fn=collate, progress=False, export_inference_model=False,
                      log=lambda _m: None)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started as a background job
    with pytest.raises(KeyboardInterrupt, match="signal"):
        trainer.train()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    assert find_last_checkpoint(tmp_path / "b" / "checkpoints").name == "iter_0000003"
    resumed = run_standin(tmp_path / "b", resume=True, max_iter=6, checkpoint_period=0)
    assert resumed.start_iter == 3
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_a_stop_signal_to_the_data_workers_too_still_saves_a_checkpoint(tmp_path):
    """``pkill -f roca-train``, ``kill -- -PGID`` or systemd signal the loader's workers as well:
    they must let it pass so the main process can stop at the boundary and save (a killed
    worker made the loader raise mid-iteration and the run ended without a checkpoint)."""
    import multiprocessing
    import signal
    import subprocess

    class TermAllOnThirdStep(TinyRocaStandIn):
        calls = 0

        def forward(self, images, targets=None):
            TermAllOnThirdStep.calls += 1
            if TermAllOnThirdStep.calls == 3:
                workers = multiprocessing.active_children()
                assert workers, "the loader should run worker processes here"
                # from another process, as pkill or systemd would: torch's workers exit quietly
                # only when the signal comes from their parent
                subprocess.run(["kill", "-TERM", *(str(w.pid) for w in workers)], check=True)
                time.sleep(0.5)  # let a worker die if it were going to
                os.kill(os.getpid(), signal.SIGTERM)
            return super().forward(images, targets)

    trainer = Trainer(experiment(max_iter=6, checkpoint_period=0, num_workers=1), tmp_path,
                      model=TermAllOnThirdStep(), train_dataset=SyntheticRocaData(8),
                      collate_fn=collate, progress=False, export_inference_model=False,
                      log=lambda _m: None)
    with pytest.raises(KeyboardInterrupt, match="signal"):
        trainer.train()
    assert find_last_checkpoint(tmp_path / "checkpoints").name == "iter_0000003"
