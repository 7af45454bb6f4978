"""``roca-train-up``: give a trained network an up head and train it on image thumbnails alone.

Examples::

    roca-train-up --checkpoint models/roca_demo.safetensors --data data/synthetic --out out/up
    roca-train-up --checkpoint out/up/model_up.safetensors --epochs 10    # continue

Writes OUT/model_up.safetensors (the same network plus its up head, ``model.up_width`` set),
OUT/up_history.json and OUT/up_curve.png (held-out angle errors per epoch). The thumbnails are
cached with the crops in OUT/crops_<split>.pt (the cache of roca-train-yaw and
roca-train-centre), so a second run starts training at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from roca_core.cli.head_stage import head_stage_parser
    from roca_core.training.up_stage import UpStageConfig

    d = UpStageConfig()
    p = head_stage_parser("roca-train-up", __doc__, d, "trained network (.safetensors) to add the up head to",
                          crop_and_width=False, workers_help="processes that cut the crops and thumbnails")
    p.add_argument("--width", type=int, default=d.width, help="channels of the first conv block")
    p.add_argument("--crop", type=int, default=0,
                   help="crop side of the shared cache (0: the network's yaw or centre crop, else 32)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.cli.head_stage import EpochLog, both_splits, load_base, save_stage
    from roca_core.training.up_stage import UpStageConfig, train_up_head, up_errors, with_up_head

    stage = UpStageConfig(width=args.width, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                          workers=args.workers, max_train_images=args.max_train_images)
    if args.epochs < 1 or args.batch < 1 or args.width < 1 or args.lr <= 0 or (args.crop and args.crop < 8):
        print("roca-train-up: need --epochs >= 1, --batch >= 1, --width >= 1, --lr > 0, --crop 0 or >= 8",
              file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint)
    base = load_base("roca-train-up", args.checkpoint, args.threads, args.seed)
    if base is None:
        return 2
    model, cfg, extra = base
    model, cfg = with_up_head(model, cfg, stage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    crop = args.crop or (cfg.yaw_crop if cfg.yaw_bins else cfg.centre_crop if cfg.centre_width else 32)

    data = both_splits("roca-train-up", out, args.data, cfg, crop, cfg.yaw_bins or 8, stage.workers,
                       stage.max_train_images)
    if data is None:
        return 2
    n_train, n_val = int(data["train"]["up"].shape[0]), int(data["val"]["up"].shape[0])
    print(f"[roca-train-up] {n_train} training and {n_val} held-out images", flush=True)
    if n_train == 0:
        print("roca-train-up: no training image with an object (the up direction comes from them)", file=sys.stderr)
        return 2

    log = EpochLog("roca-train-up", "up head", stage.epochs, not args.no_progress, lambda row: (
        f"loss {row['loss']:.4f}, held-out median error {row.get('heldout_median_error_deg', float('nan')):.2f} deg, "
        f"{row.get('heldout_within_5deg', 0):.3f} within 5 deg ({row['seconds']:.0f} s)"))
    history = train_up_head(model.up_head, data["train"], data["val"], stage, log)
    log.close()
    final = up_errors(model.up_head, data["val"])
    path = save_stage(out, "up", model, cfg, extra, stage, ckpt, history, final, {"train_images": n_train},
                      loss_label="distance of unit vectors",
                      series=[("heldout_median_error_deg", "median error (deg)")],
                      right_title="held-out angle error", right_ylabel="degrees",
                      twin=("heldout_within_5deg", "within 5 deg", "share within 5 deg"))
    print(f"[roca-train-up] held-out: median up error {final.get('median_error_deg', float('nan')):.2f} deg, "
          f"{final.get('within_2deg', 0):.3f} within 2 deg, {final.get('within_5deg', 0):.3f} within 5 deg "
          f"({final.get('images', 0)} images); wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
