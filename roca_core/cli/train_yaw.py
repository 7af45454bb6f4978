"""``roca-train-yaw``: give a trained network a yaw head and train it on image crops alone.

Examples::

    roca-train-yaw --checkpoint models/roca_demo.safetensors --data data/synthetic --out out/yaw
    roca-train-yaw --checkpoint out/yaw/model_yaw.safetensors --epochs 20    # continue

Writes OUT/model_yaw.safetensors (the same network plus its yaw head, ``model.yaw_bins`` set),
OUT/yaw_history.json and OUT/yaw_curve.png (held-out accuracy per epoch). The crops are cached
in OUT/crops_<split>.pt, so a second run starts training at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from roca_core.cli.head_stage import head_stage_parser
    from roca_core.training.yaw_stage import YawStageConfig

    d = YawStageConfig()
    p = head_stage_parser("roca-train-yaw", __doc__, d, "trained network (.safetensors) to add the yaw head to")
    p.add_argument("--bins", type=int, default=d.bins, help="yaw bins (of 360 / bins degrees)")
    p.add_argument("--augment", action="store_true",
                   help="mirror, shift, zoom and relight the training crops (against overfitting)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.cli.head_stage import EpochLog, both_splits, load_base, save_stage
    from roca_core.training.yaw_stage import (YawStageConfig, chance_levels, train_yaw_head, with_yaw_head,
                                              yaw_accuracy)

    stage = YawStageConfig(bins=args.bins, crop=args.crop, width=args.width, epochs=args.epochs, batch=args.batch,
                           lr=args.lr, seed=args.seed, workers=args.workers, max_train_images=args.max_train_images,
                           augment=args.augment)
    if args.epochs < 1 or args.batch < 1 or args.bins < 4 or args.crop < 8 or args.width < 1 or args.lr <= 0:
        print("roca-train-yaw: need --epochs >= 1, --batch >= 1, --bins >= 4, --crop >= 8, --width >= 1, "
              "--lr > 0", file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint)
    base = load_base("roca-train-yaw", args.checkpoint, args.threads, args.seed)
    if base is None:
        return 2
    model, cfg, extra = base
    model, cfg = with_yaw_head(model, cfg, stage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = both_splits("roca-train-yaw", out, args.data, cfg, stage.crop, stage.bins, stage.workers,
                       stage.max_train_images)
    if data is None:
        return 2
    n_train, n_val = int(data["train"]["valid"].sum()), int(data["val"]["valid"].sum())
    chance = chance_levels(data["val"])
    print(f"[roca-train-yaw] {n_train} training and {n_val} held-out objects with a yaw; held-out chance: "
          f"{chance['exact']:.3f} in a right bin, {chance['within_one_bin']:.3f} within one", flush=True)
    if n_train == 0:
        print("roca-train-yaw: no training object with a yaw (all infinite symmetry?)", file=sys.stderr)
        return 2

    log = EpochLog("roca-train-yaw", "yaw head", stage.epochs, not args.no_progress, lambda row: (
        f"loss {row['loss']:.3f}, held-out {row.get('heldout_exact', 0):.3f} right bin, "
        f"{row.get('heldout_within_one_bin', 0):.3f} within one, {row.get('heldout_within_20deg', 0):.3f} "
        f"within 20 deg ({row['seconds']:.0f} s)"))
    history = train_yaw_head(model.yaw_head, data["train"], data["val"], stage, log)
    log.close()
    final = yaw_accuracy(model.yaw_head, data["val"])
    path = save_stage(out, "yaw", model, cfg, extra, stage, ckpt, history, final, {"train_objects": n_train},
                      also={"heldout_chance": chance}, loss_label="NLL of the right bins",
                      series=[("heldout_exact", "right bin"), ("heldout_within_one_bin", "within one bin"),
                              ("heldout_within_20deg", "decoded yaw within 20°")],
                      right_title="held-out accuracy (dotted: chance)", right_ylabel="held-out share",
                      chance={f"heldout_{key}": level for key, level in chance.items()})
    print(f"[roca-train-yaw] held-out: {final['exact']:.3f} in the right bin, {final['within_one_bin']:.3f} "
          f"within one, {final.get('within_20deg', 0):.3f} within 20 degrees (median error "
          f"{final.get('median_error_deg', float('nan')):.1f} deg; {final['objects']} objects); wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
