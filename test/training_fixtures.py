"""Stand-ins for the trainer tests: a tiny model and in-memory data that follow the contracts.

``TinyRocaStandIn`` follows RocaModel's train-mode contract (``model(images, targets)`` ->
dict of scalar losses, a ``class_weights`` buffer of len(CLASS_NAMES)); ``SyntheticRocaData``
follows RocaDataset's sample contract on small images. Both are deliberately cheap so the
loop, checkpointing and DDP can be tested in seconds.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from roca_core.classes import CLASS_NAMES


class SyntheticRocaData(Dataset):
    """N images of one box-shaped object on a plain background, with the contract's keys."""

    def __init__(self, n: int = 8, height: int = 24, width: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.samples = []
        for i in range(n):
            cls = i % 3
            image = torch.rand(3, height, width, generator=g) * 0.2
            x0 = int(torch.randint(0, width // 2, (1,), generator=g))
            y0 = int(torch.randint(0, height // 2, (1,), generator=g))
            x1, y1 = x0 + width // 3, y0 + height // 3
            image[cls, y0:y1, x0:x1] += 0.7
            mask = torch.zeros(1, height, width, dtype=torch.uint8)
            mask[0, y0:y1, x0:x1] = 1
            depth = torch.full((height, width), 3.0)
            depth[y0:y1, x0:x1] = 1.5 + 0.5 * cls
            K = torch.tensor([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]])
            target = {
                "boxes": torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
                "labels": torch.tensor([cls + 1]), "masks": mask, "depth": depth, "K": K,
                "rotations": torch.eye(3)[None], "quaternions": torch.tensor([[1.0, 0, 0, 0]]),
                "translations": torch.tensor([[0.0, 0.0, 1.5 + 0.5 * cls]]),
                "scales": torch.full((1, 3), 0.5),
                "noc": torch.zeros(3, height, width),
                "cad_voxels": torch.zeros(1, 32, 32, 32), "neg_cad_voxels": torch.zeros(1, 32, 32, 32),
                "symmetries": torch.zeros(1, dtype=torch.int64), "cad_ids": [f"cad{cls}"],
                "image_id": i, "scene_id": f"scene{i // 4}",
            }
            self.samples.append((image.clamp(0, 1), target))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples[i]


def collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)


class TinyRocaStandIn(nn.Module):
    """Per-pixel depth regression + class-weighted image classification, with dropout.

    Dropout makes the forward pass consume the global RNG, so the resume test also checks
    that RNG state is restored.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Dropout(0.1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.depth = nn.Conv2d(8, 1, 1)
        self.classifier = nn.Linear(8, len(CLASS_NAMES))
        self.register_buffer("class_weights", torch.ones(len(CLASS_NAMES)))

    def forward(self, images, targets=None):
        x = self.features(torch.stack(images))
        depth = self.depth(x)[:, 0] + 2.0
        gt_depth = torch.stack([t["depth"] for t in targets])
        logits = self.classifier(x.mean((2, 3)))
        labels = torch.stack([t["labels"][0] - 1 for t in targets])
        return {"loss_depth": nn.functional.smooth_l1_loss(depth, gt_depth),
                "loss_classifier": nn.functional.cross_entropy(logits, labels,
                                                               weight=self.class_weights)}


# ------------------------------------------------------------------ the real model, tiny
def tiny_model_config():
    """The small preset shrunk to a 48x64 input and a few channels: ~0.1 s per step on CPU."""
    from roca_core.config_io import from_dict, to_dict
    from roca_core.model.config import ModelConfig, load_preset

    d = to_dict(load_preset("small"))
    d.update(image_height=48, image_width=64, backbone="tiny", tiny_channels=[8, 16, 32, 32],
             fpn_channels=16, box_head_dim=32, mask_head_channels=[16], depth_level_channels=4,
             pixel_mlp_dim=16, shape_code_dim=16, noc_hidden=16, weight_hidden=16,
             trans_offset_hidden=16, embedding_dim=16, voxel_channels=[4, 4, 8],
             retrieval_mlp_hidden=16, anchor_sizes=[8, 16, 32, 64, 128],
             rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
             box_batch_size_per_image=32, rpn_batch_size_per_image=64, align_rois_per_image=4)
    return from_dict(ModelConfig, d, "model")


def model_synthetic_samples(n: int = 4, height: int = 48, width: int = 64) -> list:
    """Self-consistent samples of the dataset contract from roca_core.model.synthetic."""
    from roca_core.model.synthetic import make_sample
    return [make_sample(height, width, num_objects=2, seed=i) for i in range(n)]
