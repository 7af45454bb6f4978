"""The prepared GPU job (``scripts/gpu_run.sh``) and what it needs from roca_core on the GPU
image: retrieval without faiss, and a CPU dry run of the whole job."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from roca_core.data.flat_l2_index import NumpyFlatL2, flat_l2_index


def test_numpy_flat_l2_matches_brute_force_and_faiss():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(57, 16)).astype(np.float32)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    index = NumpyFlatL2(16)
    index.add(data[:30])
    index.add(data[30:])
    d2, idx = index.search(queries, 4)
    ref = ((queries[:, None] - data[None]) ** 2).sum(-1)
    assert idx.shape == (9, 4) and index.ntotal == 57
    np.testing.assert_array_equal(idx, np.argsort(ref, axis=1)[:, :4])
    np.testing.assert_allclose(d2, np.sort(ref, axis=1)[:, :4], rtol=1e-5)
    faiss = pytest.importorskip("faiss")
    f = faiss.IndexFlatL2(16)
    f.add(data)
    fd2, fidx = f.search(queries, 4)
    np.testing.assert_array_equal(idx, fidx)
    np.testing.assert_allclose(d2, fd2, rtol=1e-4, atol=1e-5)


def test_cad_database_retrieval_without_faiss(monkeypatch):
    from roca_core.data.cad_database import CadDatabase

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert isinstance(flat_l2_index(8), NumpyFlatL2)
    rng = np.random.default_rng(1)
    n = 6
    db = CadDatabase([f"m{i}" for i in range(n)], ["chair"] * 3 + ["table"] * 3,
                     ["__SYM_NONE"] * n, [f"/m{i}.obj" for i in range(n)],
                     np.zeros((n, 32, 32, 32), bool))
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    db.set_embeddings(emb, "test")
    ids, dist = db.lookup("table", emb[4] + 1e-3, k=2)
    assert ids[0][0] == "m4" and dist.shape == (1, 2) and dist[0, 0] < 0.01 < dist[0, 1]


# ---------------------------------------------------------------- schedule, parts, config
def _experiment(max_iter=4000, warmup=300, steps=(3200, 3700), batch=4):
    from roca_core.model.config import ModelConfig
    from roca_core.training.config import ExperimentConfig, TrainConfig

    return ExperimentConfig(model=ModelConfig(), train=TrainConfig(
        max_iter=max_iter, warmup_iters=warmup, lr_steps=steps, ims_per_batch=batch))


def test_fit_schedule_keeps_the_recipe_shape():
    from roca_core.gpu_job.config import TrainJob
    from roca_core.gpu_job.schedule_fit import fit_schedule

    exp, plan = fit_schedule(_experiment(), seconds=300.0, step_s=0.05,
                             tj=TrainJob(step_time_margin=1.25, checkpoints=4))
    assert plan["iterations"] == exp.train.max_iter == 4800  # 300 s / (0.05 s x 1.25)
    assert exp.train.warmup_iters == 360 and exp.train.lr_steps == (3840, 4440)
    assert exp.train.checkpoint_period == 1200 and plan["images_seen"] == 4800 * 4
    # Too little time: the floor, and decay points stay inside the run.
    exp, plan = fit_schedule(_experiment(), seconds=1.0, step_s=1.0, tj=TrainJob(min_iterations=3))
    assert exp.train.max_iter == 3 and all(0 < s < 3 for s in exp.train.lr_steps)
    exp, _ = fit_schedule(_experiment(), seconds=1e6, step_s=0.01, tj=TrainJob(max_iterations=100))
    assert exp.train.max_iter == 100
    with pytest.raises(ValueError, match="step time"):
        fit_schedule(_experiment(), 10.0, float("nan"), TrainJob())


def test_split_and_join_round_trip(tmp_path):
    from roca_core.gpu_job.file_split import join_file, split_file

    blob = np.random.default_rng(0).bytes(10_000)
    src = tmp_path / "model.safetensors"
    src.write_bytes(blob)
    manifest = split_file(src, tmp_path / "out", max_bytes=3000)
    parts = sorted((tmp_path / "out").glob("model.safetensors.part[0-9][0-9][0-9]"))
    assert [p.stat().st_size for p in parts] == [3000, 3000, 3000, 1000]
    assert join_file(manifest, tmp_path / "joined").read_bytes() == blob
    damaged = bytearray(parts[1].read_bytes())
    damaged[5] ^= 1
    parts[1].write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="part001 is damaged"):
        join_file(manifest, tmp_path / "joined2")
    assert not (tmp_path / "joined2").exists()
    whole = split_file(src, tmp_path / "whole", max_bytes=20_000)  # fits: one file, same name
    assert join_file(whole).read_bytes() == blob


def test_batch_pick_and_learning_rate_scaling():
    """The job trains at the benchmarked batch of most images per second, lr x sqrt(ratio)."""
    from roca_core.gpu_job.job import _train_step_s
    from roca_core.gpu_job.schedule_fit import pick_batch, with_batch

    def row(batch, ms, amp="bf16", preset="train"):
        return {"section": "train_step", "preset": preset, "amp": amp, "batch": batch, "ms": ms,
                "images_per_s": 1000.0 * batch / ms}

    rows = [row(16, 160.0), row(32, 250.0), row(64, 600.0), row(16, 100.0, amp="none"),
            row(64, 100.0, preset="paper"), {"section": "train_step", "preset": "train", "amp": "bf16",
                                             "batch": 128, "error": "CUDA out of memory"}]
    assert pick_batch(rows, "bf16") == (32, 0.25)  # 128 img/s beats 100 (16) and 107 (64)
    assert pick_batch(rows, "fp16") is None and pick_batch([], "bf16") is None
    # a tie goes to the smaller batch
    assert pick_batch([row(16, 100.0), row(32, 200.0)], "bf16") == (16, 0.1)
    exp = with_batch(_experiment(), 16)  # the test preset: 4 images per step
    assert exp.train.ims_per_batch == 16 and exp.train.base_lr == pytest.approx(_experiment().train.base_lr * 2)
    with pytest.raises(ValueError, match="batch"):
        with_batch(_experiment(), 0)
    # the planned step time: the row of that batch, else another batch's scaled in proportion
    assert _train_step_s(rows, "bf16", 32) == 0.25
    assert _train_step_s(rows, "none", 16) == 0.1
    assert _train_step_s([row(16, 160.0)], "bf16", 48) == pytest.approx(0.48)
    assert _train_step_s([], "bf16", 16) is None


def test_job_config_profiles_and_validation(tmp_path):
    from roca_core.config_io import ConfigError
    from roca_core.gpu_job.config import load_job_config

    gpu, dry = load_job_config("gpu"), load_job_config("dry_run")
    assert gpu.device == "cuda" and dry.device == "cpu" and dry.budget_minutes <= 3.0
    # both continue the committed demo model, so the dry run exercises the GPU run's warm start
    assert gpu.train.preset == dry.train.preset == "config/small_heads.yaml" and gpu.train.amp == "bf16"
    assert gpu.part_mb <= 16 and "paper" in gpu.bench.presets and 8 in gpu.bench.batches
    bad = tmp_path / "job.yaml"
    bad.write_text("gpu: {part_mb: 20}\n")
    with pytest.raises(ConfigError, match="part_mb"):
        load_job_config("gpu", bad)
    bad.write_text("gpu: {render: {imagez: 3}}\n")
    with pytest.raises(ConfigError, match="imagez"):
        load_job_config("gpu", bad)
    # the GPU run renders fresh rooms for each new model (seed derived from the initial weights)
    assert gpu.render.seed == dry.render.seed == -1
    bad.write_text("gpu: {render: {seed: -2}}\n")
    with pytest.raises(ConfigError, match="render.seed"):
        load_job_config("gpu", bad)
    # the heads trained alone go back onto the trained network; only graftable heads are accepted
    assert "yaw_head" in gpu.train.graft_heads and "retrieval_head" in gpu.train.graft_heads
    assert gpu.train.ims_per_batch in gpu.train.batch_candidates
    bad.write_text("gpu: {train: {batch_candidates: [16, 0]}}\n")
    with pytest.raises(ConfigError, match="batch_candidates"):
        load_job_config("gpu", bad)
    bad.write_text("gpu: {train: {graft_heads: [yaw_head, noc_head]}}\n")
    with pytest.raises(ConfigError, match="graft_heads.*noc_head"):
        load_job_config("gpu", bad)


def test_fresh_render_seed_follows_the_initial_weights(tmp_path):
    from roca_core.gpu_job.config import FRESH_SEED_BASE, fresh_render_seed

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"weights of one model")
    b.write_bytes(b"weights of the next model")
    seed_a = fresh_render_seed(a)
    assert seed_a == fresh_render_seed(str(a))  # reproducible
    assert seed_a != fresh_render_seed(b)  # a new model trains on new rooms
    assert FRESH_SEED_BASE <= min(seed_a, fresh_render_seed(b)) < FRESH_SEED_BASE + 1_000_000
    assert fresh_render_seed(None) == FRESH_SEED_BASE  # random start


def test_train_amp_is_validated():
    from roca_core.config_io import ConfigError
    from roca_core.training.config import TrainConfig

    TrainConfig(amp="bf16").validate()
    with pytest.raises(ConfigError, match="train.amp"):
        TrainConfig(amp="fp8").validate()


# ---------------------------------------------------------------- the job itself
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
DRY_RUN_LIMIT_S = 180.0


def _run(args, env_extra, timeout):
    import os
    import subprocess

    env = dict(os.environ, PYTHON=sys.executable, **env_extra)
    env.pop("ROCA_GPU_JOB_T0", None)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _demo_model_loads() -> bool:
    from roca_core.checkpoint import load_checkpoint
    try:
        load_checkpoint(REPO / "models" / "roca_demo.safetensors")
    except Exception:  # noqa: BLE001 - e.g. the model code changed and the demo is not retrained yet
        return False
    return True


def test_gpu_run_without_cuda_says_so(tmp_path, roca_home):
    import json
    import os

    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = _run([sys.executable, "-m", "roca_core.cli.gpu_job", str(tmp_path / "out"),
                "--work", str(tmp_path / "work")], {"ROCA_HOME": os.environ["ROCA_HOME"]}, 120)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "CUDA is not available" in res.stderr and "--dry-run" in res.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "CUDA is not available" in summary["failures"][0]
    res = _run(["bash", "scripts/gpu_run.sh"], {}, 30)
    assert res.returncode == 2 and "usage" in res.stderr


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_gpu_run_dry_run_renders_benchmarks_trains_evaluates(tmp_path, roca_home):
    """The whole job on the CPU with tiny sizes, through scripts/gpu_run.sh."""
    import json
    import math
    import os

    import torch
    import yaml

    out, work = tmp_path / "out", tmp_path / "work"
    res = _run(["bash", "scripts/gpu_run.sh", str(out), "--dry-run", "--work", str(work)],
               {"ROCA_HOME": os.environ["ROCA_HOME"]}, 400)
    log = (out / "job.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    demo_ok = _demo_model_loads()
    expected = [] if demo_ok else ["evaluation of the demo model"]
    assert summary["failures"] == expected, log[-4000:]
    assert res.returncode == (0 if demo_ok else 1), log[-4000:]
    assert summary["total_s"] <= DRY_RUN_LIMIT_S + 5, summary["phases_s"]

    env = json.loads((out / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["voxeliser"] and env["egl_renderer"]
    assert f"torch {torch.__version__}" in log and "voxeliser backend" in log
    assert summary["train_voxeliser"].startswith("torch")  # the GPU image's backend

    # Benchmark: every configured row measured, with plausible numbers.
    rows = json.loads((out / "bench.json").read_text())
    fwd = {(r["preset"], r["amp"], r["batch"]): r for r in rows if r["section"] == "forward"}
    assert set(fwd) == {("small", "none", 1), ("paper", "none", 1)}
    for r in rows:
        assert "error" not in r, r
        assert math.isfinite(r["ms"]) and r["ms"] > 0 and r["images_per_s"] > 0
    for r in fwd.values():
        assert r["input"] == "96x128" and set(r["stages_ms"]) == {
            "backbone_rpn", "roi_heads", "depth", "alignment", "retrieval"}
        assert sum(r["stages_ms"].values()) > 0 and 0 <= r["dets_per_image"] <= 5
    # the training step at the profile's batch and at each other candidate
    steps = {r["batch"]: r for r in rows if r["section"] == "train_step"}
    assert set(steps) == {2, 3}
    assert all(r["preset"] == "train" and r["amp"] == "bf16" and math.isfinite(r["loss"]) for r in steps.values())
    (pred,) = [r for r in rows if r["section"] == "predict"]
    assert pred["input"] == "480x640" and "held-out image" in pred["note"]
    assert "| forward | paper | 96x128 | none | 1 |" in (out / "bench.md").read_text()

    # Data: the render in the work folder, its last room held out, rooms of a seed derived from
    # the initial weights (the demo model), named in the log and the reproduction line.
    from roca_core.gpu_job.config import fresh_render_seed

    info = json.loads((work / "data" / "dataset_info.json").read_text())
    assert info["splits"]["train"]["images"] == 20 and info["splits"]["val"]["images"] == 10
    seed = fresh_render_seed(REPO / "models" / "roca_demo.safetensors")
    assert info["seed"] == seed and f"render seed {seed}, derived from the initial weights" in log
    assert f"--render-seed {seed} " in summary["repro"]

    # Training: the preset's recipe, fitted and run with bf16 autocast.
    cfg = yaml.safe_load((out / "train_config.yaml").read_text())
    preset = yaml.safe_load((REPO / "config" / "small.yaml").read_text())
    assert cfg["train"]["amp"] == "bf16" and 2 <= cfg["train"]["max_iter"] <= 3
    # ... at the benchmarked batch of most images/s, the learning rate scaled by its square root
    best = max(steps, key=lambda b: (steps[b]["images_per_s"], -b))
    assert summary["train_batch"]["chosen_by"] == "benchmark"
    assert cfg["train"]["ims_per_batch"] == summary["train_batch"]["batch"] == best
    assert cfg["train"]["base_lr"] == pytest.approx(preset["train"]["base_lr"] * math.sqrt(best / 2))
    assert f"--batch {best} " in summary["repro"] and f"train batch {best} at lr" in log
    assert cfg["model"]["image_height"] == 96 and cfg["data"]["root"] == str(work / "data")
    trained = summary["train"]
    assert 1 <= trained["final_iteration"] <= cfg["train"]["max_iter"]
    losses = (out / "losses.csv").read_text().strip().splitlines()
    assert len(losses) == trained["final_iteration"] + 1
    assert all(math.isfinite(v) for v in trained["last_losses"].values()) and trained["last_losses"]

    # Evaluation on the held-out room, like roca-eval.
    report = json.loads((out / "eval_trained.json").read_text())
    assert report["num_images"] == 10
    assert 0.0 <= report["alignment"]["class_mean"] <= 100.0
    assert 0.0 <= report["detection"]["box_ap50"] <= 100.0
    assert math.isfinite(report["depth"]["abs_rel"]) and report["depth"]["abs_rel"] > 0
    if demo_ok:
        assert json.loads((out / "eval_demo.json").read_text())["num_images"] == 10
        assert summary["beats_demo"] in (True, False)
    md = (out / "summary.md").read_text()
    assert "## Benchmark" in md and "## Training" in md and "## Held-out evaluation" in md

    # The shipped model is the trained network with the demo model's heads put back, in parts no
    # larger than the profile's part_mb that join back to that file.
    from roca_core.checkpoint import load_checkpoint
    from roca_core.gpu_job.file_split import join_file

    assert summary["graft"]["modules"] == ["yaw_head", "centre_head", "up_head", "class_head", "shape_head",
                                           "retrieval_head"]
    assert summary["model"] == summary["graft"]["model"] == "model_grafted.safetensors"
    assert "heads put back from" in md
    manifest = out / summary["model_manifest"]
    parts = json.loads(manifest.read_text())["parts"]
    assert len(parts) >= 2 and all(p["size"] <= 4 * 2 ** 20 for p in parts)
    joined = join_file(manifest, tmp_path / "joined.safetensors")
    assert joined.read_bytes() == (work / "train" / summary["model"]).read_bytes()
    model, model_cfg, _ = load_checkpoint(joined)
    assert model_cfg.image_height == 96
    raw, _, _ = load_checkpoint(work / "train" / trained["model"])
    demo, _, _ = load_checkpoint(REPO / "models" / "roca_demo.safetensors")
    for name in ("yaw_head", "centre_head", "class_head", "retrieval_head"):
        got, want = getattr(model, name).state_dict(), getattr(demo, name).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    # ... and the network itself is the trained one, not the demo model's
    got, want = model.backbone.state_dict(), raw.backbone.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(got[k], demo.backbone.state_dict()[k]) for k in got)

    # Only small files come back: no data, nothing over 16 MB.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in files)
    assert not [p for p in files if p.suffix in (".jpg", ".npy")]


# ---------------------------------------------------------------- the GPU image's code paths
def test_gpu_run_train_only_call_skips_benchmark_and_evaluation(tmp_path, roca_home):
    """--step-seconds plans from an earlier run's step time without benchmarking, and --no-eval
    leaves the evaluation to another machine: a short second GPU call spends its time training."""
    import json
    import os

    import yaml

    import shutil

    out, work = tmp_path / "out", tmp_path / "work"
    # a second call goes on from the first call's model (here: a copy of the demo model)
    first = tmp_path / "first_call_model.safetensors"
    shutil.copy(REPO / "models" / "roca_demo.safetensors", first)
    # ... on rooms of another seed, with a preset that names local data sets the GPU machine lacks
    res = _run(["bash", "scripts/gpu_run.sh", str(out), "--dry-run", "--work", str(work),
                "--step-seconds", "2.0", "--batch", "3", "--no-eval", "--init-weights", str(first),
                "--preset", "config/small_stage6.yaml", "--render-seed", "3", "--render-images", "24"],
               {"ROCA_HOME": os.environ["ROCA_HOME"]}, 300)
    log = (out / "job.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert res.returncode == 0 and summary["failures"] == [], log[-4000:]
    assert "benchmark skipped: planning with --step-seconds 2.0" in log and "evaluation skipped" in log
    assert not (out / "bench.json").exists() and not list(out.glob("eval_*"))
    assert " bench| " not in log and "bench: started" not in log
    # planned from the given step time x the profile's margin (1.3), capped at 3 iterations
    assert summary["train_plan"]["benchmarked_step_s"] == 2.0
    assert summary["train_plan"]["planned_step_s"] == 2.6
    cfg = yaml.safe_load((out / "train_config.yaml").read_text())
    assert summary["train"]["final_iteration"] >= 1 and cfg["train"]["max_iter"] <= 3
    assert (work / "train" / summary["train"]["model"]).is_file() and summary["model_manifest"]
    assert summary["graft"]["heads_from"] == str(first.resolve())  # the heads of the model it continued
    assert "--step-seconds 2 --batch 3 --no-eval --init-weights" in summary["repro"]
    # --batch: 3 images per step instead of the profile's 2, the learning rate x sqrt(3 / 2)
    preset_lr = yaml.safe_load((REPO / "config" / "small_stage6.yaml").read_text())["train"]["base_lr"]
    assert summary["train_batch"]["chosen_by"] == "--batch" and cfg["train"]["ims_per_batch"] == 3
    assert cfg["train"]["base_lr"] == pytest.approx(preset_lr * 1.5 ** 0.5)
    assert "--render-seed 3 --render-images 24 " in summary["repro"]
    info = json.loads((work / "data" / "dataset_info.json").read_text())
    assert info["seed"] == 3 and info["num_images"] == 24
    assert "render: 24 images of the rooms of seed 3" in log
    assert cfg["data"]["extra_train_roots"] == [] and cfg["data"]["root"] == str(work.resolve() / "data")
    assert cfg["train"]["init_weights"] == str(first.resolve())
    assert f"train starts from {first.resolve()}" in log and f"initial weights from {first.resolve()}" in log
    # The command the job prints when its deadline cuts a schedule short resumes this run from its
    # last checkpoint (here the schedule was finished, so the trainer has nothing left to do).
    from roca_core.gpu_job.job import unfinished_schedule

    final = summary["train"]["final_iteration"]
    hint = unfinished_schedule({"lr_steps": [final + 5], "iterations": final + 10}, final,
                               out / "train_config.yaml", work, (str(first.resolve()), ["yaw_head", "class_head"]))
    assert hint is not None and hint["lr_steps_not_reached"] == [final + 5]
    grafted = work / "train" / "model_grafted.safetensors"
    grafted.unlink()  # the job's graft; the command makes it again after finishing the schedule
    resumed = _run(["bash", "-c", hint["resume"]], {}, 240)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"iterations {final} -> {cfg['train']['max_iter']}" in resumed.stdout + resumed.stderr
    assert "yaw_head, class_head from" in resumed.stdout and grafted.is_file()
    bad = _run(["bash", "scripts/gpu_run.sh", str(tmp_path / "o2"), "--dry-run", "--step-seconds", "0"], {}, 60)
    assert bad.returncode == 2 and "--step-seconds must be > 0" in bad.stderr
    bad = _run(["bash", "scripts/gpu_run.sh", str(tmp_path / "o6"), "--dry-run", "--batch", "0"], {}, 60)
    assert bad.returncode == 2 and "--batch must be >= 1" in bad.stderr
    bad = _run(["bash", "scripts/gpu_run.sh", str(tmp_path / "o3"), "--dry-run", "--init-weights",
                str(tmp_path / "missing.safetensors")], {}, 60)
    assert bad.returncode == 2 and "--init-weights: checkpoint not found" in bad.stderr
    bad = _run(["bash", "scripts/gpu_run.sh", str(tmp_path / "o4"), "--dry-run", "--render-seed", "-1"], {}, 60)
    assert bad.returncode == 2 and "--render-seed must be >= 0" in bad.stderr
    bad = _run(["bash", "scripts/gpu_run.sh", str(tmp_path / "o5"), "--dry-run", "--render-images", "5"], {}, 60)
    assert bad.returncode == 2 and "need 0 < heldout_images < images" in bad.stderr


def test_unfinished_schedule_is_reported_with_its_resume_command(tmp_path):
    """A deadline that stops training before a learning-rate step leaves the model at the full
    rate: the job says so, in the log and summary.md, with the command that finishes the run."""
    from roca_core.gpu_job.job import unfinished_schedule
    from roca_core.gpu_job.report import summary_markdown

    plan = {"iterations": 1606, "lr_steps": [1241, 1460], "seconds": 400.0, "benchmarked_step_s": 0.2,
            "planned_step_s": 0.26, "preset_iterations": 4400, "schedule_scale": 0.365, "warmup_iters": 36}
    cfg = tmp_path / "train_config.yaml"
    (tmp_path / "site").mkdir()
    hint = unfinished_schedule(plan, 1230, cfg, tmp_path)
    assert hint["lr_steps_not_reached"] == [1241, 1460]
    assert f"--config {cfg} --resume" in hint["resume"] and f"PYTHONPATH={tmp_path / 'site'}:" in hint["resume"]
    assert "graft_heads" not in hint["resume"]
    grafting = unfinished_schedule(plan, 1230, cfg, tmp_path, ("/m/demo.safetensors", ["yaw_head", "up_head"]))
    assert grafting["resume"].startswith(hint["resume"] + " && ")
    assert grafting["resume"].endswith(f"-m roca_core.cli.graft_heads --network {tmp_path / 'train' / 'model_final.safetensors'}"
                                       f" --heads /m/demo.safetensors --out {tmp_path / 'train' / 'model_grafted.safetensors'}"
                                       " --modules yaw_head,up_head")
    assert unfinished_schedule(plan, 1300, cfg, tmp_path)["lr_steps_not_reached"] == [1460]
    assert unfinished_schedule(plan, 1500, cfg, tmp_path) is None  # every step reached
    assert unfinished_schedule(plan, 1606, cfg, tmp_path) is None  # finished
    md = summary_markdown({"profile": "gpu", "train_plan": plan,
                           "train": {"final_iteration": 1230, "planned_iterations": 1606, "unfinished": hint}})
    assert "**unfinished**" in md and hint["resume"] in md
    assert "unfinished" not in summary_markdown({"profile": "gpu", "train_plan": plan,
                                                 "train": {"final_iteration": 1606, "planned_iterations": 1606}})


def test_pure_torch_voxeliser_takes_autocast_dtypes():
    """Without pytorch3d (the GPU image) autocast hands the voxeliser half-precision NOCs."""
    import torch

    from roca_core.geometry.voxelize import voxelize_points_torch

    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 500, 3, generator=g) - 0.5
    w = torch.rand(2, 500, generator=g)
    for dtype in (torch.float16, torch.bfloat16):
        grid = voxelize_points_torch(pts.to(dtype), w)
        assert grid.dtype == torch.float32  # splatted in float32 from the rounded points
        torch.testing.assert_close(grid, voxelize_points_torch(pts.to(dtype).float(), w))
    assert voxelize_points_torch(pts.double(), w.double()).dtype == torch.float64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_model_runs_under_autocast_with_the_pure_torch_voxeliser(dtype):
    """The node's half_precision (float16 autocast) and the job's bf16, on the GPU image's
    backends (pure-torch voxeliser); CPU autocast stands in for CUDA's here."""
    import dataclasses

    import torch

    from roca_core.model import RocaModel, load_preset
    from roca_core.model.synthetic import make_batch

    cfg = dataclasses.replace(load_preset("small"), image_height=96, image_width=128,
                              voxelize_backend="torch", detections_per_image=5)
    torch.manual_seed(0)
    model = RocaModel(cfg)
    images, targets = make_batch(96, 128, 2, 3, cfg.num_classes, seed=0)
    with torch.autocast("cpu", dtype=getattr(torch, dtype)):
        model.train()
        losses = model(images, targets)
        sum(losses.values()).backward()
        model.eval()
        with torch.no_grad():
            out = model(images, intrinsics=[t["K"] for t in targets])
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert all(torch.isfinite(o["translations"]).all() and o["noc_embeddings"].dtype == torch.float32
               for o in out)


def test_cores_split_between_benchmark_and_render(monkeypatch, tmp_path):
    """16 cores (the GPU machine): 2 pinned to the benchmark, 14 render workers on the rest;
    a machine without cores to spare pins nothing."""
    import os

    from roca_core.gpu_job import job as job_mod
    from roca_core.gpu_job.children import Child, JobLog
    from roca_core.gpu_job.config import load_job_config

    gpu = load_job_config("gpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    bench, render, workers = job_mod._core_split(gpu)
    assert bench == {0, 1} and render == set(range(2, 16)) and workers == 14
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert job_mod._core_split(gpu) == (set(), set(), 2)
    monkeypatch.undo()

    log = JobLog(tmp_path / "job.log", 0.0)
    child = Child("probe", ["-c", "import os; print('cores', sorted(os.sched_getaffinity(0)))"], log, {0})
    assert child.wait(60) == 0
    log.close()
    assert "probe| cores [0]" in (tmp_path / "job.log").read_text()
