"""``roca-train-class``: give a trained network a class head that re-scores its detections, and
train it on crops of the network's own detections alone.

Examples::

    roca-train-class --checkpoint models/roca_demo.safetensors --data data/synthetic --out out/class
    roca-train-class --checkpoint out/class/model_class.safetensors --epochs 4    # continue

Writes OUT/model_class.safetensors (the same network plus its class head, ``model.class_width``
set), OUT/class_history.json and OUT/class_curve.png (held-out accuracy, recall and precision
at score 0.5 per epoch). The detections and their crops are cached in
OUT/class_crops_<split>.pt, so a second run on the same checkpoint starts training at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from roca_core.cli.head_stage import head_stage_parser
    from roca_core.training.class_stage import ClassStageConfig

    d = ClassStageConfig()
    p = head_stage_parser("roca-train-class", __doc__, d, "trained network (.safetensors) to add the class head to",
                          workers_help="processes that run the detector")
    p.add_argument("--mix", type=float, default=d.mix,
                   help="weight of the head's probability in the new score (0: the detector's score, 1: the head's)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.cli.head_stage import EpochLog, load_base, save_stage
    from roca_core.training.class_stage import (ClassStageConfig, cached_detection_samples, class_errors,
                                                train_class_head, with_class_head)

    if (args.epochs < 1 or args.batch < 1 or args.crop < 8 or args.width < 1 or args.lr <= 0
            or not 0.0 <= args.mix <= 1.0):
        print("roca-train-class: need --epochs >= 1, --batch >= 1, --crop >= 8, --width >= 1, --lr > 0, "
              "0 <= --mix <= 1", file=sys.stderr)
        return 2
    stage = ClassStageConfig(crop=args.crop, width=args.width, mix=args.mix, epochs=args.epochs, batch=args.batch,
                             lr=args.lr, seed=args.seed, workers=args.workers, max_train_images=args.max_train_images)
    ckpt = Path(args.checkpoint)
    base = load_base("roca-train-class", args.checkpoint, args.threads, args.seed)
    if base is None:
        return 2
    model, cfg, extra = base
    # the samples come from the detector alone (the class head re-scores after it), so a network
    # that already has a class head yields the same samples, and its head trains on
    model, cfg = with_class_head(model, cfg, stage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {}
    for split in ("train", "val"):
        try:
            data[split] = cached_detection_samples(
                out, ckpt, args.data, split, stage.crop, stage.workers, stage.max_train_images if split == "train" else 0,
                log=lambda m: print(f"[roca-train-class] {m}", flush=True))
        except (FileNotFoundError, ValueError) as exc:
            print(f"roca-train-class: cannot read the {split} split of {args.data}: {exc}", file=sys.stderr)
            return 2
    n_train, n_val = int(data["train"]["target"].shape[0]), int(data["val"]["target"].shape[0])
    print(f"[roca-train-class] {n_train} training and {n_val} held-out samples "
          f"({int((data['train']['target'] > 0).sum())} and {int((data['val']['target'] > 0).sum())} on objects)",
          flush=True)
    if n_train == 0:
        print("roca-train-class: no training sample", file=sys.stderr)
        return 2

    log = EpochLog("roca-train-class", "class head", stage.epochs, not args.no_progress, lambda row: (
        f"loss {row['loss']:.3f}, held-out recall at 0.5 {row.get('heldout_recall_before', 0):.3f} -> "
        f"{row.get('heldout_recall', 0):.3f}, precision {row.get('heldout_precision_before', 0):.3f} -> "
        f"{row.get('heldout_precision', 0):.3f} ({row['seconds']:.0f} s)"))
    history = train_class_head(model.class_head, data["train"], data["val"], stage, cfg.image_size, log,
                               cfg.class_mix_mean)
    log.close()
    final = class_errors(model.class_head, data["val"], cfg.image_size, stage.mix, cfg.class_mix_mean)
    path = save_stage(out, "class", model, cfg, extra, stage, ckpt, history, final, {"train_samples": n_train},
                      loss_label="cross-entropy",
                      series=[("heldout_accuracy", "head accuracy on the detections", "-"),
                              ("heldout_recall", "recall at 0.5, re-scored", "-"),
                              ("heldout_precision", "precision at 0.5, re-scored", "-"),
                              ("heldout_recall_before", "recall at 0.5, detector", "--"),
                              ("heldout_precision_before", "precision at 0.5, detector", "--")],
                      right_title="held-out detections", right_ylabel="held-out", legend_size=8)
    print(f"[roca-train-class] held-out: objects with a right-class detection above 0.5 "
          f"{final.get('recall_before', 0):.3f} -> {final.get('recall', 0):.3f}, precision of those detections "
          f"{final.get('precision_before', 0):.3f} -> {final.get('precision', 0):.3f}, head accuracy "
          f"{final.get('accuracy', 0):.3f} ({final.get('detections', 0)} detections); wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
