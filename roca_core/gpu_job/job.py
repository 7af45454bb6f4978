"""The GPU job from start to outputs, inside a hard time budget (see :mod:`roca_core.gpu_job`).

Timeline (gpu profile, 9 minutes): environment check; the render of the training and held-out
rooms on all cores but two while the benchmark runs on the GPU from those two; the
preset's schedule fitted to the minutes left; training with bf16 autocast until the plan is
done or the deadline (SIGINT: checkpoint, then exit), while the committed demo model is
evaluated on the held-out rooms beside it; the heads trained alone put back from the initial
weights (``train.graft_heads``); the new model's evaluation on the same rooms; the model split
into parts; ``summary.md``/``summary.json``.
Everything the job writes to OUT_DIR is small (data and checkpoints stay in the work folder).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from roca_core.config_io import to_dict
from roca_core.gpu_job.children import Child, JobLog
from roca_core.gpu_job.config import GpuJobConfig, fresh_render_seed, resolve_repo_path
from roca_core.gpu_job.environment import (JobEnvironmentError, check_environment, describe,
                                           voxeliser_backend)
from roca_core.gpu_job.file_split import split_file
from roca_core.gpu_job.report import summary_markdown
from roca_core.gpu_job.schedule_fit import (base_experiment, fit_schedule, pick_batch, train_step_rows,
                                            with_batch)
from roca_core.paths import REPO_ROOT

OUT_LIMIT_BYTES = 16 * 2 ** 20
TRAIN_STARTUP_S = 15.0  # imports, dataset index, class counts, loader workers
GRAFTED_MODEL = "model_grafted.safetensors"  # the trained network with the heads put back: what the job ships


@dataclasses.dataclass
class JobRequest:
    """What the command line asked for."""

    out_dir: Path
    work_dir: Path
    job: GpuJobConfig
    profile: str
    minutes: float
    preset: Path
    t0: float
    # Seconds per training step measured on an earlier run: skips the benchmark (a short
    # second call that only trains). None: benchmark, and plan with its train_step row.
    step_seconds: "float | None" = None
    # False: no roca-eval here (the model is evaluated elsewhere); its reserve goes to training.
    evaluate: bool = True
    # The model training continues (a second call chains on the first's model); None: the
    # preset's train.init_weights, the committed demo model.
    init_weights: "Path | None" = None
    # Command-line overrides of the profile's render seed and size (for the reproduction line;
    # ``job.render`` already holds them).
    render_seed: "int | None" = None
    render_images: "int | None" = None
    # Images per training step (--batch; the job sets the benchmark's pick here for the
    # reproduction line). None: the profile's train.batch_candidates or ims_per_batch decide.
    batch: "int | None" = None


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _core_split(job: GpuJobConfig) -> tuple[set[int], set[int], int]:
    """(benchmark cores, render cores, render workers); empty sets: no pinning, which is what
    a machine with no cores to spare gets (pinning there only makes both wait for each other)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    if len(cpus) < job.bench.cores + 2 or not hasattr(os, "sched_setaffinity"):
        return set(), set(), max(1, min(job.render.workers, len(cpus)))
    bench = set(cpus[:job.bench.cores])
    render = set(cpus[job.bench.cores:]) or set(cpus)
    return bench, render, max(1, min(job.render.workers, len(render)))


def _render_args(job: GpuJobConfig, data: Path, workers: int) -> list[str]:
    from roca_core.data.config import RenderConfig

    r = job.render
    default = RenderConfig()
    per_scene = default.images_per_scene
    scenes = math.ceil(r.images / per_scene)
    heldout_scenes = min(scenes - 1, max(1, round(r.heldout_images / per_scene)))
    args = ["-m", "roca_core.cli.make_dataset", "--out", str(data), "--images", str(r.images),
            "--seed", str(r.seed), "--workers", str(workers), "--split-val", repr(heldout_scenes / scenes),
            "--no-progress"]
    if r.height and r.width:
        focal = default.camera.focal * r.width / default.camera.width
        args += ["--height", str(r.height), "--width", str(r.width), "--focal", f"{focal:.3f}"]
    return args


def _count_images(data: Path) -> int:
    root = data / "images"
    if not root.is_dir():
        return 0
    return sum(len(os.listdir(d / "color")) for d in root.iterdir() if (d / "color").is_dir())


def _last_csv_row(path: Path) -> "dict[str, str] | None":
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    return rows[-1] if rows else None


def _train_step_s(rows: list[dict], amp: str, batch: int) -> "float | None":
    """Benchmarked seconds per step of the trained preset at ``batch``, with its amp when
    measured; from another batch's row scaled in proportion when that batch was not timed (an
    overestimate where the GPU is launch-bound, so the schedule still fits)."""
    steps = sorted(train_step_rows(rows), key=lambda r: (r["batch"] != batch, r.get("amp") != amp))
    if not steps:
        return None
    return steps[0]["ms"] / 1000.0 * batch / steps[0]["batch"]


def _eval_headline(report: dict) -> dict[str, Any]:
    def get(*keys: str) -> Any:
        d: Any = report
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d
    return {"alignment_class_mean": get("alignment", "class_mean"),
            "alignment_instance_mean": get("alignment", "instance_mean"),
            "retrieval_aware_class_mean": get("retrieval_aware", "class_mean"),
            "box_ap50": get("detection", "box_ap50"), "mask_ap50": get("detection", "mask_ap50"),
            "depth_abs_rel": get("depth", "abs_rel"), "num_images": get("num_images"),
            "seconds_per_image": get("seconds_per_image")}


def _beats(new: dict, old: dict) -> "bool | None":
    """Higher class-mean alignment; on a tie, higher box AP50."""
    a, b = new.get("alignment_class_mean"), old.get("alignment_class_mean")
    if a is None or b is None:
        return None
    if abs(a - b) > 1e-9:
        return a > b
    return (new.get("box_ap50") or 0.0) > (old.get("box_ap50") or 0.0)


def unfinished_schedule(plan: dict, final_iteration: int, train_yaml: Path, work: Path,
                        graft: "tuple[str, list[str]] | None" = None) -> "dict | None":
    """A run the deadline stopped before one of its learning-rate steps has not decayed its rate:
    -> the steps it missed and the command that finishes the same schedule from the last
    checkpoint on the same machine (data and checkpoints are in ``work``), followed, when
    ``graft`` = (heads checkpoint, modules) is given, by the graft the job would have made;
    None when it did not."""
    missed = [int(step) for step in plan.get("lr_steps", []) if int(step) > final_iteration]
    if not missed:  # fit_schedule puts every step before the last iteration: a finished run has none left
        return None
    site = work / "site"
    path = f"{site}:{REPO_ROOT}" if site.is_dir() else str(REPO_ROOT)
    q = shlex.quote
    python = f"PYTHONPATH={q(path)} ROCA_HOME={q(str(work / 'roca_home'))} {q(sys.executable)}"
    command = f"cd {q(str(REPO_ROOT))} && {python} -m roca_core.cli.train --config {q(str(train_yaml))} --resume"
    if graft is not None:
        train_dir = work / "train"
        command += (f" && {python} -m roca_core.cli.graft_heads --network {q(str(train_dir / 'model_final.safetensors'))}"
                    f" --heads {q(graft[0])} --out {q(str(train_dir / GRAFTED_MODEL))}"
                    f" --modules {','.join(graft[1])}")
    return {"lr_steps_not_reached": missed, "resume": command}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"


def run_job(req: JobRequest) -> int:
    """Run every phase; -> 0 when all succeeded, 1 when one failed, 3 when the machine cannot
    run the job (no CUDA, a missing package, no EGL). The outputs so far are always written."""
    out, work, job = req.out_dir, req.work_dir, req.job
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = JobLog(out / "job.log", req.t0)
    deadline = req.t0 + 60.0 * job.budget_minutes
    summary: dict[str, Any] = {"profile": req.profile, "budget_minutes": job.budget_minutes,
                               "train_minutes_requested": req.minutes, "preset": str(req.preset),
                               "git": _git_commit(), "phases_s": {}, "failures": []}
    phase_t = time.time()
    evals: dict[str, Child] = {}  # evaluations in flight; none outlives the job

    def phase_done(name: str) -> None:
        nonlocal phase_t
        summary["phases_s"][name] = round(time.time() - phase_t, 1)
        phase_t = time.time()

    def fail(what: str) -> None:
        summary["failures"].append(what)
        log(f"FAILED: {what}")

    try:
        log(f"roca GPU job, profile {req.profile}: out {out}, work {work}, budget "
            f"{job.budget_minutes} min ({deadline - time.time():.0f} s left), train preset {req.preset}")
        env = check_environment(job.device)
        summary["environment"] = env
        (out / "environment.json").write_text(json.dumps(env, indent=1))
        log(describe(env))
        phase_done("environment")

        exp = base_experiment(job, req.preset)
        if req.init_weights is not None:
            exp.train.init_weights = str(req.init_weights)
        log(f"train starts from {exp.train.init_weights or 'random weights'}")
        # (initial weights, heads) to put back after training; None: no graft
        graft = (str(resolve_repo_path(exp.train.init_weights)), job.train.graft_heads) \
            if job.train.graft_heads and exp.train.init_weights else None
        if job.train.graft_heads and graft is None:
            log("graft skipped: training starts from random weights, there are no heads to put back")
        if job.render.seed < 0:  # fresh rooms for this model (render.seed: -1)
            job.render.seed = fresh_render_seed(exp.train.init_weights)
            req.render_seed = job.render.seed
            log(f"render seed {job.render.seed}, derived from the initial weights")
        log(f"render: {job.render.images} images of the rooms of seed {job.render.seed} "
            f"(about {job.render.heldout_images} held out)")
        summary["train_voxeliser"] = voxeliser_backend(exp.model.voxelize_backend)
        log(f"voxeliser backend of the trained preset (voxelize_backend: {exp.model.voxelize_backend}): "
            f"{summary['train_voxeliser']}")
        (out / "job_config.json").write_text(json.dumps(to_dict(job), indent=1))
        base_yaml = _write_yaml(work / "train_base.yaml", to_dict(exp))
        data = work / "data"
        if data.exists():
            shutil.rmtree(data)
        child_env = {"ROCA_HOME": str(work / "roca_home")}
        bench_cpus, render_cpus, workers = _core_split(job)

        reserve_s = job.eval.reserve_seconds if req.evaluate else 20.0  # evaluation, or the model's write-out

        # Render (CPU) and benchmark (GPU) at the same time, on separate cores.
        render = Child("render", _render_args(job, data, workers), log, render_cpus, child_env)
        rows: list[dict] = []
        if req.step_seconds is None:
            bench_budget = max(30.0, 0.45 * (deadline - time.time()))
            bench = Child("bench", ["-m", "roca_core.gpu_job.benchmark", "--job-config", str(out / "job_config.json"),
                                    "--train-config", str(base_yaml), "--out", str(out), "--data", str(data),
                                    "--wait-for-data", f"{0.6 * bench_budget:.0f}"], log, bench_cpus, child_env)
            if bench.wait(bench_budget) != 0:
                fail("benchmark (see the bench| lines of job.log)")
            rows = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else []
            bad_rows = [r for r in rows if "error" in r]
            if bad_rows:
                fail(f"{len(bad_rows)} benchmark row(s) failed: {bad_rows[0]['error'][:200]}")
        else:
            log(f"benchmark skipped: planning with --step-seconds {req.step_seconds}")
        summary["bench_rows"] = rows
        phase_done("benchmark")

        # Images per step: --batch, else the benchmarked candidate of most images per second.
        preset_batch, preset_lr = exp.train.ims_per_batch, exp.train.base_lr
        picked = pick_batch(rows, job.train.amp) if req.batch is None and job.train.batch_candidates else None
        if picked is not None:
            req.batch = picked[0]
        if req.batch is not None and req.batch != preset_batch:
            exp = with_batch(exp, req.batch)
        summary["train_batch"] = {
            "batch": exp.train.ims_per_batch, "base_lr": exp.train.base_lr,
            "chosen_by": "benchmark" if picked else "--batch" if req.batch is not None else "profile",
            "candidates": {str(r["batch"]): r["images_per_s"] for r in train_step_rows(rows, job.train.amp)}}
        log(f"train batch {exp.train.ims_per_batch} at lr {exp.train.base_lr:.4g} "
            f"({summary['train_batch']['chosen_by']}; the profile's {preset_batch} at {preset_lr:g}; "
            f"benchmarked images/s by batch: {summary['train_batch']['candidates'] or 'none'})")

        render_left = deadline - time.time() - reserve_s - 30.0
        rc = render.wait(render_left, heartbeat=lambda: f"{_count_images(data)} of {job.render.images} images",
                         every_s=15.0)
        info_path = data / "dataset_info.json"
        if rc != 0 or not info_path.is_file():
            fail("render (see the render| lines of job.log)")
            return _finish(req, log, summary, out)
        info = json.loads(info_path.read_text())
        summary["render"] = {k: info[k] for k in ("num_images", "workers", "splits", "seconds",
                                                  "images_per_second", "cad_models_used")}
        log(f"render: {info['splits']} in {info['seconds']:.0f} s ({info['images_per_second']:.1f} images/s "
            f"on {info['workers']} workers)")
        phase_done("render_wait")

        # The committed demo model's evaluation needs nothing from training: it runs beside it
        # on a few cores (evaluation is mostly Python), so only the new model's is left for the end.
        demo = resolve_repo_path(job.eval.compare_checkpoint)
        if req.evaluate and demo.is_file():
            evals["demo"] = _eval_child("demo", demo, data, out, job, log, child_env)

        # Train: the preset's schedule fitted to the time left.
        stop_at = deadline - reserve_s
        seconds = min(60.0 * req.minutes, stop_at - time.time() - TRAIN_STARTUP_S)
        step_s = req.step_seconds or _train_step_s(rows, job.train.amp, exp.train.ims_per_batch)
        if seconds < 5.0:
            fail(f"no time left to train ({seconds:.0f} s)")
            return _finish(req, log, summary, out)
        if step_s is None:
            log("train: no benchmarked step time; planning the minimum iterations, the deadline stops it")
            step_s = seconds / job.train.min_iterations / job.train.step_time_margin
        exp.data.root = str(data)
        exp.train.out_dir = str(work / "train")
        exp, plan = fit_schedule(exp, seconds, step_s, job.train)
        summary["train_plan"] = plan
        log(f"train: plan {plan}")
        train_yaml = _write_yaml(out / "train_config.yaml", to_dict(exp))
        train_dir = work / "train"
        trainer = Child("train", ["-m", "roca_core.cli.train", "--config", str(train_yaml), "--overwrite",
                                  "--no-progress", "--summary-json", str(train_dir / "summary.json")],
                        log, None, child_env)

        def train_status() -> "str | None":
            row = _last_csv_row(train_dir / "losses.csv")
            if not row:
                return "starting"
            return (f"iteration {row['iteration']}/{plan['iterations']}, loss {float(row['total_loss']):.3f}, "
                    f"lr {row['lr']}, {time.time() - trainer.started:.0f} s")
        train_rc = trainer.wait(stop_at - time.time(), heartbeat=train_status,
                               every_s=30.0 if job.device == "cuda" else 10.0, on_timeout="interrupt",
                               grace_s=min(60.0, max(10.0, 0.3 * reserve_s)))
        model = next((p for p in (train_dir / "model_final.safetensors", train_dir / "model_last.safetensors")
                      if p.is_file()), None)
        train_summary = json.loads((train_dir / "summary.json").read_text()) \
            if (train_dir / "summary.json").is_file() else {}
        last = _last_csv_row(train_dir / "losses.csv") or {}
        summary["train"] = {"exit_code": train_rc, "model": model.name if model else None,
                            "final_iteration": int(last.get("iteration", 0) or 0),
                            "planned_iterations": plan["iterations"],
                            "seconds": round(time.time() - trainer.started, 1),
                            "mean_step_time_s": train_summary.get("mean_step_time_s"),
                            "mean_data_time_s": train_summary.get("mean_data_time_s"),
                            "last_losses": train_summary.get("last_losses")
                            or {k: float(v) for k, v in last.items() if k.startswith("loss_") and v}}
        unfinished = unfinished_schedule(plan, summary["train"]["final_iteration"], train_yaml, work, graft)
        if unfinished:
            summary["train"]["unfinished"] = unfinished
            log(f"WARNING: the deadline stopped training at iteration {summary['train']['final_iteration']}, before "
                f"its learning-rate step(s) {unfinished['lr_steps_not_reached']}, so the model is at the full rate. "
                f"Finish the schedule on this machine with: {unfinished['resume']}")
        for name in ("losses.csv", "loss_curves.png", "summary.json"):
            if (train_dir / name).is_file():
                shutil.copyfile(train_dir / name, out / ("train_" + name if name == "summary.json" else name))
        if model is None:
            fail(f"training wrote no model (exit code {train_rc})")
            return _finish(req, log, summary, out)
        if train_rc not in (0, 130):
            fail(f"training exited with {train_rc}")
        phase_done("train")

        # The heads trained alone go back onto the trained network; that is the model shipped.
        if graft is not None:
            model = _graft_heads(model, graft, summary, log, fail, child_env)
            phase_done("graft")
        summary["model"] = model.name

        # Evaluate the new model on the held-out rooms the demo model was evaluated on.
        summary["eval"] = {}
        if req.evaluate:
            evals = {"trained": _eval_child("trained", model, data, out, job, log, child_env), **evals}
        else:
            log("evaluation skipped (--no-eval): evaluate the model on the same held-out rooms elsewhere")
        for name, child in evals.items():
            rc = child.wait(max(5.0, deadline - time.time() - 10.0))
            report = out / f"eval_{name}.json"
            if rc != 0 or not report.is_file():
                fail(f"evaluation of the {name} model")
                continue
            summary["eval"][name] = _eval_headline(json.loads(report.read_text()))
        if "trained" in summary["eval"] and "demo" in summary["eval"]:
            summary["beats_demo"] = _beats(summary["eval"]["trained"], summary["eval"]["demo"])
        phase_done("eval")

        manifest = split_file(model, out / "model", int(job.part_mb * 2 ** 20))
        summary["model_manifest"] = str(manifest.relative_to(out))
        log(f"model: {model.stat().st_size / 2 ** 20:.1f} MB -> {manifest.relative_to(out)}")
    except JobEnvironmentError as exc:  # the machine cannot run the job: say why, exit 3
        fail(str(exc))
        _finish(req, log, summary, out)
        return 3
    except Exception as exc:  # noqa: BLE001 - whatever happens, the outputs so far come back
        fail(f"{type(exc).__name__}: {exc}")
    finally:
        for child in evals.values():
            if child.running():
                child.proc.kill()
    return _finish(req, log, summary, out)


def _graft_heads(model: Path, graft: "tuple[str, list[str]]", summary: dict, log: JobLog,
                 fail: Callable[[str], None], env: dict[str, str]) -> Path:
    """``roca-graft-heads`` of the modules ``graft[1]`` from the initial weights ``graft[0]``
    onto the trained ``model``: -> the grafted checkpoint, or ``model`` itself when the graft
    failed (then the job reports the failure and ships the trained network)."""
    heads, modules = graft
    grafted = model.with_name(GRAFTED_MODEL)
    child = Child("graft", ["-m", "roca_core.cli.graft_heads", "--network", str(model), "--heads", str(heads),
                            "--out", str(grafted), "--modules", ",".join(modules)], log, None, env)
    if child.wait(120.0) != 0 or not grafted.is_file():
        fail(f"graft of {', '.join(modules)} from {heads} (see the graft| lines of job.log); the trained "
             "network is shipped without them")
        return model
    summary["graft"] = {"modules": list(modules), "heads_from": str(heads), "model": grafted.name}
    return grafted


def _eval_child(name: str, checkpoint: Path, data: Path, out: Path, job: GpuJobConfig, log: JobLog,
                env: dict[str, str]) -> Child:
    """``roca-eval`` of one checkpoint on the held-out split, as a child process."""
    args = ["-m", "roca_core.cli.eval", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "val",
            "--device", job.device, "--out", str(out / f"eval_{name}.json"),
            "--md", str(out / f"eval_{name}.md"), "--no-progress"]
    if job.eval.max_images:
        args += ["--max-images", str(job.eval.max_images)]
    return Child(f"eval-{name}", args, log, None, {**env, "OMP_NUM_THREADS": str(job.eval.threads)})


def _finish(req: JobRequest, log: JobLog, summary: dict, out: Path) -> int:
    summary["total_s"] = round(time.time() - req.t0, 1)
    summary["repro"] = (f"bash scripts/gpu_run.sh OUT {'--dry-run ' if req.profile == 'dry_run' else ''}"
                        f"{f'--step-seconds {req.step_seconds:g} ' if req.step_seconds else ''}"
                        f"{f'--batch {req.batch} ' if req.batch is not None else ''}"
                        f"{'' if req.evaluate else '--no-eval '}"
                        f"{f'--init-weights {req.init_weights} ' if req.init_weights else ''}"
                        f"{f'--render-seed {req.render_seed} ' if req.render_seed is not None else ''}"
                        f"{f'--render-images {req.render_images} ' if req.render_images is not None else ''}"
                        f"--minutes {req.minutes:g} --preset {req.preset.relative_to(REPO_ROOT) if req.preset.is_relative_to(REPO_ROOT) else req.preset}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(summary_markdown(summary))
    too_big = [p.name for p in out.rglob("*") if p.is_file() and p.stat().st_size > OUT_LIMIT_BYTES]
    if too_big:
        log(f"WARNING: over 16 MB, will not come back: {too_big}")
    status = "done" if not summary["failures"] else f"done with {len(summary['failures'])} failure(s)"
    log(f"{status} in {summary['total_s']:.0f} s; outputs in {out}")
    log.close()
    return 0 if not summary["failures"] else 1
