"""Benchmark of the ROCA network per preset, autocast dtype and batch size, on any device.

Rows (plain dicts, JSON-ready): ``forward`` (inference of randomly initialised presets:
ms per batch, images/s, peak GPU memory, per-stage ms at batch 1), ``train_step``
(forward + backward + clip + SGD step on synthetic batches) and ``predict`` (the node's path,
``Predictor.predict`` on one frame with retrieval). ``bench/bench_model.py`` prints them for
ad-hoc runs; the GPU job (:mod:`roca_core.gpu_job.job`) runs :func:`main` in a subprocess.

Random weights detect noise, so detections are capped per image (``max_dets``) to keep the
3D heads' load like a real frame's.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from roca_core.config_io import ConfigError
from roca_core.gpu_job.report import markdown_table

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Row = dict[str, Any]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in none / bf16 / fp16 (none: a no-op)."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Yields a dict that holds ``peak_mem_mb`` (GPU only; None on the CPU) afterwards."""
    out: dict = {"peak_mem_mb": None}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)


def _median_ms(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> tuple[float, Any]:
    result = None
    samples = []
    for i in range(warmup + iters):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return 1000 * statistics.median(samples), result


def _to(batch: tuple[list, list], device: torch.device) -> tuple[list, list]:
    images, targets = batch
    return ([i.to(device) for i in images],
            [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets])


def _input(cfg: Any) -> str:
    return f"{cfg.image_height}x{cfg.image_width}"


def forward_bench(cfg: Any, device: torch.device, amp: str, batch: int, iters: int, warmup: int,
                  max_dets: int, stage_iters: int = 0) -> Row:
    """Inference of a randomly initialised model on ``batch`` synthetic images at its input size."""
    from roca_core.model import RocaModel
    from roca_core.model.roca import STAGES
    from roca_core.model.synthetic import make_batch

    cfg = dataclasses.replace(cfg, detections_per_image=max_dets)
    torch.manual_seed(0)
    model = RocaModel(cfg).to(device).eval()
    images, targets = _to(make_batch(cfg.image_height, cfg.image_width, batch, 3, cfg.num_classes, seed=0),
                          device)
    Ks = [t["K"] for t in targets]

    def run() -> list[dict]:
        with torch.no_grad(), autocast(device, amp):
            return model(images, intrinsics=Ks)

    with peak_memory(device) as mem:
        ms, out = _median_ms(run, device, iters, warmup)
    row: Row = {"section": "forward", "input": _input(cfg), "amp": amp, "batch": batch,
                "ms": round(ms, 3), "images_per_s": round(1000 * batch / ms, 2),
                "peak_mem_mb": mem["peak_mem_mb"],
                "dets_per_image": round(sum(int(o["boxes"].shape[0]) for o in out) / batch, 1)}
    if stage_iters > 0:  # per-stage times need a synchronisation per stage: separate passes
        model.profile = True
        per_stage: dict[str, list[float]] = {k: [] for k in STAGES}
        for _ in range(stage_iters):
            model.stage_times.clear()
            run()
            for k in STAGES:
                per_stage[k].append(model.stage_times[k])
        row["stages_ms"] = {k: round(1000 * statistics.median(v), 3) for k, v in per_stage.items()}
    del model
    return row


def train_step_bench(cfg: Any, device: torch.device, amp: str, batch: int, iters: int,
                     warmup: int, clip: float = 10.0) -> Row:
    """Forward + losses + backward + gradient clip + SGD step on synthetic batches."""
    from roca_core.model import RocaModel
    from roca_core.model.synthetic import make_batch

    torch.manual_seed(0)
    model = RocaModel(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    data = _to(make_batch(cfg.image_height, cfg.image_width, batch, 3, cfg.num_classes, seed=1), device)
    fwd: list[float] = []

    def step() -> float:
        t0 = time.perf_counter()
        with autocast(device, amp):
            losses = model(*data)
        loss = sum(losses.values())
        sync(device)
        fwd.append(time.perf_counter() - t0)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    with peak_memory(device) as mem:
        ms, loss = _median_ms(step, device, iters, warmup)
    del model, opt
    return {"section": "train_step", "input": _input(cfg), "amp": amp, "batch": batch,
            "ms": round(ms, 3), "images_per_s": round(1000 * batch / ms, 2),
            "peak_mem_mb": mem["peak_mem_mb"],
            "forward_ms": round(1000 * statistics.median(fwd[warmup:] or fwd), 3),
            "loss": round(loss, 4) if math.isfinite(loss) else loss}


def predictor_frame(data_root: "Path | None", height: int, width: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A held-out image resized to (height, width) with its K, or a synthetic one without data."""
    import cv2

    if data_root is not None and (Path(data_root) / "annotations_val.json").is_file():
        from roca_core.data.loader import RocaDataset
        from roca_core.geometry.camera import scale_intrinsics
        image, target = RocaDataset(str(data_root), split="val", augment=False)[0]
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        K = scale_intrinsics(np.asarray(target["K"], np.float64), rgb.shape[:2], (height, width))
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR), K, "held-out image"
    from roca_core.model.synthetic import make_sample
    image, target = make_sample(height, width, 3)
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return rgb, target["K"].double().numpy(), "synthetic image (no rendered data)"


def predictor_bench(checkpoint: Path, device: torch.device, amps: "tuple[str, ...]", frame_hw: "tuple[int, int]",
                    iters: int, warmup: int, data_root: "Path | None", fallback_cfg: Any = None,
                    log: Callable[[str], None] = print) -> list[Row]:
    """``Predictor.predict`` (what ``roca_node`` runs per frame) per autocast dtype.

    When ``checkpoint`` does not load (the model code changed after the demo model was
    trained), randomly initialised ``fallback_cfg`` weights keep the path timed; the row says so.
    """
    from roca_core.checkpoint import CheckpointError
    from roca_core.predictor import Predictor

    db: Any = False
    if data_root is not None and (Path(data_root) / "cad_db" / "header.json").is_file():
        db = str(Path(data_root) / "cad_db")
    weights = checkpoint.name
    try:
        predictor = Predictor(checkpoint=checkpoint, cad_database=db, device=device, score_threshold=0.5)
    except CheckpointError as exc:
        if fallback_cfg is None:
            raise
        from roca_core.model import RocaModel
        log(f"bench: {exc}; timing the predictor with random weights of the trained preset")
        torch.manual_seed(0)
        predictor = Predictor(checkpoint=RocaModel(fallback_cfg), cad_database=db, device=device,
                              score_threshold=0.5)
        weights = "random weights (the demo model does not load)"
    rgb, K, what = predictor_frame(data_root, *frame_hw)
    rows = []
    for amp in amps:
        def run() -> list:
            with autocast(device, amp):
                return predictor.predict(rgb, K)
        with peak_memory(device) as mem:
            ms, dets = _median_ms(run, device, iters, warmup)
        rows.append({"section": "predict", "preset": weights, "input": f"{frame_hw[0]}x{frame_hw[1]}",
                     "amp": amp, "batch": 1, "ms": round(ms, 3), "images_per_s": round(1000 / ms, 2),
                     "peak_mem_mb": mem["peak_mem_mb"], "dets_per_image": len(dets),
                     "retrieved": sum(d.cad_id is not None for d in dets),
                     "note": f"{what}, retrieval {'on' if db else 'off'}"})
    return rows


def _guarded(fn: Callable[[], Any], label: str, log: Callable[[str], None]) -> "Any | Row":
    """Run one measurement; an error (e.g. out of memory) becomes a row, not a crash."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a failed row must not cost the other rows
        log(f"bench: {label} failed: {type(exc).__name__}: {exc}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def run_benchmarks(job: Any, train_exp: Any, device: torch.device, log: Callable[[str], None],
                   data_root: "Path | None" = None, wait_for_data_s: float = 0.0,
                   on_row: "Callable[[list[Row]], None] | None" = None) -> list[Row]:
    """Every row the job config asks for; ``train_exp`` is the preset being trained.
    ``on_row(rows)`` after each row (the job saves them, so a timeout keeps what was measured)."""
    from roca_core.gpu_job.config import resolve_repo_path
    from roca_core.gpu_job.schedule_fit import model_with_overrides
    from roca_core.model import load_preset
    from roca_core.training.config import load_experiment_config

    b = job.bench
    if device.type == "cuda":  # float32 rows keep torch's TF32 defaults, as roca-train does
        torch.backends.cudnn.benchmark = True
    rows: list[Row] = []

    def add(row: Row, **ident: Any) -> None:
        rows.append({**ident, **row})
        if on_row is not None:
            on_row(rows)
        ms = row.get("ms")
        log(f"bench: {ident} -> " + (f"{ms:.2f} ms, {row['images_per_s']:.1f} images/s, "
                                     f"peak {row.get('peak_mem_mb')} MB" if ms is not None else row["error"]))

    for preset in b.presets:
        cfg = model_with_overrides(load_preset(preset), job.model_overrides)
        for amp in b.amps:
            for batch in b.batches:
                stage_iters = b.stage_iters if batch == 1 else 0
                row = _guarded(lambda: forward_bench(cfg, device, amp, batch, b.iters, b.warmup,
                                                     b.max_dets, stage_iters),
                               f"forward {preset} {amp} x{batch}", log)
                add(row, section="forward", preset=preset, amp=amp, batch=batch)
    for preset in b.train_presets:
        if preset == "train":
            # every amp at the preset's batch; the job's amp alone at its other candidate batches
            cfg, batch, name = train_exp.model, train_exp.train.ims_per_batch, "train"
            runs = [(batch, amp) for amp in b.train_amps] + [
                (int(c), job.train.amp) for c in dict.fromkeys(job.train.batch_candidates) if int(c) != batch]
        else:
            exp = load_experiment_config(resolve_repo_path(f"config/{preset}.yaml"))
            cfg, batch, name = model_with_overrides(exp.model, job.model_overrides), exp.train.ims_per_batch, preset
            runs = [(batch, amp) for amp in b.train_amps]
        for run_batch, amp in runs:
            row = _guarded(lambda: train_step_bench(cfg, device, amp, run_batch, b.train_iters, b.train_warmup),
                           f"train step {name} {amp} x{run_batch}", log)
            add(row, section="train_step", preset=name, amp=amp, batch=run_batch)
    if b.predictor_amps:
        ckpt = resolve_repo_path(b.predictor_checkpoint)
        if data_root is not None and wait_for_data_s > 0:
            _wait_for(Path(data_root) / "dataset_info.json", wait_for_data_s, log)
        if not ckpt.is_file():
            rows.append({"section": "predict", "preset": ckpt.name, "error": f"no checkpoint {ckpt}"})
        else:
            got = _guarded(lambda: predictor_bench(ckpt, device, tuple(b.predictor_amps),
                                                   tuple(b.predictor_frame), b.predictor_iters,
                                                   b.warmup, data_root, train_exp.model, log),
                           "predict", log)
            for row in (got if isinstance(got, list) else [dict(got, section="predict", preset=ckpt.name)]):
                add(row, section="predict", preset=row.get("preset"), amp=row.get("amp"), batch=1)
    return rows


def _wait_for(path: Path, seconds: float, log: Callable[[str], None]) -> bool:
    t_end = time.monotonic() + seconds
    if not path.exists():
        log(f"bench: waiting up to {seconds:.0f} s for the rendered data ({path.name})")
    while not path.exists() and time.monotonic() < t_end:
        time.sleep(1.0)
    return path.exists()


def main(argv: "list[str] | None" = None) -> int:
    """Subprocess entry of the job: ``--job-config job_config.json --out DIR``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-config", required=True, help="the job's resolved config (JSON)")
    p.add_argument("--train-config", required=True, help="the preset being trained (YAML)")
    p.add_argument("--out", required=True, help="writes bench.json and bench.md here")
    p.add_argument("--data", default=None, help="rendered data (predictor frame and CAD database)")
    p.add_argument("--wait-for-data", type=float, default=0.0, help="seconds to wait for --data")
    args = p.parse_args(argv)
    from roca_core.config_io import from_dict
    from roca_core.gpu_job.config import GpuJobConfig
    from roca_core.training.config import load_experiment_config

    try:
        job = from_dict(GpuJobConfig, json.loads(Path(args.job_config).read_text()), "job").validate()
        train_exp = load_experiment_config(args.train_config)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"bench: bad config: {exc}", file=sys.stderr)
        return 2
    device = torch.device(job.device)

    def log(msg: str) -> None:
        print(msg, flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(rows: list[Row]) -> None:
        (out / "bench.json").write_text(json.dumps(rows, indent=1))
        (out / "bench.md").write_text(markdown_table(rows))

    save(run_benchmarks(job, train_exp, device, log, Path(args.data) if args.data else None,
                        args.wait_for_data, on_row=save))
    return 0


if __name__ == "__main__":
    sys.exit(main())
