"""``roca-train-shape``: give a trained network a shape head (retrieval from the image crop)
and train it on image crops alone.

Examples::

    roca-train-shape --checkpoint models/roca_demo.safetensors --data data/synthetic --out out/shape
    roca-train-shape --checkpoint out/shape/model_shape.safetensors --epochs 5    # continue

Writes OUT/model_shape.safetensors (the same network plus its shape head, ``model.shape_width``
set), OUT/shape_history.json and OUT/shape_curve.png (held-out retrieval top-1 and top-5 per
epoch). The head reads each object's size as the centre head predicts it (the true size
for a network without one). The CAD encoder stays as it is, so a CAD database it embedded stays valid. The crops are
cached in OUT/crops_<split>.pt (the same cache as roca-train-yaw and roca-train-centre), so a
second run starts training at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CACHE_BINS = 8  # the crop cache's key includes yaw bins; 8 shares the yaw and centre stages' cache


def build_parser() -> argparse.ArgumentParser:
    from roca_core.cli.head_stage import head_stage_parser
    from roca_core.training.shape_stage import ShapeStageConfig

    p = head_stage_parser("roca-train-shape", __doc__, ShapeStageConfig(),
                          "trained network (.safetensors) to add the shape head to",
                          data_help="data set root with its CAD database (train split trains, val split reports)")
    p.add_argument("--no-augment", action="store_true", help="train on the crops as cut (no mirror, shift, relight)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.cli.head_stage import EpochLog, both_splits, load_base, save_stage
    from roca_core.data.loader import RocaDataset
    from roca_core.training.shape_stage import (CadTargets, ShapeStageConfig, cad_indices, predicted_sizes,
                                                retrieval_accuracy, train_shape_head, with_shape_head)

    if args.epochs < 1 or args.batch < 1 or args.crop < 8 or args.width < 1 or args.lr <= 0:
        print("roca-train-shape: need --epochs >= 1, --batch >= 1, --crop >= 8, --width >= 1, --lr > 0",
              file=sys.stderr)
        return 2
    stage = ShapeStageConfig(crop=args.crop, width=args.width, epochs=args.epochs, batch=args.batch, lr=args.lr,
                             seed=args.seed, workers=args.workers, max_train_images=args.max_train_images,
                             augment=not args.no_augment)
    ckpt = Path(args.checkpoint)
    base = load_base("roca-train-shape", args.checkpoint, args.threads, args.seed)
    if base is None:
        return 2
    model, cfg, extra = base
    model, cfg = with_shape_head(model, cfg, stage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = both_splits("roca-train-shape", out, args.data, cfg, stage.crop, CACHE_BINS, stage.workers,
                       stage.max_train_images)
    if data is None:
        return 2
    try:
        train_ds = RocaDataset(args.data, "train", image_size=cfg.image_size, class_names=cfg.class_names)
        cads = CadTargets(model, train_ds.cad_database, cfg.class_names)
        for split, ds in (("train", train_ds), ("val", RocaDataset(args.data, "val", image_size=cfg.image_size,
                                                                   class_names=cfg.class_names))):
            data[split]["cad"] = cad_indices(ds, cads, data[split], stage.max_train_images if split == "train" else 0)
            data[split]["size"] = predicted_sizes(model, data[split], cfg.image_size)
    except (FileNotFoundError, ValueError) as exc:
        print(f"roca-train-shape: {exc}", file=sys.stderr)
        return 2
    n_train, n_val = int((data["train"]["cad"] >= 0).sum()), int((data["val"]["cad"] >= 0).sum())
    print(f"[roca-train-shape] {len(cads.ids)} CAD models; {n_train} training and {n_val} held-out objects "
          f"with one of them; sizes from {'the centre head' if model.centre_head is not None else 'the truth'}",
          flush=True)
    if n_train == 0:
        print("roca-train-shape: no training object's CAD model is in the CAD database", file=sys.stderr)
        return 2

    log = EpochLog("roca-train-shape", "shape head", stage.epochs, not args.no_progress, lambda row: (
        f"loss {row['loss']:.3f}, held-out top-1 {row.get('heldout_top1', 0):.3f}, top-5 "
        f"{row.get('heldout_top5', 0):.3f} ({row['seconds']:.0f} s)"))
    history = train_shape_head(model.shape_head, data["train"], data["val"], cads, stage, log)
    log.close()
    final = retrieval_accuracy(model.shape_head, data["val"], cads)
    path = save_stage(out, "shape", model, cfg, extra, stage, ckpt, history, final, {"train_objects": n_train},
                      loss_label="cross-entropy over CADs",
                      series=[("heldout_top1", "top-1"), ("heldout_top5", "top-5")],
                      right_title="held-out retrieval (dotted: chance top-1)", right_ylabel="held-out share",
                      chance={"heldout_top1": final["chance_top1"]})
    print(f"[roca-train-shape] held-out: the right CAD model first for {final['top1']:.3f} of "
          f"{final['objects']} objects (chance {final['chance_top1']:.3f}), among the first five for "
          f"{final['top5']:.3f}; wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
