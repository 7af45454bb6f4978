"""``roca-train``: offline end-to-end training of ROCA from a preset YAML.

Examples::

    roca-train --config config/small.yaml --data data/synthetic --out out/small
    roca-train --config config/small.yaml --out out/small --resume
    torchrun --nproc_per_node 2 -m roca_core.cli.train --config config/small.yaml --device cpu
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from roca_core.config_io import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roca-train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True,
                   help="preset YAML with model/data/train sections, or a preset name (small, paper)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/last (same iteration, optimiser, schedule, RNG)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over even if OUT already holds checkpoints (they are deleted)")
    p.add_argument("--out", help="output dir (default: train.out_dir of the config)")
    p.add_argument("--data", help="dataset root (default: data.root of the config)")
    p.add_argument("--extra-data", nargs="+", metavar="DIR",
                   help="more dataset roots whose training splits join --data's (default: "
                        "data.extra_train_roots of the config)")
    p.add_argument("--iterations", type=int, help="override train.max_iter")
    p.add_argument("--batch-size", type=int, help="override train.ims_per_batch (per process)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    p.add_argument("--num-workers", type=int, help="override train.num_workers")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--checkpoint-period", type=int, help="override train.checkpoint_period")
    p.add_argument("--eval-period", type=int, help="override train.eval_period (0 disables)")
    p.add_argument("--threads", type=int, help="override train.num_threads (torch intra-op threads)")
    p.add_argument("--init-weights", help="override train.init_weights (start from this "
                   ".safetensors: a curriculum's next stage)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", help="also write the run summary (timings, losses) here")
    return p


def _config_path(value: str) -> Path:
    path = Path(value)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    from roca_core.model.config import preset_path
    return preset_path(value)


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.data.loader import DatasetError
    from roca_core.training.config import load_experiment_config
    from roca_core.training.train_state import TrainStateError
    from roca_core.training.trainer import Trainer

    try:
        cfg = load_experiment_config(_config_path(args.config))
        overrides = {"max_iter": args.iterations, "ims_per_batch": args.batch_size,
                     "device": args.device, "num_workers": args.num_workers, "seed": args.seed,
                     "checkpoint_period": args.checkpoint_period, "eval_period": args.eval_period,
                     "num_threads": args.threads, "init_weights": args.init_weights}
        cfg.train = replace(cfg.train, **{k: v for k, v in overrides.items() if v is not None})
        if args.out:
            cfg.train.out_dir = args.out
        if args.data:
            cfg.data.root = args.data
        if args.extra_data:
            cfg.data.extra_train_roots = list(args.extra_data)
        cfg.train.validate()
        if cfg.train.init_weights and not Path(cfg.train.init_weights).is_file():
            raise ConfigError(f"train.init_weights {cfg.train.init_weights!r}: no such file")
    except ConfigError as exc:
        print(f"roca-train: bad config: {exc}", file=sys.stderr)
        return 2
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress)
    try:
        result = trainer.train()
    except (TrainStateError, FileExistsError, FileNotFoundError, ConfigError, DatasetError) as exc:
        print(f"roca-train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("roca-train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        trainer.close()
    if trainer.info.is_main:
        summary = {"out_dir": str(result.out_dir), "start_iteration": result.start_iteration,
                   "final_iteration": result.final_iteration,
                   "final_model": str(result.final_model) if result.final_model else None,
                   "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                   "mean_step_time_s": result.mean_step_time_s,
                   "mean_data_time_s": result.mean_data_time_s,
                   "last_losses": result.last_losses, "class_weights": result.class_weights,
                   "world_size": trainer.info.world_size, "device": str(trainer.device)}
        text = json.dumps(summary, indent=1)
        print(text)
        if args.summary_json:
            Path(args.summary_json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
