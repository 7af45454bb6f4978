"""Dense metric depth from the FPN (multi-scale fusion + PixelShuffle) and its losses."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from roca_core.model.backbone import norm_layer


class DepthHead(nn.Module):
    """P2..P5 -> ``level_channels`` each, up to 1/4 resolution, concatenated (the depth
    features F^d the alignment head crops), two 5x5 convs, 1x1 to 16, PixelShuffle(4).

    With ``ray_input`` the first fusion conv also sees each stride-4 cell's camera ray
    (x/z, y/z) computed from K, so the head can reason about metric geometry (e.g. where the
    floor must be for a given pitch) instead of inferring pixel position from padding."""

    LEVELS = ("0", "1", "2", "3")
    STRIDE = 4

    def __init__(self, fpn_channels: int, level_channels: int = 32, depth_init: float = 2.0,
                 norm: str = "gn", ray_input: bool = False) -> None:
        super().__init__()
        nl = norm_layer(norm)
        self.ray_input = ray_input
        self.lateral = nn.ModuleList([
            nn.Sequential(nn.Conv2d(fpn_channels, level_channels, 3, padding=1, bias=False),
                          nl(level_channels), nn.ReLU(inplace=True)) for _ in self.LEVELS])
        fused = 4 * level_channels
        self.out_channels = fused
        self.fuse = nn.Sequential(
            nn.Conv2d(fused + (2 if ray_input else 0), fused, 5, padding=2, bias=False), nl(fused),
            nn.ReLU(inplace=True),
            nn.Conv2d(fused, fused, 5, padding=2, bias=False), nl(fused), nn.ReLU(inplace=True))
        self.to_depth = nn.Conv2d(fused, 16, 1)
        nn.init.normal_(self.to_depth.weight, std=1e-3)
        nn.init.constant_(self.to_depth.bias, depth_init)  # start near a typical indoor depth
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, features: "OrderedDict[str, torch.Tensor]",
                K: "torch.Tensor | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features: FPN levels; K (B, 3, 3) network-input intrinsics (needed with ``ray_input``)
        -> depth (B, 1, 4h, 4w) metres at the padded input size, F^d (B, 4C, h, w) at stride 4."""
        size = features[self.LEVELS[0]].shape[-2:]
        ups = []
        for key, lateral in zip(self.LEVELS, self.lateral):
            x = lateral(features[key])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            ups.append(x)
        if self.ray_input:
            if K is None:
                raise ValueError("DepthHead(ray_input=True) needs the intrinsics K (B, 3, 3)")
            ups.append(camera_rays(K.to(ups[0].dtype), size, self.STRIDE))
        feat = self.fuse(torch.cat(ups, dim=1))
        return self.shuffle(self.to_depth(feat)), feat


def camera_rays(K: torch.Tensor, size: "tuple[int, int] | torch.Size", stride: int) -> torch.Tensor:
    """K (B, 3, 3) -> (B, 2, h, w): (u - cx) / fx and (v - cy) / fy at the centres of the
    stride-``stride`` cells of an (h, w) feature map (pixel-index coordinates)."""
    h, w = int(size[0]), int(size[1])
    u = torch.arange(w, device=K.device, dtype=K.dtype) * stride + (stride - 1) / 2
    v = torch.arange(h, device=K.device, dtype=K.dtype) * stride + (stride - 1) / 2
    x = (u[None, :] - K[:, 0, 2, None]) / K[:, 0, 0, None]  # (B, w)
    y = (v[None, :] - K[:, 1, 2, None]) / K[:, 1, 1, None]  # (B, h)
    return torch.stack([x[:, None, :].expand(-1, h, -1), y[:, :, None].expand(-1, -1, w)], dim=1)


def berhu_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse Huber on valid pixels; threshold c = 0.2 max|error| (per batch)."""
    diff = (pred - gt)[valid].abs()
    if diff.numel() == 0:
        return pred.sum() * 0.0
    c = (0.2 * diff.max().detach()).clamp_min(1e-6)
    quad = (diff * diff + c * c) / (2 * c)
    return torch.where(diff <= c, diff, quad).mean()
