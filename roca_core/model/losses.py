"""Training losses of the alignment and retrieval heads (paper Sec. 3.3-3.4).

Alignment losses are averaged over ROIs with per-class weights; retrieval losses are not
class-weighted (frequent classes need good retrieval too). Symmetric objects are compared
against the closest of their symmetric ground-truth rotations (about the CAD's up axis), and
the NOC target is rotated consistently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from roca_core.classes import Symmetry
from roca_core.model.alignment_head import AlignmentOutput
from roca_core.model.roi_heads import weighted_mean

MAX_SYM = 36  # rotations tried for "infinite" symmetry, as the metric does


@dataclass
class RoiTargets:
    """Ground truth gathered per training ROI (R ROIs, S x S samples)."""

    rotation: torch.Tensor  # (R, 3, 3)
    translation: torch.Tensor  # (R, 3)
    scale: torch.Tensor  # (R, 3)
    symmetry: torch.Tensor  # (R,) Symmetry values
    noc: torch.Tensor  # (R, S, S, 3)
    mask: torch.Tensor  # (R, S, S) float instance mask
    depth: torch.Tensor  # (R, S, S) metres, 0 unknown
    points: torch.Tensor  # (R, S, S, 3) back-projected ground-truth depth
    class_weight: torch.Tensor  # (R,)


def symmetry_rotations(symmetry: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(R,) Symmetry values -> (R, 36, 3, 3) rotations about y (repeats pad fewer-fold cases)."""
    n = torch.ones_like(symmetry)
    for sym in Symmetry:
        n = torch.where(symmetry == int(sym), torch.full_like(n, sym.num_rotations), n)
    k = torch.arange(MAX_SYM, device=symmetry.device)[None] % n[:, None]
    ang = (k.to(dtype) * (2 * math.pi) / n[:, None].to(dtype))
    c, s = torch.cos(ang), torch.sin(ang)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).view(*ang.shape, 3, 3)


def noc_error(noc: torch.Tensor, noc_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-ROI NOC error: noc, noc_gt (R, S, S, 3), valid (R, S, S) float -> (R,).

    Split into the shape of the NOC cloud (both clouds centred on their masked means) and its
    offset (the difference of the means), each an L1 summed over x, y, z as in the reference.
    A plain L1 on absolute NOCs mixes in the error of the object centre the head cannot see
    (the translation of its input points); then the true rotation scores no better than
    predicting the mean NOC, and the loss cannot teach orientation.
    """
    n = valid.flatten(1).sum(1).clamp_min(1)  # (R,)
    v = valid[..., None]
    mean = (noc * v).sum(dim=(1, 2)) / n[:, None]  # (R, 3)
    mean_gt = (noc_gt * v).sum(dim=(1, 2)) / n[:, None]
    centred = (noc - mean[:, None, None]) - (noc_gt - mean_gt[:, None, None])
    shape_err = (centred.abs().sum(-1) * valid).flatten(1).sum(1) / n
    return shape_err + (mean - mean_gt).abs().sum(-1)


def alignment_losses(out: AlignmentOutput, gt: RoiTargets, depth_rois: torch.Tensor) -> dict[str, torch.Tensor]:
    """-> unweighted alignment losses (the model applies ``LossWeights``)."""
    cw = gt.class_weight.to(out.scale.dtype)
    # symmetry-aware rotation target
    sym_rots = symmetry_rotations(gt.symmetry, gt.rotation.dtype)  # (R, 36, 3, 3)
    cands = gt.rotation[:, None] @ sym_rots
    err = (out.rotation[:, None].to(cands.dtype) - cands).abs().mean(dim=(2, 3))  # (R, 36)
    best = err.detach().argmin(dim=1)
    ar = torch.arange(best.shape[0], device=best.device)
    loss_rot = weighted_mean(err[ar, best], cw)
    noc_gt = gt.noc @ sym_rots[ar, best][:, None]  # row vectors: (Ry^T q)^T = q^T Ry

    noc_valid = (gt.mask > 0.5) & (gt.depth > 0)
    nv = noc_valid.float()
    n_pix = nv.flatten(1).sum(1)
    loss_noc = weighted_mean(noc_error(out.noc, noc_gt, nv), cw * (n_pix > 0))

    depth_err = (depth_rois - gt.depth) * nv
    l1 = depth_err.abs().flatten(1).sum(1) / n_pix.clamp_min(1)
    mean_term = (depth_err.flatten(1).sum(1) / n_pix.clamp_min(1)).abs()
    loss_roi_depth = weighted_mean(l1 + mean_term, cw * (n_pix > 0))

    big = torch.finfo(gt.points.dtype).max / 4
    vm = noc_valid[..., None]
    gmax = torch.where(vm, gt.points, torch.full_like(gt.points, -big)).flatten(1, 2).amax(1)
    gmin = torch.where(vm, gt.points, torch.full_like(gt.points, big)).flatten(1, 2).amin(1)
    has = (n_pix > 0) & out.valid.flatten(1).any(1)
    gmax = torch.where(has[:, None], gmax, torch.zeros_like(gmax))
    gmin = torch.where(has[:, None], gmin, torch.zeros_like(gmin))
    box_err = F.huber_loss(torch.cat([out.box_max, out.box_min], 1), torch.cat([gmax, gmin], 1),
                           reduction="none").mean(1)
    loss_box = weighted_mean(box_err, cw * has)

    return {
        "loss_rot": loss_rot,
        "loss_noc": loss_noc,
        "loss_roi_depth": loss_roi_depth,
        "loss_box_minmax": loss_box,
        "loss_scale": weighted_mean((out.scale - gt.scale).abs().mean(1), cw),
        "loss_trans_init": weighted_mean((out.t_init - gt.translation).norm(dim=1), cw),
        "loss_trans": weighted_mean((out.translation - gt.translation).norm(dim=1), cw),
    }


def retrieval_losses(z: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor,
                     completion_logits: torch.Tensor, pos_voxels: torch.Tensor,
                     margin: float) -> dict[str, torch.Tensor]:
    """Triplet loss on L2 distances (not squared, as ``nn.TripletMarginLoss`` in the reference:
    the squared form's gradient grows with the embedding and swamped every other head) and a
    class-balanced completion BCE (the mean over occupied voxels plus the mean over empty
    ones: a plain mean over all 32^3 voxels gave the encoder ~1e-3 of a gradient)."""
    if z.shape[0] == 0:
        zero = z.sum() * 0.0 + completion_logits.sum() * 0.0
        return {"loss_triplet": zero, "loss_completion": zero}
    target = pos_voxels.to(completion_logits.dtype)  # (M, G, G, G)
    bce = F.binary_cross_entropy_with_logits(completion_logits, target, reduction="none")
    occ = target.flatten(1)
    n_occ = occ.sum(1).clamp_min(1)
    n_free = (1 - occ).sum(1).clamp_min(1)
    bce = bce.flatten(1)
    balanced = (bce * occ).sum(1) / n_occ + (bce * (1 - occ)).sum(1) / n_free
    return {
        "loss_triplet": F.triplet_margin_loss(z, z_pos, z_neg, margin=margin, p=2.0),
        "loss_completion": 0.5 * balanced.mean(),
    }
