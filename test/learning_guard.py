"""The learning guard: a reduced ROCA network must overfit a few rendered images.

If targets, NOC conventions, Procrustes, the losses or their gradient paths break, the
network can no longer fit even four images; a unit test of one part would not notice a
sign flipped between two parts. The check runs the 3D heads on the ground-truth boxes, so it
measures alignment and retrieval, not the (slower to train) detector.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.geometry.rotations import matrix_to_quat


def guard_model_config():
    """The small preset at 96x128 with narrow layers (about 0.5 s per training step on 2 cores)."""
    from roca_core.config_io import from_dict, to_dict
    from roca_core.model.config import ModelConfig, load_preset

    d = to_dict(load_preset("small"))
    d.update(image_height=96, image_width=128, tiny_channels=[16, 32, 64, 64], fpn_channels=32,
             box_head_dim=64, mask_head_channels=[32], depth_level_channels=8, pixel_mlp_dim=64,
             shape_code_dim=64, noc_hidden=64, weight_hidden=32, trans_offset_hidden=32,
             embedding_dim=32, voxel_channels=[8, 8, 16], retrieval_mlp_hidden=64,
             anchor_sizes=[8, 16, 32, 64, 128], roi_canonical_scale=56, roi_size=16,
             rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
             box_batch_size_per_image=32, rpn_batch_size_per_image=64, align_rois_per_image=8,
             shape_dropout=0.0)
    return from_dict(ModelConfig, d, "model")


def train_reduced_model(data_root: Path, out_dir: Path, iterations: int, seed: int = 0):
    """Train the guard model on every image of ``data_root``'s train split (batch = all)."""
    from roca_core.data.loader import RocaDataset, collate_fn
    from roca_core.training.config import DataConfig, ExperimentConfig, TrainConfig
    from roca_core.training.trainer import Trainer
    from roca_core.model import RocaModel

    cfg = guard_model_config()
    dataset = RocaDataset(str(data_root), split="train", image_size=cfg.image_size)
    train = TrainConfig(seed=seed, max_iter=iterations, ims_per_batch=len(dataset), optimizer="adamw",
                        base_lr=3e-3, momentum=0.9, weight_decay=0.0, warmup_iters=20,
                        lr_steps=(int(iterations * 0.8),), clip_grad_norm=10.0, clip_per_head=True,
                        class_weighting=False, num_workers=0, checkpoint_period=0, eval_period=0,
                        device="cpu", out_dir=str(out_dir))
    exp = ExperimentConfig(model=cfg, data=DataConfig(root=str(data_root), augment=False), train=train)
    torch.manual_seed(seed)
    model = RocaModel(cfg)
    trainer = Trainer(exp, out_dir, model=model, train_dataset=dataset, collate_fn=collate_fn,
                      progress=False, export_inference_model=False, log=lambda _m: None)
    try:
        trainer.train()
    finally:
        trainer.close()
    return model.eval(), dataset


@dataclasses.dataclass
class GuardResult:
    rotation_deg: np.ndarray   # (N,) per ground-truth object
    translation_m: np.ndarray  # (N,)
    scale_err: np.ndarray      # (N,) max |s_pred / s_gt - 1| over the axes
    retrieved: np.ndarray      # (N,) bool: the object's own CAD is the nearest same-class CAD
    candidates: np.ndarray     # (N,) same-class CADs in the data set's database

    def aligned(self, cm: float = 10.0, deg: float = 10.0, scale: float = 0.10) -> np.ndarray:
        return (self.translation_m <= cm / 100) & (self.rotation_deg <= deg) & (self.scale_err <= scale)

    def retrieval_accuracy(self) -> float:
        """Top-1 over objects whose class has another CAD to confuse it with."""
        return float(self.retrieved[self.candidates >= 2].mean())


@torch.no_grad()
def measure(model, dataset, cad_db_dir: Path) -> GuardResult:
    """Pose errors and retrieval of every object, the 3D heads run on the ground-truth boxes.

    Retrieval ranks the same-class CADs of the data set's database, the pool its triplet
    negatives come from; only classes with two or more CADs there can be told apart.
    """
    from roca_core.data.cad_database import CadDatabase
    from roca_core.evaluation.alignment_metric import rotation_error_deg

    db = CadDatabase.load(cad_db_dir)
    cad_z = model.embed_cad(torch.as_tensor(db.voxels).float()).numpy()
    rot, trans, scale, hit, cands = [], [], [], [], []
    for i in range(len(dataset)):
        image, t = dataset[i]
        out = model([image], intrinsics=[t["K"]], gt_boxes=[t["boxes"]], gt_labels=[t["labels"]])[0]
        for j in range(t["boxes"].shape[0]):
            sym = Symmetry(int(t["symmetries"][j]))
            q_pred = matrix_to_quat(out["rotations"][j][None].double())[0].numpy()
            q_gt = matrix_to_quat(t["rotations"][j][None].double())[0].numpy()
            rot.append(rotation_error_deg(q_pred, q_gt, sym))
            trans.append(float((out["translations"][j] - t["translations"][j]).norm()))
            scale.append(float((out["scales"][j] / t["scales"][j] - 1).abs().max()))
            rows = db.indices_of_class(CLASS_NAMES[int(t["labels"][j]) - 1])
            z = out["noc_embeddings"][j].numpy()
            best = rows[np.argmin(((cad_z[rows] - z) ** 2).sum(1))]
            hit.append(db.ids[best] == t["cad_ids"][j])
            cands.append(len(rows))
    return GuardResult(np.array(rot), np.array(trans), np.array(scale), np.array(hit), np.array(cands))
