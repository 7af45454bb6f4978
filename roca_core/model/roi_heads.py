"""torchvision's box + mask ROI heads with per-class loss weights, exposing the sampled
foreground proposals so the alignment head trains on the same ROIs as the mask head."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_align


@dataclass
class ForegroundRois:
    """Foreground proposals of one batch (training): boxes in network-input pixels."""

    boxes: list[torch.Tensor]  # per image (R_i, 4)
    labels: list[torch.Tensor]  # per image (R_i,) 1-based
    matched: list[torch.Tensor]  # per image (R_i,) index of the ground-truth object
    # every proposal the box head trained on (foreground and background), for the class head
    sampled_boxes: list[torch.Tensor] = field(default_factory=list)  # per image (P_i, 4)
    sampled_labels: list[torch.Tensor] = field(default_factory=list)  # per image (P_i,) 0 background


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w); 0 (still attached to the graph) when empty."""
    return (values * weights).sum() / weights.sum().clamp_min(1e-6)


class RocaRoIHeads(RoIHeads):
    """Same components and sampling as torchvision; own loss functions (class weights)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights: torch.Tensor | None = None  # (C,) set by RocaModel each forward

    def _label_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Weight per sample: 1 for background, class_weights[label - 1] otherwise."""
        if self.class_weights is None:
            return torch.ones_like(labels, dtype=torch.float32)
        full = torch.cat([self.class_weights.new_ones(1), self.class_weights])
        return full[labels]

    def forward_train(self, features, proposals, image_shapes, targets):
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_feats)

        labels_all = torch.cat(labels)
        reg_all = torch.cat(regression_targets)
        w = self._label_weights(labels_all).to(class_logits.dtype)
        loss_cls = weighted_mean(F.cross_entropy(class_logits, labels_all, reduction="none"), w)
        pos = torch.where(labels_all > 0)[0]
        box_regression = box_regression.reshape(labels_all.shape[0], -1, 4)
        reg = F.smooth_l1_loss(box_regression[pos, labels_all[pos]], reg_all[pos], beta=1 / 9,
                               reduction="none").sum(dim=1)
        loss_box = (reg * w[pos]).sum() / max(labels_all.numel(), 1)

        fg_boxes, fg_labels, fg_matched = [], [], []
        for props, lab, idx in zip(proposals, labels, matched_idxs):
            keep = torch.where(lab > 0)[0]
            fg_boxes.append(props[keep])
            fg_labels.append(lab[keep])
            fg_matched.append(idx[keep])
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, fg_boxes, image_shapes)))
        loss_mask = self._mask_loss(mask_logits, fg_boxes, fg_labels, fg_matched, targets)
        losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box, "loss_mask": loss_mask}
        return losses, ForegroundRois(fg_boxes, fg_labels, fg_matched, [p.detach() for p in proposals], labels)

    def _mask_loss(self, mask_logits, boxes, labels, matched, targets) -> torch.Tensor:
        m = mask_logits.shape[-1]
        if mask_logits.shape[0] == 0:
            return mask_logits.sum() * 0.0
        gt = []
        for b, idx, t in zip(boxes, matched, targets):
            if b.shape[0] == 0:
                continue
            gm = t["masks"][idx][:, None].to(b.dtype)
            rois = torch.cat([torch.arange(b.shape[0], device=b.device, dtype=b.dtype)[:, None], b], dim=1)
            gt.append(roi_align(gm, rois, (m, m), 1.0, sampling_ratio=2, aligned=True)[:, 0])
        gt_t = torch.cat(gt)
        lab = torch.cat(labels)
        logits = mask_logits[torch.arange(lab.shape[0], device=lab.device), lab]
        per_roi = F.binary_cross_entropy_with_logits(logits, gt_t, reduction="none").mean(dim=(1, 2))
        return weighted_mean(per_roi, self._label_weights(lab).to(per_roi.dtype))

    def forward_eval(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        box_feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_feats)
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        lab = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        probs = mask_logits[torch.arange(lab.shape[0], device=mask_logits.device), lab].sigmoid()
        per_image = probs.split([b.shape[0] for b in boxes])
        return [{"boxes": b, "scores": s, "labels": l, "mask_probs": p}
                for b, s, l, p in zip(boxes, scores, labels, per_image)]
