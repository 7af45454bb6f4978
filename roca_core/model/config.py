"""Configuration of the ROCA network (one dataclass serves every preset).

``config/paper.yaml`` holds the reference sizes (ResNet-50-FPN, 360x480) and
``config/small.yaml`` a CPU-trainable variant; both only override these defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from roca_core.classes import CLASS_NAMES
from roca_core.config_io import ConfigError, from_dict, load_yaml, to_dict

CLASS_MIX_MEANS = ("arithmetic", "geometric")  # how the class head's probability joins the score

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "tiny")
NORMS = ("gn", "bn", "frozen_bn")
VOXELIZE_BACKENDS = ("auto", "pytorch3d", "torch")
MIRROR_HEADS = ("yaw", "centre", "class", "shape")  # crop heads that mirror test-time augmentation can cover


def validate_mirror_heads(heads: Sequence[str]) -> tuple[str, ...]:
    """``model.mirror_heads`` as a tuple; ConfigError for an unknown or repeated head."""
    heads = tuple(heads)
    if not set(heads) <= set(MIRROR_HEADS) or len(set(heads)) != len(heads):
        raise ConfigError(f"model.mirror_heads={list(heads)}; each at most once, from {list(MIRROR_HEADS)}")
    return heads


@dataclass
class LossWeights:
    """Multipliers of every training loss (the paper: w_rot = 2, w_noc = 3, the rest 1)."""

    rpn_objectness: float = 1.0
    rpn_box_reg: float = 1.0
    classifier: float = 1.0
    box_reg: float = 1.0
    mask: float = 1.0
    depth: float = 1.0
    roi_depth: float = 1.0
    box_minmax: float = 1.0
    scale: float = 1.0
    trans_init: float = 1.0
    noc: float = 3.0
    rot: float = 2.0
    trans: float = 1.0
    triplet: float = 1.0
    completion: float = 1.0
    yaw: float = 1.0  # the yaw head's classification (only with model.yaw_bins > 0)
    centre: float = 1.0  # the centre head's regression (only with model.centre_width > 0)
    up: float = 1.0  # the up head's regression (only with model.up_width > 0)
    class_head: float = 1.0  # the class head's classification (only with model.class_width > 0)


@dataclass
class ModelConfig:
    """Every size of the network; the defaults are the paper's (reference implementation)."""

    class_names: tuple[str, ...] = CLASS_NAMES
    # Network input (H, W); images of another size are resized to it (K scaled with them).
    image_height: int = 360
    image_width: int = 480
    # 2D recognition (torchvision Mask R-CNN + FPN, randomly initialised).
    backbone: str = "resnet50"
    tiny_channels: tuple[int, ...] = (32, 64, 128, 256)  # stage widths of backbone "tiny"
    norm: str = "gn"  # no pretrained weights: GroupNorm trains from scratch at small batches
    fpn_channels: int = 256
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.25
    box_head_dim: int = 1024
    mask_head_channels: tuple[int, ...] = (256, 256, 256, 256)
    # ROIAlign's FPN level mapping: a box of sqrt(area) = canonical scale goes to P4
    # (torchvision: 224, tuned for ~800 px images). Scale it with the input size so larger
    # boxes pool from coarser levels.
    roi_canonical_scale: int = 224
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_image: int = 100
    # ROIAlign samples per output bin edge (box, mask and depth-feature crops). torchvision's
    # default 2 costs 4 samples per bin; 1 quarters the CPU cost of ROIAlign and its backward.
    roi_sampling_ratio: int = 2
    # Depth: per-FPN-level channels (x4 levels = fused feature width), output bias init (m).
    depth_level_channels: int = 32
    depth_init: float = 2.0
    # Feed the camera ray (x/z, y/z per pixel, from K) to the depth head (CAM-Convs, CVPR 2019):
    # metric depth from one image depends on the intrinsics and on where a pixel sits relative
    # to the principal point, which convolutions alone can only guess from padding.
    depth_ray_input: bool = False
    # Alignment head.
    roi_size: int = 32
    pixel_mlp_dim: int = 512
    shape_code_dim: int = 512
    shape_dropout: float = 0.3
    trans_offset_hidden: int = 256
    noc_hidden: int = 256
    weight_hidden: int = 256
    # Give the NOC head each pixel's own features besides the centred point and the shape
    # code (the paper's head sees only the point and the code).
    noc_pixel_features: bool = False
    # Add a geometric term to each pixel's features: an MLP of its centred back-projected point
    # and surface normal (from the ROI depth), so the max-pooled shape code, and the NOC head
    # through the pixel features, can see which way the visible surfaces face (orientation
    # cues that image features of a small backbone trained from scratch do not give).
    pixel_geometry: bool = False
    # Yaw head (roca_core/model/yaw_head.py; not in the paper): a small CNN classifies each
    # object's yaw into ``yaw_bins`` bins from a ``yaw_crop`` x ``yaw_crop`` image crop of its
    # box, and its prediction replaces the yaw of the Procrustes rotation. 0: no yaw head.
    yaw_bins: int = 0
    yaw_crop: int = 32
    yaw_width: int = 16  # channels of the first of its three conv blocks (then x2, x4)
    # Centre head (roca_core/model/centre_head.py; not in the paper): a small CNN on a
    # ``centre_crop`` x ``centre_crop`` crop of each box plus the box's geometry regresses the
    # object's 3D centre and size, which replace the translation from the predicted depth (not
    # from measured depth) and the scale head's scale. 0: no centre head.
    centre_width: int = 0
    centre_crop: int = 32
    # Up head (roca_core/model/up_head.py; not in the paper): a small CNN on a 48x64 thumbnail
    # of the image regresses the camera-frame up direction, a predicted upright prior used when
    # no measured up is given. 0: no up head.
    up_width: int = 0
    # Class head (roca_core/model/class_head.py; not in the paper): a small CNN on a
    # ``class_crop`` x ``class_crop`` crop of each detection's box plus the box's geometry
    # classifies it (background or a class); the detection's score becomes
    # ``(1 - class_mix) * score + class_mix * p(label)`` (class_mix_mean "arithmetic"), or
    # ``score ** (1 - class_mix) * p(label) ** class_mix`` ("geometric", the rule of the
    # checkpoints before 2026-11-27, which lowers right detections under the 0.5 threshold).
    # class_mix 0.25 was chosen on two tuning sets for the stage-9 demo model (0.5 before;
    # models/README.md, "Stage 9"). class_width 0: no class head.
    class_width: int = 0
    class_crop: int = 32
    class_mix: float = 0.25
    class_mix_mean: str = "arithmetic"
    # Shape head (roca_core/model/shape_head.py; not in the paper): a small CNN on a
    # ``shape_crop`` x ``shape_crop`` crop of each detection's box embeds it next to the CAD
    # encoder's embeddings; retrieval then searches with it instead of the NOC embedding.
    # 0: no shape head.
    shape_width: int = 0
    shape_crop: int = 32
    # Mirror test-time augmentation (roca_core/model/mirror_tta.py; not in the paper): at
    # inference these crop heads also read the left-right mirror of each crop and average the
    # two answers (a second pass of each head). Any of "yaw", "centre", "class", "shape"; () for none.
    mirror_heads: tuple[str, ...] = ("yaw", "centre", "class")
    min_procrustes_pixels: int = 16
    align_rois_per_image: int = 32  # foreground proposals per image trained through alignment
    align_mask_threshold: float = 0.7
    # Retrieval.
    embedding_dim: int = 256
    voxel_channels: tuple[int, ...] = (32, 64, 128)
    retrieval_mlp_hidden: int = 1024
    retrieval_mask_threshold: float = 0.5
    triplet_margin: float = 0.5
    voxelize_backend: str = "auto"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    # Architecture revision, so checkpoints written before a change keep loading with the
    # network they were trained as. 1: no norm after the voxel encoders' first conv, no
    # LayerNorm on the pooled pixel features, NOC head input relative to t_init.
    # 2: the learning fixes of issue #10 (norms, NOC input centred on the masked centroid).
    arch_version: int = 2

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        if not self.class_names:
            raise ConfigError("model.class_names must not be empty")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone={self.backbone!r}; expected one of {BACKBONES}")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm={self.norm!r}; expected one of {NORMS}")
        if self.voxelize_backend not in VOXELIZE_BACKENDS:
            raise ConfigError(f"model.voxelize_backend={self.voxelize_backend!r}; "
                              f"expected one of {VOXELIZE_BACKENDS}")
        if self.image_height < 32 or self.image_width < 32:
            raise ConfigError(f"model input {self.image_height}x{self.image_width} is too small "
                              "(at least 32x32)")
        if len(self.voxel_channels) != 3:
            raise ConfigError("model.voxel_channels needs 3 entries (32^3 -> 16 -> 8 -> 4)")
        if self.yaw_bins < 0 or (self.yaw_bins and (self.yaw_bins < 4 or self.yaw_crop < 8 or self.yaw_width < 1)):
            raise ConfigError(f"model.yaw_bins={self.yaw_bins} (0 or >= 4), yaw_crop={self.yaw_crop} (>= 8), "
                              f"yaw_width={self.yaw_width} (>= 1)")
        if self.centre_width < 0 or (self.centre_width and self.centre_crop < 8):
            raise ConfigError(f"model.centre_width={self.centre_width} (0 or >= 1), "
                              f"centre_crop={self.centre_crop} (>= 8)")
        if self.up_width < 0:
            raise ConfigError(f"model.up_width={self.up_width} (0: no up head, or >= 1)")
        if self.class_width < 0 or (self.class_width and self.class_crop < 8) or not 0.0 <= self.class_mix <= 1.0:
            raise ConfigError(f"model.class_width={self.class_width} (0 or >= 1), class_crop={self.class_crop} "
                              f"(>= 8), class_mix={self.class_mix} (0 to 1)")
        if self.class_mix_mean not in CLASS_MIX_MEANS:
            raise ConfigError(f"model.class_mix_mean={self.class_mix_mean!r} (one of {', '.join(CLASS_MIX_MEANS)})")
        if self.shape_width < 0 or (self.shape_width and self.shape_crop < 8):
            raise ConfigError(f"model.shape_width={self.shape_width} (0 or >= 1), shape_crop={self.shape_crop} (>= 8)")
        self.mirror_heads = validate_mirror_heads(self.mirror_heads)
        if len(self.tiny_channels) != 4:
            raise ConfigError("model.tiny_channels needs 4 entries (strides 4, 8, 16, 32)")
        if self.roi_sampling_ratio < 1:
            raise ConfigError("model.roi_sampling_ratio must be >= 1")
        if self.arch_version not in (1, 2):
            raise ConfigError(f"model.arch_version={self.arch_version}; this roca builds 1 or 2")
        if self.roi_size % 4 != 0:
            raise ConfigError("model.roi_size must be a multiple of 4")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_height, self.image_width)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: "dict[str, Any] | None") -> "ModelConfig":
        return from_dict(cls, data, "model")

    @classmethod
    def from_yaml(cls, path: "str | Path") -> "ModelConfig":
        """The ``model:`` section of a preset file such as ``config/small.yaml``."""
        data = load_yaml(path)
        if "model" not in data:
            raise ConfigError(f"{path}: no top-level 'model:' section")
        return cls.from_dict(data["model"])


def preset_path(name: str) -> Path:
    """``config/<name>.yaml`` of the installed share dir or the source checkout."""
    from roca_core.paths import REPO_ROOT, share_dir
    for base in (share_dir(), REPO_ROOT):
        p = Path(base) / "config" / f"{name}.yaml"
        if p.is_file():
            return p
    raise ConfigError(f"no preset named {name!r} (looked for config/{name}.yaml)")


def load_preset(name_or_path: str) -> ModelConfig:
    """``"small"``/``"paper"`` or a path to a YAML file with a ``model:`` section."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return ModelConfig.from_yaml(p)
    return ModelConfig.from_yaml(preset_path(name_or_path))
