"""Training-step time per preset: the real Trainer loop on freshly rendered synthetic images.

Renders a few images at each preset's input size (roca_core.data.dataset_writer), then runs
``Trainer`` for a handful of iterations (no periodic checkpoint/eval) and prints the mean
seconds per optimisation step (forward + backward + clip + SGD step, first two excluded) and
per batch fetch. Usage::

    .venv/bin/python bench/bench_train_step.py [--presets small paper] [--batch 2]
        [--iters 8] [--threads 2] [--images 8] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from roca_core.model.config import preset_path
from roca_core.training.config import load_experiment_config
from roca_core.training.trainer import Trainer


def render(out: Path, height: int, width: int, images: int) -> Path:
    """roca-make-dataset in a subprocess (keeps the renderer's EGL context out of here)."""
    focal = 435.0 * width / 480.0
    cmd = [sys.executable, "-m", "roca_core.cli.make_dataset", "--out", str(out), "--images",
           str(images), "--height", str(height), "--width", str(width), "--focal", str(focal),
           "--workers", "1", "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def bench_preset(name: str, args: argparse.Namespace, work: Path) -> dict:
    cfg = load_experiment_config(preset_path(name))
    h, w = cfg.model.image_height, cfg.model.image_width
    data = render(work / f"data_{h}x{w}", h, w, args.images)
    cfg.data.root = str(data)
    cfg.train = replace(cfg.train, max_iter=args.iters, ims_per_batch=args.batch,
                        checkpoint_period=0, eval_period=0, num_workers=args.workers,
                        device=args.device, warmup_iters=1)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, work / f"run_{name}", overwrite=True, progress=False,
                      export_inference_model=False, log=lambda _m: None)
    result = trainer.train()
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"preset": name, "input": f"{h}x{w}", "batch": args.batch, "device": str(trainer.device),
            "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2), "params_M": round(n_params / 1e6, 2),
            "step_s": round(result.mean_step_time_s, 3),
            "data_wait_s": round(result.mean_data_time_s, 3),
            "images_per_s": round(args.batch / result.mean_step_time_s, 2),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["small"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            row = bench_preset(name, args, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| preset | input | batch | device | threads | params (M) | s/step | img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['input']} | {r['batch']} | {r['device']} | {r['threads']} | "
              f"{r['params_M']} | {r['step_s']} | {r['images_per_s']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
