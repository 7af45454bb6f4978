"""GPU job: benchmark, train and evaluate roca on one CUDA machine in one command.

    scripts/gpu_run.sh OUT_DIR [--minutes M] [--preset config/small_heads.yaml]   # on the GPU machine
    scripts/gpu_run.sh OUT_DIR --step-seconds 0.22 --no-eval   # a short call that only trains
    scripts/gpu_run.sh OUT_DIR --step-seconds 0.4 --batch 32 --no-eval   # ... at the batch a first call chose
    scripts/gpu_run.sh OUT --step-seconds 0.26 --no-eval --render-seed 0 --render-images 8000
                                                               # train on data/synthetic's rooms
    scripts/gpu_run.sh OUT2 --step-seconds 0.25 --no-eval --init-weights WORK/train/model_grafted.safetensors
                                                               # a second call that goes on from the first
    python -m roca_core.cli.gpu_job OUT_DIR --dry-run                        # CPU check, tiny sizes

Sizes and limits: config/gpu_job.yaml (profiles gpu and dry_run). Everything written to
OUT_DIR is at most 16 MB per file; data and checkpoints stay in --work.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from roca_core.config_io import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_job", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("out_dir", help="output folder (only small files: tables, log, model parts)")
    p.add_argument("--dry-run", action="store_true",
                   help="the dry_run profile: CPU, tiny sizes, about 3 minutes")
    p.add_argument("--minutes", type=float, default=None,
                   help="training minutes (default: the profile's train_minutes); shortened to fit the budget")
    p.add_argument("--preset", default=None,
                   help="preset YAML to train (default: the profile's train.preset, config/small_heads.yaml)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="limit of the whole job (default: the profile's budget_minutes)")
    p.add_argument("--step-seconds", type=float, default=None,
                   help="seconds per training step measured on an earlier run: skip the benchmark "
                        "and plan the schedule with this (a short call that only trains)")
    p.add_argument("--batch", type=int, default=None,
                   help="images per training step (default: the benchmarked train.batch_candidates "
                        "entry of most images/s, or train.ims_per_batch); the learning rate scales "
                        "by sqrt(batch / train.ims_per_batch)")
    p.add_argument("--no-eval", action="store_true",
                   help="skip roca-eval (evaluate the model elsewhere); its reserve goes to training")
    p.add_argument("--init-weights", default=None,
                   help="checkpoint training continues from (default: the preset's train.init_weights, the "
                        "committed demo model); a second call passes the first call's model to go on from it")
    p.add_argument("--render-seed", type=int, default=None,
                   help="seed of the rendered rooms (default: the profile's render.seed; -1 there derives "
                        "one from the initial weights, rooms no earlier stage saw); 0: the rooms of "
                        "data/synthetic, whose held-out rooms are the model card's")
    p.add_argument("--render-images", type=int, default=None,
                   help="images rendered (default: the profile's render.images), the held-out rooms included")
    p.add_argument("--work", default=None,
                   help="folder for data and checkpoints (default: a new temporary folder)")
    p.add_argument("--config", default=None, help="job config file (default: config/gpu_job.yaml)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    # The shell wrapper passes its start time, so installing wheels counts against the budget.
    t0 = float(os.environ.get("ROCA_GPU_JOB_T0") or time.time())
    from roca_core.gpu_job.config import JOB_CONFIG, load_job_config, resolve_repo_path
    from roca_core.gpu_job.job import JobRequest, run_job

    profile = "dry_run" if args.dry_run else "gpu"
    try:
        job = load_job_config(profile, args.config or JOB_CONFIG)
        if args.budget_minutes is not None:
            job.budget_minutes = args.budget_minutes
        if args.preset:
            job.train.preset = args.preset
        if args.render_seed is not None:
            if args.render_seed < 0:
                raise ConfigError(f"--render-seed must be >= 0, got {args.render_seed}")
            job.render.seed = args.render_seed
        if args.render_images is not None:
            job.render.images = args.render_images
        minutes = job.train_minutes if args.minutes is None else args.minutes
        job.validate()
        if minutes <= 0:
            raise ConfigError(f"--minutes must be > 0, got {minutes}")
        if args.batch is not None and args.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {args.batch}")
        if args.step_seconds is not None and not args.step_seconds > 0:
            raise ConfigError(f"--step-seconds must be > 0, got {args.step_seconds}")
        preset = Path(args.preset).resolve() if args.preset else resolve_repo_path(job.train.preset)
        if not preset.is_file():
            raise ConfigError(f"preset file not found: {preset}")
        init = Path(args.init_weights).resolve() if args.init_weights else None
        if init is not None and not init.is_file():
            raise ConfigError(f"--init-weights: checkpoint not found: {init}")
    except ConfigError as exc:
        print(f"gpu_job: bad config: {exc}", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="roca_gpu_job_"))
    req = JobRequest(out_dir=Path(args.out_dir).resolve(), work_dir=work.resolve(), job=job,
                     profile=profile, minutes=minutes, preset=preset, t0=t0,
                     step_seconds=args.step_seconds, evaluate=not args.no_eval, init_weights=init,
                     render_seed=args.render_seed, render_images=args.render_images, batch=args.batch)
    return run_job(req)


if __name__ == "__main__":
    sys.exit(main())
