"""``roca-train-retrieval``: train a network's NOC encoder (retrieval from NOCs) on the
ground-truth NOCs of a data set, alone.

Examples::

    roca-train-retrieval --checkpoint models/roca_demo.safetensors --data data/synthetic --out out/retrieval
    roca-train-retrieval --checkpoint out/retrieval/model_retrieval.safetensors --epochs 2    # continue

Writes OUT/model_retrieval.safetensors (the same network with the retrained NOC encoder and the
shape code's term of the query switched off), OUT/retrieval_history.json and
OUT/retrieval_curve.png (held-out retrieval top-1 and top-5 from ground-truth NOCs per epoch).
The CAD encoder stays as it is, so a CAD database it embedded and a shape head stay valid. The
NOC samples are cached in OUT/nocs_<split>.pt, so a second run starts training at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from roca_core.cli.head_stage import head_stage_parser
    from roca_core.training.retrieval_stage import RetrievalStageConfig

    d = RetrievalStageConfig()
    p = head_stage_parser("roca-train-retrieval", __doc__, d,
                          "trained network (.safetensors) whose NOC encoder to train", crop_and_width=False,
                          data_help="data set root with its CAD database (train split trains, val split reports)",
                          workers_help="processes that cut the NOC samples")
    p.add_argument("--noise", type=float, default=d.noise,
                   help="standard deviation of the jitter added to the training NOCs (NOC units)")
    return p


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.cli.head_stage import EpochLog, load_base, save_stage
    from roca_core.data.loader import RocaDataset
    from roca_core.training.retrieval_stage import (RetrievalStageConfig, cached_nocs, noc_only,
                                                    noc_retrieval_accuracy, train_noc_encoder)
    from roca_core.training.shape_stage import CadTargets

    if args.epochs < 1 or args.batch < 1 or args.lr <= 0 or args.noise < 0 or args.workers < 1:
        print("roca-train-retrieval: need --epochs >= 1, --batch >= 1, --lr > 0, --noise >= 0, --workers >= 1",
              file=sys.stderr)
        return 2
    stage = RetrievalStageConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                                 workers=args.workers, max_train_images=args.max_train_images, noise=args.noise)
    ckpt = Path(args.checkpoint)
    base = load_base("roca-train-retrieval", args.checkpoint, args.threads, args.seed)
    if base is None:
        return 2
    model, cfg, extra = base
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        train_ds = RocaDataset(args.data, "train", image_size=cfg.image_size, class_names=cfg.class_names)
        cads = CadTargets(model, train_ds.cad_database, cfg.class_names)
        data = {split: cached_nocs(out, args.data, split, cfg.image_size, cfg.class_names, cfg.roi_size, cads.ids,
                                   stage.workers, stage.max_train_images if split == "train" else 0,
                                   log=lambda m: print(f"[roca-train-retrieval] {m}", flush=True))
                for split in ("train", "val")}
    except (FileNotFoundError, ValueError) as exc:
        print(f"roca-train-retrieval: {exc}", file=sys.stderr)
        return 2
    n_train, n_val = int((data["train"]["cad"] >= 0).sum()), int((data["val"]["cad"] >= 0).sum())
    print(f"[roca-train-retrieval] {len(cads.ids)} CAD models; {n_train} training and {n_val} held-out objects "
          f"with one of them", flush=True)
    if n_train == 0:
        print("roca-train-retrieval: no training object's CAD model is in the CAD database", file=sys.stderr)
        return 2

    head = model.retrieval_head
    before = noc_retrieval_accuracy(head, data["val"], cads)
    noc_only(head)
    log = EpochLog("roca-train-retrieval", "NOC encoder", stage.epochs, not args.no_progress, lambda row: (
        f"loss {row['loss']:.3f}, held-out top-1 {row.get('heldout_top1', 0):.3f}, top-5 "
        f"{row.get('heldout_top5', 0):.3f} ({row['seconds']:.0f} s)"))
    history = train_noc_encoder(head, data["train"], data["val"], cads, stage, log)
    log.close()
    final = noc_retrieval_accuracy(head, data["val"], cads)
    path = save_stage(out, "retrieval", model, cfg, extra, stage, ckpt, history, final, {"train_objects": n_train},
                      also={"heldout_before": before}, loss_label="cross-entropy over CADs",
                      series=[("heldout_top1", "top-1"), ("heldout_top5", "top-5")],
                      right_title="held-out, GT NOCs (dotted: chance)",
                      right_ylabel="held-out share", chance={"heldout_top1": final["chance_top1"]})
    print(f"[roca-train-retrieval] held-out, from ground-truth NOCs: the right CAD model first for "
          f"{final['top1']:.3f} of {final['objects']} objects (before: {before['top1']:.3f}; chance "
          f"{final['chance_top1']:.3f}), among the first five for {final['top5']:.3f}; wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
