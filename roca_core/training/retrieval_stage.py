"""Train the retrieval head's NOC encoder on its own (roca-train-retrieval): the voxelised
ground-truth NOCs of each training object -> an embedding next to its CAD model's, with the CAD
encoder and the rest of the network frozen and untouched.

Why a stage of its own: in joint training the NOC encoder learns from the network's own NOCs,
which carry little shape for most of training, through a triplet loss with one negative CAD
model. From the ground-truth NOCs of the held-out split the demo network's encoder put the right
CAD model first for 34 % of the objects (issue #10 asks for 60 %). Here it learns from the
ground-truth NOCs against all of its class's CAD models at once (the shape head's softmax,
``shape_head.shape_logits``), on samples cut exactly as the network's ROI grid cuts them
(``roi_sampling.gt_noc_rois``), slightly jittered (``noise``). More jitter does not make the
encoder read the network's own NOCs better: they lack the shape, not the precision (0.08 lowered
the held-out top-1 from ground-truth NOCs and left the one from predicted NOCs near chance;
models/README.md).

The stage switches the shape code's term of the query embedding off (``noc_only``): the code
comes from the network's detections, which this stage does not run, so the embedding it trains
is the NOCs' alone. A CAD database the CAD encoder embedded stays valid, and so does a shape
head (it lives next to the same CAD embeddings).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from roca_core.geometry.voxelize import voxelize_points
from roca_core.model.retrieval_head import GRID, RetrievalHead
from roca_core.model.shape_head import shape_logits, shape_loss
from roca_core.training.crop_cache import keyed_cache, map_image_chunks
from roca_core.training.head_epochs import HeadStageConfig, train_epochs
from roca_core.training.shape_stage import CadTargets, ranked_accuracy

NOCS_VERSION = 1  # cached NOC samples of another version are cut again

# per object: p (R, S*S, 3) float16 ground-truth NOCs on the ROI grid, w (R, S*S) bool the
# object's pixels with depth, cls (R,) 0-based class, cad (R,) index into the CAD ids the
# samples were cut for (-1: not in the database)
KEYS = ("p", "w", "cls", "cad")


@dataclass
class RetrievalStageConfig(HeadStageConfig):
    epochs: int = 6
    # standard deviation of the Gaussian jitter added to every training NOC (NOC units, the
    # CAD's box is 1 wide)
    noise: float = 0.02


def _empty(size: int) -> dict[str, torch.Tensor]:
    return {"p": torch.zeros(0, size * size, 3, dtype=torch.float16), "w": torch.zeros(0, size * size, dtype=torch.bool),
            "cls": torch.zeros(0, dtype=torch.int64), "cad": torch.zeros(0, dtype=torch.int64)}


def _nocs_chunk(job: tuple) -> dict[str, torch.Tensor]:
    root, split, image_size, class_names, size, cad_ids, start, stop = job
    torch.set_num_threads(1)
    from roca_core.data.loader import RocaDataset
    from roca_core.model.roi_sampling import gt_noc_rois

    ds = RocaDataset(root, split, image_size=image_size, class_names=class_names)
    where = {c: i for i, c in enumerate(cad_ids)}
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS}
    for i in range(start, min(stop, len(ds))):
        _, t = ds[i]
        if t["boxes"].shape[0] == 0:
            continue
        points, weights = gt_noc_rois(t["noc"], t["masks"].float(), t["depth"], t["boxes"].float(), size)
        parts["p"].append(points.half())
        parts["w"].append(weights > 0)
        parts["cls"].append(t["labels"] - 1)
        parts["cad"].append(torch.tensor([where.get(c, -1) for c in t["cad_ids"]], dtype=torch.int64))
    if not parts["p"]:
        return _empty(size)
    return {k: torch.cat(v) for k, v in parts.items()}


def cached_nocs(out: Path, root: "str | Path", split: str, image_size: tuple[int, int], class_names: tuple[str, ...],
                size: int, cad_ids: "list[str]", workers: int = 1, max_images: int = 0,
                log: Callable[[str], None] = print) -> dict[str, torch.Tensor]:
    """Every ground-truth object's NOC sample of a split (``KEYS``), cut by ``workers`` processes
    from the targets at the network input ``image_size`` on an ``size`` x ``size`` ROI grid,
    through the cache file OUT/nocs_<split>.pt (reused when cut from the same data, sizes and
    CAD ids by this version)."""
    from roca_core.data.loader import RocaDataset

    key = {"version": NOCS_VERSION, "data": str(Path(root).resolve()), "size": list(image_size), "roi": size,
           "cads": list(cad_ids), "max_images": max_images}

    def cut() -> dict[str, torch.Tensor]:
        n = len(RocaDataset(root, split, class_names=class_names))
        if max_images:
            n = min(n, max_images)
        parts = map_image_chunks(_nocs_chunk, lambda a, b: (str(root), split, tuple(image_size), tuple(class_names),
                                                            size, tuple(cad_ids), a, b), n, workers)
        return {k: torch.cat([p[k] for p in parts]) for k in KEYS} if parts else _empty(size)

    return keyed_cache(Path(out) / f"nocs_{split}.pt", key, "nocs", cut,
                       f"cutting the ground-truth NOCs of the {split} images of {root} ({workers} worker(s))", log)


def noc_grids(data: dict[str, torch.Tensor], idx: torch.Tensor, backend: str = "torch", noise: float = 0.0,
              gen: "torch.Generator | None" = None) -> torch.Tensor:
    """Objects ``idx`` (B,) of a NOC cache -> their voxel grids (B, 32, 32, 32), as the
    retrieval head voxelises NOCs; ``noise`` jitters each point first."""
    points = data["p"][idx].float()
    if noise:
        points = points + noise * torch.randn(points.shape, generator=gen)
    return voxelize_points(points, data["w"][idx].float(), GRID, backend=backend)


def usable(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Indices of the cached objects that can be scored: with NOC pixels and a CAD model in the
    database."""
    return torch.where((data["cad"] >= 0) & data["w"].any(dim=1))[0]


def noc_only(head: RetrievalHead) -> None:
    """Switch the shape code's term of the query embedding off: zero the output layer of
    ``shape_mlp`` so it gives 0 for any code (its ReLU keeps it there in later training)."""
    last = [m for m in head.shape_mlp if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def noc_retrieval_accuracy(head: RetrievalHead, data: dict[str, torch.Tensor], cads: CadTargets,
                           batch: int = 256) -> dict[str, float]:
    """``shape_stage.ranked_accuracy`` of the NOC encoder over the objects with NOC pixels whose
    CAD model is in the database."""
    enc = head.noc_encoder
    was_training = enc.training
    enc.eval()
    sel = usable(data)
    out = ranked_accuracy(lambda idx: enc(noc_grids(data, idx, head.backend)), data, sel, cads, batch)
    enc.train(was_training)
    return out


def train_noc_encoder(head: RetrievalHead, train: dict[str, torch.Tensor], val: "dict[str, torch.Tensor] | None",
                      cads: CadTargets, cfg: RetrievalStageConfig,
                      log: "Callable[[dict[str, Any]], None] | None" = None) -> list[dict[str, Any]]:
    """AdamW on ``shape_loss`` over the class's CAD models with cosine decay, the NOC encoder
    only (its softmax temperature is learnt here and not kept); -> one dict per epoch (loss,
    held-out top-1 and top-5, seconds)."""
    enc = head.noc_encoder
    log_temperature = torch.nn.Parameter(torch.zeros(()))

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = enc(noc_grids(train, idx, head.backend, cfg.noise, gen))
        return shape_loss(shape_logits(z, cads.embedding, cads.allowed(train["cls"][idx]), log_temperature),
                          train["cad"][idx])

    heldout = None if val is None else lambda: noc_retrieval_accuracy(head, val, cads)
    return train_epochs(enc, [*enc.parameters(), log_temperature], cfg, usable(train), batch_loss, heldout, log)
