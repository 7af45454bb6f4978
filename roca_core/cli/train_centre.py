"""``roca-train-centre``: give a trained network a centre head and train it on image crops alone.

Examples::

    roca-train-centre --checkpoint models/roca_demo.safetensors --data data/synthetic --out out/centre
    roca-train-centre --checkpoint out/centre/model_centre.safetensors --epochs 10    # continue

Writes OUT/model_centre.safetensors (the same network plus its centre head, ``model.centre_width``
set), OUT/centre_history.json and OUT/centre_curve.png (held-out errors per epoch). The crops
are cached in OUT/crops_<split>.pt (the same cache as roca-train-yaw's), so a second run starts
training at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from roca_core.cli.head_stage import head_stage_parser
    from roca_core.training.centre_stage import CentreStageConfig

    d = CentreStageConfig()
    p = head_stage_parser("roca-train-centre", __doc__, d, "trained network (.safetensors) to add the centre head to")
    p.add_argument("--box-jitter", type=float, default=d.box_jitter,
                   help="training boxes' sides move by up to this share of their size (0: true boxes)")
    p.add_argument("--augment", action="store_true",
                   help="mirror and relight the training crops (against overfitting)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.cli.head_stage import EpochLog, both_splits, load_base, save_stage
    from roca_core.training.centre_stage import CentreStageConfig, centre_errors, train_centre_head, with_centre_head

    stage = CentreStageConfig(crop=args.crop, width=args.width, epochs=args.epochs, batch=args.batch, lr=args.lr,
                              seed=args.seed, workers=args.workers, max_train_images=args.max_train_images,
                              box_jitter=args.box_jitter, augment=args.augment)
    if (args.epochs < 1 or args.batch < 1 or args.crop < 8 or args.width < 1 or args.lr <= 0
            or not 0 <= args.box_jitter < 0.5):
        print("roca-train-centre: need --epochs >= 1, --batch >= 1, --crop >= 8, --width >= 1, --lr > 0, "
              "0 <= --box-jitter < 0.5", file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint)
    base = load_base("roca-train-centre", args.checkpoint, args.threads, args.seed)
    if base is None:
        return 2
    model, cfg, extra = base
    model, cfg = with_centre_head(model, cfg, stage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # the yaw targets ride along in the shared cache; the yaw head's bins keep it reusable
    data = both_splits("roca-train-centre", out, args.data, cfg, stage.crop, cfg.yaw_bins or 8, stage.workers,
                       stage.max_train_images)
    if data is None:
        return 2
    n_train, n_val = int(data["train"]["cls"].shape[0]), int(data["val"]["cls"].shape[0])
    print(f"[roca-train-centre] {n_train} training and {n_val} held-out objects", flush=True)
    if n_train == 0:
        print("roca-train-centre: no training object", file=sys.stderr)
        return 2

    log = EpochLog("roca-train-centre", "centre head", stage.epochs, not args.no_progress, lambda row: (
        f"loss {row['loss']:.3f}, held-out median error {row.get('heldout_median_error_m', float('nan')):.3f} m, "
        f"{row.get('heldout_within_20cm', 0):.3f} within 20 cm ({row['seconds']:.0f} s)"))
    history = train_centre_head(model.centre_head, data["train"], data["val"], stage, cfg.image_size, log)
    log.close()
    final = centre_errors(model.centre_head, data["val"], cfg.image_size)
    path = save_stage(out, "centre", model, cfg, extra, stage, ckpt, history, final, {"train_objects": n_train},
                      loss_label="smooth L1: log depth, u, v, log scale",
                      series=[("heldout_within_20cm", "centre within 20 cm"),
                              ("heldout_median_error_m", "median centre error (m)"),
                              ("heldout_depth_rel_median", "median depth error (relative)"),
                              ("heldout_scale_error_median", "median scale error (relative)")],
                      right_title="held-out errors", right_ylabel="held-out")
    print(f"[roca-train-centre] held-out: median centre error {final.get('median_error_m', float('nan')):.3f} m, "
          f"{final.get('within_20cm', 0):.3f} within 20 cm, depth off by {final.get('depth_rel_median', float('nan')):.3f} "
          f"and scale by {final.get('scale_error_median', float('nan')):.3f} (medians, relative; "
          f"{final.get('objects', 0)} objects); wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
