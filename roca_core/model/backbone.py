"""Feature extractor + FPN for Mask R-CNN, built from ``ModelConfig`` (no pretrained weights)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from roca_core.model.config import ModelConfig

_RESNET_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """GroupNorm (8 groups for narrow layers, 32 otherwise), BatchNorm or frozen BatchNorm."""
    if kind == "gn":
        return lambda c: nn.GroupNorm(32 if c % 32 == 0 and c >= 128 else 8 if c % 8 == 0 else 1, c)
    if kind == "bn":
        return nn.BatchNorm2d
    return FrozenBatchNorm2d


class TinyBackbone(nn.Module):
    """Four stride-2 stages of two 3x3 convs: a fast stand-in for ResNet in CPU tests."""

    def __init__(self, channels: tuple[int, ...], norm: Callable[[int], nn.Module]) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True))

        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False),
                                  norm(channels[0]), nn.ReLU(inplace=True))
        self.layer1 = block(channels[0], channels[0])
        self.layer2 = block(channels[0], channels[1])
        self.layer3 = block(channels[1], channels[2])
        self.layer4 = block(channels[2], channels[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # only used through IntermediateLayerGetter
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """Body (ResNet or tiny) with an FPN of width ``cfg.fpn_channels`` over strides 4..32 (+pool)."""
    norm = norm_layer(cfg.norm)
    if cfg.backbone == "tiny":
        body: nn.Module = TinyBackbone(cfg.tiny_channels, norm)
        in_channels = list(cfg.tiny_channels)
    else:
        body = getattr(resnet, cfg.backbone)(weights=None, norm_layer=norm)
        in_channels = list(_RESNET_CHANNELS[cfg.backbone])
    return_layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    return BackboneWithFPN(body, return_layers, in_channels, cfg.fpn_channels, extra_blocks=LastLevelMaxPool())
