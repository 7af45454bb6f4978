"""Benchmark the ROCA network: forward latency per stage and images/s per batch size, peak GPU
memory, training-step time, and batched vs per-object weighted Procrustes. Prints one table.

    python bench/bench_model.py --device cpu                      # both presets, fp32
    python bench/bench_model.py --device cuda --amp bf16 --presets paper --batches 1,8

Models are randomly initialised, so the number of detections is capped (``--max-dets``,
a typical ScanNet frame has a handful of objects) to keep the 3D heads' load realistic.
The measurements are :mod:`roca_core.gpu_job.benchmark`'s, which the GPU job also runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roca_core.geometry.procrustes import weighted_procrustes  # noqa: E402
from roca_core.gpu_job.benchmark import AMP_DTYPES, forward_bench, sync, train_step_bench  # noqa: E402
from roca_core.model import load_preset  # noqa: E402
from roca_core.model.roca import STAGES  # noqa: E402

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
        sync(device)
        samples = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples.append(time.perf_counter() - t0)
        res.append(1000 * statistics.median(samples))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=list(AMP_DTYPES), default="none")
    p.add_argument("--presets", default="small,paper")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batches", default="1", help="forward batch sizes, e.g. 1,8")
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
    def mem(row: dict) -> str:
        return "" if row["peak_mem_mb"] is None else f", peak {row['peak_mem_mb']:.0f} MB"

    batches = [int(b) for b in args.batches.split(",") if b]
    for preset in [s for s in args.presets.split(",") if s]:
        cfg = load_preset(preset)
        size = f"{cfg.image_height}x{cfg.image_width}"
        for batch in batches:
            r = forward_bench(cfg, device, args.amp, batch, args.iters, args.warmup, args.max_dets,
                              stage_iters=args.iters if batch == 1 else 0)
            where = f"{preset} {size} x{batch}"
            for k in STAGES if "stages_ms" in r else ():
                rows.append(("forward", where, f"{k} (ms)", f"{r['stages_ms'][k]:.1f}"))
            rows.append(("forward", where, f"total ms ({r['dets_per_image']:g} dets/image)",
                         f"{r['ms']:.1f}{mem(r)}"))
            rows.append(("forward", where, "images/s", f"{r['images_per_s']:.2f}"))
        if not args.skip_train:
            r = train_step_bench(cfg, device, args.amp, args.train_batch, args.iters, args.warmup)
            rows.append(("train", f"{preset} {size}", f"step ms (batch {args.train_batch})",
                         f"{r['ms']:.1f}{mem(r)}"))
            rows.append(("train", f"{preset} {size}", "  of which forward + losses ms", f"{r['forward_ms']:.1f}"))
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
