"""What the three head-stage CLIs (roca-train-yaw, roca-train-centre, roca-train-up) share: the
base checkpoint, the crop cache of both splits and the per-epoch progress line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from roca_core.config_io import ConfigError


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
