"""What the head-stage CLIs (roca-train-yaw, -centre, -up, -class, -shape, -retrieval) share:
their common options, the base checkpoint, the crop cache of both splits, the per-epoch progress
line and the files a stage leaves (checkpoint, history, curves)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from roca_core.config_io import ConfigError


def head_stage_parser(prog: str, doc: str, defaults: Any, checkpoint_help: str, *, crop_and_width: bool = True,
                      data_help: str = "data set root (train split trains, val split reports)",
                      workers_help: str = "processes that cut the crops") -> argparse.ArgumentParser:
    """The options every head stage takes, with ``defaults`` (the stage's config dataclass)
    giving the epochs, batch, learning rate, workers and seed; ``crop_and_width`` adds the crop
    side and the first conv block's width (the heads that read an image crop). The CLI adds
    its own options after these."""
    p = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--data", default="data/synthetic", help=data_help)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    if crop_and_width:
        p.add_argument("--crop", type=int, default=defaults.crop, help="crop side in pixels")
        p.add_argument("--width", type=int, default=defaults.width, help="channels of the first conv block")
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--workers", type=int, default=defaults.workers, help=workers_help)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--max-train-images", type=int, default=0, help="use at most this many training images (0: all)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--no-progress", action="store_true", help="one line per epoch, no bar")
    return p


def load_base(prog: str, checkpoint: str, threads: int, seed: int) -> "tuple[Any, Any, dict] | None":
    """-> (model, config, extra) of the checkpoint, with torch's threads and seed set; None
    (after saying why on stderr) when it is missing or unreadable."""
    import torch

    from roca_core.checkpoint import load_checkpoint

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        print(f"{prog}: checkpoint not found: {ckpt}", file=sys.stderr)
        return None
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        return load_checkpoint(ckpt)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"{prog}: cannot load {ckpt}: {exc}", file=sys.stderr)
        return None


def both_splits(prog: str, out: Path, data: str, cfg: Any, crop: int, bins: int, workers: int,
                max_train_images: int) -> "dict[str, dict] | None":
    """The cached crops of the train and val splits (``crop_cache.cached_crops``); None (after
    saying why on stderr) when a split cannot be read."""
    from roca_core.training.crop_cache import cached_crops

    splits = {}
    for split in ("train", "val"):
        try:
            splits[split] = cached_crops(out, data, split, cfg.image_size, cfg.class_names, crop, bins, workers,
                                         max_train_images if split == "train" else 0,
                                         log=lambda m: print(f"[{prog}] {m}", flush=True))
        except (FileNotFoundError, ValueError) as exc:
            print(f"{prog}: cannot read the {split} split of {data}: {exc}", file=sys.stderr)
            return None
    return splits


class EpochLog:
    """Per-epoch progress: a tqdm bar with the epoch's summary, or one printed line per epoch
    (``--no-progress``). ``describe(row)`` -> the summary text of a history row."""

    def __init__(self, prog: str, desc: str, epochs: int, bar: bool, describe: Callable[[dict], str]) -> None:
        self.prog, self.describe = prog, describe
        self.bar = None
        if bar:
            from tqdm import tqdm
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch")

    def __call__(self, row: dict) -> None:
        text = self.describe(row)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text)
        else:
            print(f"[{self.prog}] epoch {row['epoch']}: {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def save_stage(out: Path, head: str, model: Any, cfg: Any, extra: "dict | None", stage: Any, base: Path,
               history: list[dict], final: dict, counts: dict, also: "dict | None" = None, **curve: Any) -> Path:
    """Write what every head stage leaves in OUT, so the stages stay alike: model_<head>.safetensors
    (the base's extra plus ``<head>_stage``: the stage's settings, the base checkpoint, the held-out
    result, ``also`` and ``counts``), <head>_history.json (settings, history, held-out result and
    ``also``) and <head>_curve.png (``plot_stage_curves`` with ``curve``); -> the checkpoint's path."""
    from roca_core.checkpoint import save_checkpoint

    also = also or {}
    settings = asdict(stage)
    extra = dict(extra or {}, **{f"{head}_stage": {**settings, "base_checkpoint": str(base), "heldout": final,
                                                   **also, **counts}})
    path = save_checkpoint(out / f"model_{head}.safetensors", model, cfg, extra)
    (out / f"{head}_history.json").write_text(json.dumps({"stage": settings, "history": history, "heldout": final,
                                                          **also}, indent=1))
    plot_stage_curves(history, out / f"{head}_curve.png", head, **curve)
    return path


def plot_stage_curves(history: list[dict], path: Path, head: str, loss_label: str,
                      series: "list[tuple[str, str] | tuple[str, str, str]]", right_title: str, right_ylabel: str,
                      chance: "dict[str, float] | None" = None, twin: "tuple[str, str, str] | None" = None,
                      legend_size: "int | None" = None) -> None:
    """The two-panel figure of a stage, to see at a glance whether the head learnt: left the
    training loss (``training loss (<loss_label>)``), right the held-out ``series`` per epoch,
    (history key, legend label[, line style]) pairs of shares in [0, 1]. ``chance``: history key ->
    a dotted line in that series' colour; ``twin``: (history key, legend label, axis label) of a
    share on a second y axis in [0, 1], for when the ``series`` are not shares (degrees)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chance = chance or {}
    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["loss"] for r in history])
    a.set(xlabel="epoch", ylabel=f"training loss ({loss_label})", title=f"{head} head: loss")
    a.grid(alpha=0.3)
    lines = []
    for key, label, *style in series:
        line, = b.plot(ep, [r.get(key, float("nan")) for r in history], *style, label=label)
        lines.append(line)
        if key in chance:
            b.axhline(chance[key], color=line.get_color(), ls=":", lw=1)
    b.set(xlabel="epoch", ylabel=right_ylabel, title=f"{head} head: {right_title}")
    b.grid(alpha=0.3)
    if twin is None:
        b.set(ylim=(0, 1))
        b.legend(fontsize=legend_size)
    else:
        key, label, ylabel = twin
        b2 = b.twinx()
        # the second axis has a colour cycle of its own: go on with the panel's
        line, = b2.plot(ep, [r.get(key, float("nan")) for r in history], color=f"C{len(lines)}", label=label)
        b2.set(ylabel=ylabel, ylim=(0, 1))
        b.legend(handles=[*lines, line], loc="center right", fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
