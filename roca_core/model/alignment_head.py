"""ROCA's alignment head: shape code, scale, initial translation, NOCs, Procrustes weights,
weighted Procrustes and refined translation (paper Sec. 3.3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from roca_core.geometry.procrustes import (rotation_y_to, weighted_procrustes, weighted_procrustes_upright,
                                           weighted_translation)
from roca_core.model.config import ModelConfig
from roca_core.model.roi_sampling import backproject_rois, roi_pixel_grid
from roca_core.model.yaw_head import replace_yaw


def select_class(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """x (R, C, ...) -> (R, ...): the output of each ROI's class (0-based)."""
    return x[torch.arange(x.shape[0], device=x.device), classes]


def roi_normals(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Unit surface normals of back-projected ROI grids, facing the camera.

    points (R, S, S, 3) camera frame; valid (R, S, S) bool -> (R, S, S, 3), zero where a
    pixel or one of its four neighbours has no depth (central differences on the grid).
    """
    p = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    ok = F.pad(valid.float()[:, None], (1, 1, 1, 1))[:, 0] > 0.5  # (R, S+2, S+2)
    du = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    dv = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    n = torch.cross(du, dv, dim=-1)
    # the camera sits at the origin: a visible surface's normal points against the point
    n = torch.where(((n * points).sum(-1, keepdim=True) > 0), -n, n)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    usable = valid & ok[:, 1:-1, 2:] & ok[:, 1:-1, :-2] & ok[:, 2:, 1:-1] & ok[:, :-2, 1:-1]
    return n * usable[..., None]


@dataclass
class AlignmentOutput:
    shape_code: torch.Tensor  # (R, E)
    scale: torch.Tensor  # (R, 3)
    t_init: torch.Tensor  # (R, 3)
    box_max: torch.Tensor  # (R, 3) of the back-projected ROI depth
    box_min: torch.Tensor  # (R, 3)
    points: torch.Tensor  # (R, S, S, 3) back-projected ROI depth p
    valid: torch.Tensor  # (R, S, S) bool: in the alignment mask with depth
    noc: torch.Tensor  # (R, S, S, 3)
    weights: torch.Tensor  # (R, S, S) learned Procrustes weights c in (0, 1)
    rotation: torch.Tensor  # (R, 3, 3)
    translation: torch.Tensor  # (R, 3)
    solved: torch.Tensor  # (R,) bool: enough pixels for Procrustes (else identity, t_init)


class AlignmentHead(nn.Module):
    def __init__(self, cfg: ModelConfig, feat_channels: int) -> None:
        super().__init__()
        c, e, p = cfg.num_classes, cfg.shape_code_dim, cfg.pixel_mlp_dim
        self.num_classes = c
        self.min_pixels = cfg.min_procrustes_pixels
        self.pixel_mlp = nn.Sequential(nn.Linear(feat_channels, p), nn.ReLU(inplace=True),
                                       nn.Linear(p, p), nn.ReLU(inplace=True))
        # Geometric term of the pixel features (``pixel_geometry``): added to the pre-activation
        # of pixel_mlp's last layer; its output layer starts at zero, so a network warm-started
        # from weights without it computes exactly what it did.
        self.pixel_geometry = cfg.pixel_geometry
        if cfg.pixel_geometry:
            self.geo_mlp = nn.Sequential(nn.Linear(6, p), nn.ReLU(inplace=True), nn.Linear(p, p))
            nn.init.kaiming_normal_(self.geo_mlp[0].weight, nonlinearity="relu")
            nn.init.zeros_(self.geo_mlp[0].bias)
            nn.init.zeros_(self.geo_mlp[2].weight)
            nn.init.zeros_(self.geo_mlp[2].bias)
        # The max-pooled pixel features of different ROIs differ little in scale and a lot in
        # pattern; normalising them (LayerNorm) keeps the shape code's ReLUs alive and its
        # variation across ROIs comparable with the point term in the NOC head.
        self.pool_norm = nn.LayerNorm(p) if cfg.arch_version >= 2 else nn.Identity()
        self.centre_noc_input = cfg.arch_version >= 2
        self.shape_mlp = nn.Sequential(nn.Linear(p, e), nn.ReLU(inplace=True), nn.Linear(e, e),
                                       nn.ReLU(inplace=True), nn.Dropout(cfg.shape_dropout))
        for mlp in (self.pixel_mlp, self.shape_mlp):
            for layer in mlp:
                if isinstance(layer, nn.Linear):  # He init, zero bias: no units dead at start
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
        th = cfg.trans_offset_hidden
        self.scale_mlp = nn.Sequential(nn.Linear(e, th), nn.ReLU(inplace=True), nn.Linear(th, 3 * c))
        nn.init.constant_(self.scale_mlp[-1].bias, 1.0)  # CADs span about one unit per axis
        self.offset_mlp = nn.Sequential(nn.Linear(e + 3, th), nn.ReLU(inplace=True), nn.Linear(th, 3 * c))
        nn.init.zeros_(self.offset_mlp[-1].weight)
        nn.init.zeros_(self.offset_mlp[-1].bias)
        # Per-pixel MLPs over [pixel inputs, per-ROI inputs]: the first layer is split so the
        # per-ROI part is computed once per ROI and broadcast over its S*S pixels.
        nh = cfg.noc_hidden
        # Per-pixel NOC input: the centred point, plus (noc_pixel_features) the pixel's own
        # feature vector, so orientation cues need not squeeze through the pooled shape code.
        self.noc_pixel_features = cfg.noc_pixel_features
        self.noc_pix = nn.Linear(3 + (p if cfg.noc_pixel_features else 0), nh)
        self.noc_roi = nn.Linear(3 + e, nh)
        self.noc_out = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(nh, nh), nn.ReLU(inplace=True),
                                     nn.Linear(nh, 3 * c))
        wh = cfg.weight_hidden
        self.w_pix = nn.Linear(1 + 3 + 3, wh)
        self.w_roi = nn.Linear(e + 3, wh)
        self.w_out = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(wh, c))

    def forward(self, feat_rois: torch.Tensor, depth_rois: torch.Tensor, mask: torch.Tensor,
                align_mask: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor,
                classes: torch.Tensor, up: "torch.Tensor | None" = None,
                yaw: "torch.Tensor | None" = None, centre: "torch.Tensor | None" = None,
                size: "torch.Tensor | None" = None) -> AlignmentOutput:
        """feat_rois (R, F, S, S) depth features; depth_rois (R, S, S) metres; mask (R, S, S)
        probabilities in [0, 1]; align_mask (R, S, S) bool; boxes (R, 4) network pixels;
        K (R, 3, 3) network intrinsics; classes (R,) 0-based; up (R, 3) optional camera-frame
        up direction per ROI (the upright prior: only the yaw about it is solved; rows of
        zeros, or None, solve the full rotation). yaw (R,) optional camera yaw per ROI (the yaw
        head's, radians; ``roca_core.model.yaw_head``): it replaces the solved rotation's yaw
        about its own up axis, and the translation is re-solved for that rotation. centre (R, 3)
        optional camera-frame object centres (the centre head's; ``roca_core.model.centre_head``):
        they replace the translation, also of ROIs too small to solve; rows of NaN keep the
        solved one (ROIs of images with measured depth). size (R, 3) optional
        scales (the centre head's): they replace the output scale (the Procrustes solve keeps
        the scale head's, which the NOC loss trained with).

        Gradient paths follow the reference implementation: the NOC and weight heads see
        detached points, scale and NOCs (they must not move depth or scale to make their own
        task easier), the translation offset sees a detached box extent, and the refined
        translation builds on a detached t_init (each translation loss trains its own stage).
        """
        r, s = feat_rois.shape[0], feat_rois.shape[-1]
        c = self.num_classes
        ar = torch.arange(r, device=feat_rois.device)
        u, v = roi_pixel_grid(boxes, s)
        points = backproject_rois(u, v, depth_rois, K)  # (R, S, S, 3)
        valid = align_mask & (depth_rois > 1e-3)
        has = valid.flatten(1).any(dim=1)
        vm = valid[..., None]
        # Points centred on their masked centroid (translation-invariant, so errors of t_init
        # cannot blur the canonical frame), detached: input of the NOC and geometry terms.
        pts = points.detach()
        n_valid = vm.sum(dim=(1, 2)).clamp_min(1)  # (R, 1)
        centroid = (pts * vm).sum(dim=(1, 2)) / n_valid  # (R, 3)

        feat = feat_rois.permute(0, 2, 3, 1)  # (R, S, S, F)
        if self.pixel_geometry:
            geo_in = torch.cat([(pts - centroid[:, None, None]) * vm, roi_normals(pts, valid)], dim=-1)
            pre = self.pixel_mlp[:3](feat) + self.geo_mlp(geo_in)
            pix = self.pixel_mlp[3](pre)
        else:
            pix = self.pixel_mlp(feat)
        pix = pix * mask[..., None]  # (R, S, S, P)
        e = self.shape_mlp(self.pool_norm(pix.flatten(1, 2).amax(dim=1)))  # (R, E)
        scale = select_class(self.scale_mlp(e).view(r, c, 3), classes)  # (R, 3)

        big = torch.finfo(points.dtype).max / 4
        pmax = torch.where(vm, points, torch.full_like(points, -big)).flatten(1, 2).amax(dim=1)
        pmin = torch.where(vm, points, torch.full_like(points, big)).flatten(1, 2).amin(dim=1)
        pmax = torch.where(has[:, None], pmax, torch.zeros_like(pmax))
        pmin = torch.where(has[:, None], pmin, torch.zeros_like(pmin))
        extent = (pmax - pmin).detach()
        offset = select_class(self.offset_mlp(torch.cat([e, extent], dim=1)).view(r, c, 3), classes)
        t_init = 0.5 * (pmax + pmin) + offset  # (R, 3)

        p_c = pts - (centroid if self.centre_noc_input else t_init.detach())[:, None, None]  # (R, S, S, 3)
        noc_in = torch.cat([p_c, pix], dim=-1) if self.noc_pixel_features else p_c
        h = self.noc_pix(noc_in) + self.noc_roi(torch.cat([scale.detach(), e], dim=1))[:, None, None]
        noc_all = self.noc_out(h).view(r, s, s, c, 3)
        noc = noc_all[ar, :, :, classes]  # (R, S, S, 3)
        hw = self.w_pix(torch.cat([mask[..., None], noc.detach(), p_c], dim=-1)) + \
            self.w_roi(torch.cat([e, scale.detach()], dim=1))[:, None, None]
        w_all = self.w_out(hw)  # (R, S, S, C)
        weights = torch.sigmoid(w_all[ar, :, :, classes])

        t0 = t_init.detach()
        src = (noc * scale[:, None, None]).reshape(r, s * s, 3)  # q~ = q * s
        dst = (points - t0[:, None, None]).reshape(r, s * s, 3)  # p~ = p - t_init
        w = (weights * mask * valid).reshape(r, s * s)
        rot, t_delta = weighted_procrustes(src, dst, w)
        solved = valid.flatten(1).sum(dim=1) >= self.min_pixels
        fallback = torch.eye(3, dtype=rot.dtype, device=rot.device).expand_as(rot)
        if up is not None:
            if up.shape != (r, 3):
                raise ValueError(f"up must be (R, 3) = ({r}, 3), got {tuple(up.shape)}")
            known = up.norm(dim=1) > 1e-6  # (R,)
            if bool(known.any()):
                up_safe = torch.where(known[:, None], up.to(src.dtype), torch.ones_like(up, dtype=src.dtype))
                rot_u, t_u = weighted_procrustes_upright(src, dst, w, up_safe)
                rot = torch.where(known[:, None, None], rot_u, rot)
                t_delta = torch.where(known[:, None], t_u, t_delta)
                # unsolved but upright: at least stand it up
                fallback = torch.where(known[:, None, None], rotation_y_to(up_safe), fallback)
        if yaw is not None:
            rot = replace_yaw(rot, yaw)
            t_delta = weighted_translation(src, dst, w, rot)
        rot = torch.where(solved[:, None, None], rot, fallback)
        trans = torch.where(solved[:, None], t0 + t_delta, t_init)
        if centre is not None:
            trans = torch.where(torch.isfinite(centre).all(dim=1, keepdim=True), centre.to(trans.dtype), trans)
        if size is not None:
            scale = size.to(scale.dtype)
        return AlignmentOutput(e, scale, t_init, pmax, pmin, points, valid, noc, weights, rot, trans, solved)
