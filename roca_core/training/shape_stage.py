"""Train a network's shape head on its own (roca-train-shape): crops of the ground-truth boxes
-> an embedding next to their CAD model's, with the CAD encoder and the rest of the network
frozen and untouched.

The CAD models of the data set are embedded once with the network's CAD encoder; each crop's
target is its own CAD model among those of its class (``shape_head.shape_logits``). The crops
are the crop cache the yaw and centre stages use (``roca_core.training.crop_cache``); the CAD
model of each cached object comes from the data set's annotations, in the cache's order
(images in order, their kept annotations in order), checked against the cached translations.
The head also reads each object's size as the network will give it at run time: the centre
head's prediction from the same crop when the network has one (``predicted_sizes``), else the
true size; training jitters it by ``size_jitter`` (log-normal) so the head does not lean on a
precision the held-out predictions lack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from roca_core.model.shape_head import ShapeHead, shape_logits, shape_loss
from roca_core.training.crop_augment import mirror, random_flips, relight, shift_zoom
from roca_core.training.head_epochs import HeadStageConfig, train_epochs, with_head


@dataclass
class ShapeStageConfig(HeadStageConfig):
    crop: int = 32
    width: int = 16
    epochs: int = 15
    # Mirror, shift, zoom and relight the training crops (``crop_augment``): a mirrored object
    # is still its CAD model (the library's models are left-right symmetric in shape).
    augment: bool = True
    # Standard deviation of the log-normal jitter of the training sizes (the centre head's
    # sizes are about 9 % off on held-out objects, less on the crops it trained on).
    size_jitter: float = 0.08


class CadTargets:
    """The data set's CAD models embedded by the network's CAD encoder, and which of them each
    class may retrieve. ``embedding`` (M, E), ``classes`` (M,) 0-based, ``ids`` (M,)."""

    def __init__(self, model: torch.nn.Module, database: Any, class_names: "tuple[str, ...]") -> None:
        if database is None or len(database) == 0:
            raise ValueError("the data set has no CAD database (cad_db) to embed")
        self.ids = list(database.ids)
        index = {name: i for i, name in enumerate(class_names)}
        self.classes = torch.tensor([index.get(c, -1) for c in database.model_classes])
        was_training = model.training
        model.eval()
        with torch.no_grad():
            vox = torch.from_numpy(np.asarray(database.voxels, dtype=np.float32))
            self.embedding = torch.cat([model.embed_cad(vox[k:k + 64]).float() for k in range(0, len(vox), 64)])
        model.train(was_training)

    @classmethod
    def from_embeddings(cls, ids: "list[str]", classes: torch.Tensor, embedding: torch.Tensor) -> "CadTargets":
        """Targets from CAD embeddings computed elsewhere (M ids, (M,) classes, (M, E))."""
        self = cls.__new__(cls)
        self.ids, self.classes, self.embedding = list(ids), classes.long(), embedding.float()
        return self

    def allowed(self, cls: torch.Tensor) -> torch.Tensor:
        """(R,) 0-based classes -> (R, M) bool: the CAD models of each object's class."""
        return self.classes[None, :] == cls[:, None]


def cad_indices(dataset: Any, cads: CadTargets, cached: dict[str, torch.Tensor], max_images: int = 0) -> torch.Tensor:
    """(R,) index into ``cads.ids`` of each cached object's CAD model (-1: not in the database),
    read from the annotations in the crop cache's order; ValueError when that order does not
    match the cache (its object count or translations ``t`` differ)."""
    where = {cad_id: i for i, cad_id in enumerate(cads.ids)}
    out, trans = [], []
    n_images = len(dataset) if not max_images else min(max_images, len(dataset))
    for i in range(n_images):
        for a in dataset.annotations(i):
            out.append(where.get(str(a.get("model", {}).get("id_cad")), -1))
            trans.append(a["t"])
    idx = torch.tensor(out, dtype=torch.int64)
    t = cached["t"]
    if idx.numel() != t.shape[0] or not torch.allclose(torch.tensor(trans, dtype=torch.float32).reshape(-1, 3),
                                                      t.float(), atol=1e-3):
        raise ValueError(f"the crop cache ({t.shape[0]} objects) does not match the annotations "
                         f"({idx.numel()}); delete the cache to cut it again")
    return idx


@torch.no_grad()
def predicted_sizes(model: torch.nn.Module, data: dict[str, torch.Tensor], image_hw: tuple[int, int],
                    batch: int = 512) -> torch.Tensor:
    """(R, 3) each cached object's size as the network predicts it: its centre head's size from
    the crop and the box (``centre_head.decode_size``), or the true size ``s`` without one."""
    from roca_core.model.centre_head import box_geometry, decode_size

    head = getattr(model, "centre_head", None)
    if head is None:
        return data["s"].float().clone()
    was_training = head.training
    head.eval()
    out = []
    for j in range(0, data["cls"].shape[0], batch):
        sl = slice(j, j + batch)
        boxes, K = data["boxes"][sl], data["K"][sl]
        pred = head(data["x"][sl].float() / 255, box_geometry(boxes, K, image_hw), data["cls"][sl])
        out.append(decode_size(pred).float())
    head.train(was_training)
    return torch.cat(out) if out else data["s"].float().clone()


@torch.no_grad()
def ranked_accuracy(embed: "Callable[[torch.Tensor], torch.Tensor]", data: dict[str, torch.Tensor],
                    sel: torch.Tensor, cads: CadTargets, batch: int = 512) -> dict[str, float]:
    """Over objects ``sel`` (indices into ``data``'s ``cls`` and ``cad`` columns), with
    ``embed(idx)`` -> their embeddings (B, E): the share whose nearest CAD model of their class is
    theirs (top-1) and among the 5 nearest (top-5), and chance top-1. Shared by the shape and
    the retrieval stages, so their figures mean the same."""
    top1 = top5 = 0
    chance = 0.0
    for j in range(0, sel.numel(), batch):
        idx = sel[j:j + batch]
        allowed = cads.allowed(data["cls"][idx])
        logits = shape_logits(embed(idx), cads.embedding, allowed, torch.zeros(()))
        rank = (logits > logits.gather(1, data["cad"][idx][:, None])).sum(dim=1)  # CAD models ahead of the right one
        top1 += int((rank == 0).sum())
        top5 += int((rank < 5).sum())
        chance += float((1.0 / allowed.sum(dim=1).clamp_min(1)).sum())
    n = max(1, sel.numel())
    return {"top1": top1 / n, "top5": top5 / n, "chance_top1": chance / n, "objects": int(sel.numel())}


def retrieval_accuracy(head: ShapeHead, data: dict[str, torch.Tensor], cads: CadTargets,
                       batch: int = 512) -> dict[str, float]:
    """``ranked_accuracy`` of the shape head over the objects whose CAD model is in the database."""
    head.eval()
    out = ranked_accuracy(lambda idx: head(data["x"][idx].float() / 255, data["cls"][idx], data["size"][idx]),
                          data, torch.where(data["cad"] >= 0)[0], cads, batch)
    head.train()
    return out


def train_shape_head(head: ShapeHead, train: dict[str, torch.Tensor], val: "dict[str, torch.Tensor] | None",
                     cads: CadTargets, cfg: ShapeStageConfig,
                     log: "Callable[[dict[str, Any]], None] | None" = None) -> list[dict[str, Any]]:
    """AdamW on ``shape_loss`` with cosine decay; -> one dict per epoch (loss, held-out top-1
    and top-5, seconds). ``train``/``val``: crop cache splits with ``cad`` (index into
    ``cads``) and ``size`` ((R, 3), ``predicted_sizes``) columns."""
    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cls = train["cls"][idx]
        x = train["x"][idx].float() / 255
        if cfg.augment:
            x = relight(shift_zoom(mirror(x, random_flips(x.shape[0], gen)), gen), gen)
        size = train["size"][idx] * torch.exp(cfg.size_jitter * torch.randn(idx.numel(), 3, generator=gen))
        logits = shape_logits(head(x, cls, size), cads.embedding, cads.allowed(cls), head.log_temperature)
        return shape_loss(logits, train["cad"][idx])

    heldout = None if val is None else lambda: retrieval_accuracy(head, val, cads)
    return train_epochs(head, head.parameters(), cfg, torch.where(train["cad"] >= 0)[0], batch_loss, heldout, log)

def with_shape_head(model: torch.nn.Module, cfg: Any, stage: ShapeStageConfig) -> tuple[torch.nn.Module, Any]:
    """-> (the network with a fresh shape head of the stage's size, its config). An existing
    head of the same size is kept (training continues from it)."""
    return with_head(model, cfg, "shape_head", {"shape_width": stage.width, "shape_crop": stage.crop},
                     lambda c: ShapeHead(c.num_classes, stage.crop, stage.width, c.embedding_dim))
