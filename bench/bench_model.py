"""Benchmark the ROCA network: forward latency per stage, training-step time, and batched vs
per-object weighted Procrustes. Prints one table.

    python bench/bench_model.py --device cpu                      # both presets, fp32
    python bench/bench_model.py --device cuda --amp bf16 --presets paper

Models are randomly initialised, so the number of detections is capped (``--max-dets``,
a typical ScanNet frame has a handful of objects) to keep the 3D heads' load realistic.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roca_core.geometry.procrustes import weighted_procrustes  # noqa: E402
from roca_core.model import RocaModel, load_preset  # noqa: E402
from roca_core.model.roca import STAGES  # noqa: E402
from roca_core.model.synthetic import make_batch  # noqa: E402

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: str):
    if AMP[amp] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP[amp])


def _to(batch, device):
    images, targets = batch
    images = [i.to(device) for i in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def bench_forward(cfg, device, amp, iters, warmup, max_dets):
    cfg = dataclasses.replace(cfg, detections_per_image=max_dets)
    torch.manual_seed(0)
    model = RocaModel(cfg).to(device).eval()
    images, targets = _to(make_batch(cfg.image_height, cfg.image_width, 1, 3, cfg.num_classes, seed=0), device)
    Ks = [t["K"] for t in targets]
    totals, per_stage, ndet = [], {k: [] for k in STAGES}, 0
    model.profile = True
    for i in range(warmup + iters):
        model.stage_times.clear()
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad(), _autocast(device, amp):
            out = model(images, intrinsics=Ks)
        _sync(device)
        if i >= warmup:
            totals.append(time.perf_counter() - t0)
            ndet = int(out[0]["boxes"].shape[0])
            for k in STAGES:
                per_stage[k].append(model.stage_times[k])
    stages = {k: 1000 * statistics.median(v) for k, v in per_stage.items()}  # medians, like the total
    return stages, 1000 * statistics.median(totals), ndet


def bench_train(cfg, device, amp, iters, warmup, batch):
    torch.manual_seed(0)
    model = RocaModel(cfg).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
    data = _to(make_batch(cfg.image_height, cfg.image_width, batch, 3, cfg.num_classes, seed=1), device)
    times, fwd = [], []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        with _autocast(device, amp):
            losses = model(*data)
        loss = sum(losses.values())
        _sync(device)
        t_fwd = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            fwd.append(t_fwd)
    return 1000 * statistics.median(times), 1000 * statistics.median(fwd)


def bench_procrustes(device, n_objects, n_points, iters):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(n_objects, n_points, 3, generator=g).to(device)
    dst = (src + 0.01 * torch.randn(n_objects, n_points, 3, generator=g).to(device)).requires_grad_()
    w = torch.rand(n_objects, n_points, generator=g).to(device)

    def batched():
        r, t = weighted_procrustes(src, dst, w)
        (r.sum() + t.sum()).backward()

    def loop():
        tot = 0.0
        for i in range(n_objects):
            r, t = weighted_procrustes(src[i:i + 1], dst[i:i + 1], w[i:i + 1])
            tot = tot + r.sum() + t.sum()
        tot.backward()

    res = []
    for fn in (batched, loop):
        fn()
        _sync(device)
        samples = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples.append(time.perf_counter() - t0)
        res.append(1000 * statistics.median(samples))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=list(AMP), default="none")
    p.add_argument("--presets", default="small,paper")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--max-dets", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    rows: list[tuple[str, str, str, str]] = []
    for preset in [s for s in args.presets.split(",") if s]:
        cfg = load_preset(preset)
        size = f"{cfg.image_height}x{cfg.image_width}"
        stages, total, ndet = bench_forward(cfg, device, args.amp, args.iters, args.warmup, args.max_dets)
        for k in STAGES:
            rows.append(("forward", f"{preset} {size}", f"{k} (ms)", f"{stages[k]:.1f}"))
        rows.append(("forward", f"{preset} {size}", f"total ms ({ndet} dets)", f"{total:.1f}"))
        rows.append(("forward", f"{preset} {size}", "images/s", f"{1000 / total:.2f}"))
        if not args.skip_train:
            step, fwd = bench_train(cfg, device, args.amp, args.iters, args.warmup, args.train_batch)
            rows.append(("train", f"{preset} {size}", f"step ms (batch {args.train_batch})", f"{step:.1f}"))
            rows.append(("train", f"{preset} {size}", "  of which forward + losses ms", f"{fwd:.1f}"))
    for n in (1, 10, 100):
        b, lo = bench_procrustes(device, n, 1024, max(args.iters, 5))
        rows.append(("procrustes", f"{n} obj x 1024 pts", "batched / loop ms (fwd+bwd)",
                     f"{b:.2f} / {lo:.2f} = x{lo / b:.1f}"))
    print(f"# bench_model: device={name} amp={args.amp} torch={torch.__version__}")
    widths = [max(len(r[i]) for r in rows + [("section", "preset", "metric", "value")]) for i in range(4)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    print(fmt.format("section", "preset", "metric", "value"))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
