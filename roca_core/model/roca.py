"""RocaModel: Mask R-CNN (torchvision) + depth + alignment + retrieval in one nn.Module.

Train mode: ``model(images, targets) -> dict`` of weighted scalar losses.
Eval mode: ``model(images, intrinsics=[K, ...]) -> list[dict]`` per image (see ``forward``).
Images of any size are resized to the configured input (K scaled with them); outputs are
mapped back to each given image's pixels, and poses are metric so they need no mapping.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align

from roca_core.model import mirror_tta
from roca_core.model.alignment_head import AlignmentHead
from roca_core.model.backbone import build_backbone
from roca_core.model.class_head import ClassHead, class_loss, rescore
from roca_core.model.centre_head import (CentreHead, box_geometry, centre_loss, centre_targets, decode_centre,
                                         decode_size)
from roca_core.model.config import ModelConfig
from roca_core.model.depth_head import DepthHead, berhu_loss
from roca_core.model.losses import RoiTargets, alignment_losses, retrieval_losses
from roca_core.model.measured_inputs import fuse_measured_depth, per_roi_up
from roca_core.model.retrieval_head import RetrievalHead
from roca_core.model.roi_heads import RocaRoIHeads
from roca_core.model.roi_sampling import backproject_rois, roi_pixel_grid, sample_rois
from roca_core.model.shape_head import ShapeHead
from roca_core.model.up_head import UpHead, thumbnails, up_loss, up_targets
from roca_core.model.yaw_head import YawHead, decode_yaw, yaw_crops, yaw_loss, yaw_targets

STAGES = ("backbone_rpn", "roi_heads", "depth", "alignment", "retrieval")
_FPN_LEVELS = ["0", "1", "2", "3"]

# loss key -> LossWeights field
_LOSS_FIELDS = {
    "loss_objectness": "rpn_objectness", "loss_rpn_box_reg": "rpn_box_reg",
    "loss_classifier": "classifier", "loss_box_reg": "box_reg", "loss_mask": "mask",
    "loss_depth": "depth", "loss_roi_depth": "roi_depth", "loss_box_minmax": "box_minmax",
    "loss_scale": "scale", "loss_trans_init": "trans_init", "loss_noc": "noc", "loss_rot": "rot",
    "loss_trans": "trans", "loss_triplet": "triplet", "loss_completion": "completion",
    "loss_yaw": "yaw", "loss_centre": "centre", "loss_up": "up", "loss_class_head": "class_head",
}


def scale_intrinsics_torch(K: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """Torch twin of ``roca_core.geometry.camera.scale_intrinsics`` (pixel-corner convention)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    K2 = K.clone()
    K2[0, 0] = K[0, 0] * sx
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 1] = K[1, 1] * sy
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


class RocaModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.num_classes
        ch = cfg.fpn_channels
        self.backbone = build_backbone(cfg)
        h, w = cfg.image_size
        self.transform = GeneralizedRCNNTransform(min(h, w), max(h, w), [0.485, 0.456, 0.406],
                                                  [0.229, 0.224, 0.225])
        anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(ch, 3), 0.7, 0.3, cfg.rpn_batch_size_per_image, 0.5,
            dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
            dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test), 0.7)
        mask_ch = list(cfg.mask_head_channels)
        levels = dict(canonical_scale=cfg.roi_canonical_scale, canonical_level=4)
        self.roi_heads = RocaRoIHeads(
            MultiScaleRoIAlign(_FPN_LEVELS, 7, cfg.roi_sampling_ratio, **levels), TwoMLPHead(ch * 49, cfg.box_head_dim),
            FastRCNNPredictor(cfg.box_head_dim, c + 1), 0.5, 0.5, cfg.box_batch_size_per_image,
            cfg.box_positive_fraction, None, cfg.box_score_thresh, cfg.box_nms_thresh,
            cfg.detections_per_image, MultiScaleRoIAlign(_FPN_LEVELS, 14, cfg.roi_sampling_ratio, **levels),
            MaskRCNNHeads(ch, mask_ch, 1), MaskRCNNPredictor(mask_ch[-1], mask_ch[-1], c + 1))
        self.depth_head = DepthHead(ch, cfg.depth_level_channels, cfg.depth_init, cfg.norm,
                                    ray_input=cfg.depth_ray_input)
        self.alignment_head = AlignmentHead(cfg, self.depth_head.out_channels)
        self.retrieval_head = RetrievalHead(cfg)
        self.yaw_head = YawHead(cfg.num_classes, cfg.yaw_bins, cfg.yaw_crop, cfg.yaw_width) if cfg.yaw_bins else None
        # Eval switch: False keeps the Procrustes yaw although the network has a yaw head
        # (roca-eval --no-yaw-head, to measure what the head adds).
        self.use_yaw_head = True
        self.centre_head = CentreHead(cfg.num_classes, cfg.centre_crop, cfg.centre_width) if cfg.centre_width else None
        self.use_centre_head = True  # the same for the centre head (roca-eval --no-centre-head)
        self.up_head = UpHead(cfg.up_width) if cfg.up_width else None
        self.use_up_head = True  # and for the up head (roca-eval --no-up-head)
        self.class_head = ClassHead(c, cfg.class_crop, cfg.class_width) if cfg.class_width else None
        self.use_class_head = True  # and for the class head (roca-eval --no-class-head)
        self.shape_head = ShapeHead(c, cfg.shape_crop, cfg.shape_width, cfg.embedding_dim) \
            if cfg.shape_width else None
        self.use_shape_head = True  # and for the shape head (roca-eval --no-shape-head)
        # Per-class loss weights (detection, mask, alignment); the trainer sets them.
        self.register_buffer("class_weights", torch.ones(c))
        self.profile = False
        self.stage_times: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------------ helpers
    def set_class_weights(self, weights: "torch.Tensor | list[float]") -> None:
        w = torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != self.class_weights.shape or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"class weights must be {tuple(self.class_weights.shape)} finite and >= 0, got {w}")
        self.class_weights.copy_(w.to(self.class_weights.device))

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Accumulate wall time per stage in ``stage_times`` when ``profile`` is on."""
        if not self.profile:
            yield
            return
        dev = self.class_weights.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        yield
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.stage_times[name] += time.perf_counter() - t0

    def _resize_inputs(self, images: list[torch.Tensor], Ks: list[torch.Tensor],
                       targets: "list[dict] | None") -> tuple[list[torch.Tensor], torch.Tensor, "list[dict] | None"]:
        """Bring every image (and its K and per-pixel targets) to the configured input size."""
        hw = self.cfg.image_size
        out_imgs, out_K, out_t = [], [], []
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got {tuple(img.shape)}")
            src = tuple(img.shape[-2:])
            if min(src) == 0:
                raise ValueError(f"image {i} is empty ({src[0]}x{src[1]})")
            K = torch.as_tensor(Ks[i], dtype=torch.float32, device=img.device)
            if K.shape != (3, 3):
                raise ValueError(f"intrinsics {i}: expected (3, 3), got {tuple(K.shape)}")
            same = src == hw
            out_imgs.append(img if same else F.interpolate(img[None], size=hw, mode="bilinear",
                                                           align_corners=False, antialias=True)[0])
            out_K.append(K if same else scale_intrinsics_torch(K, src, hw))
            if targets is not None:
                t = dict(targets[i])
                if not same:
                    sy, sx = hw[0] / src[0], hw[1] / src[1]
                    t["boxes"] = t["boxes"] * torch.tensor([sx, sy, sx, sy], device=img.device)
                    t["masks"] = F.interpolate(t["masks"][None].float(), size=hw, mode="nearest")[0].to(t["masks"].dtype)
                    t["depth"] = F.interpolate(t["depth"][None, None], size=hw, mode="nearest")[0, 0]
                    t["noc"] = F.interpolate(t["noc"][None], size=hw, mode="nearest")[0]
                out_t.append(t)
        return out_imgs, torch.stack(out_K), (out_t if targets is not None else None)

    def embed_cad(self, voxels: torch.Tensor) -> torch.Tensor:
        """CAD occupancy grids (M, 32, 32, 32) -> retrieval embeddings (M, D)."""
        if voxels.dim() != 4 or tuple(voxels.shape[1:]) != (32, 32, 32):
            raise ValueError(f"voxels must be (M, 32, 32, 32), got {tuple(voxels.shape)}")
        p = next(self.parameters())
        return self.retrieval_head.embed_cad(voxels.to(device=p.device, dtype=torch.float32))

    # ------------------------------------------------------------------ forward
    def forward(self, images: list[torch.Tensor], targets: "list[dict] | None" = None,
                intrinsics: "list[torch.Tensor] | None" = None, min_score: "float | None" = None,
                *, gt_boxes: "list[torch.Tensor] | None" = None,
                gt_labels: "list[torch.Tensor] | None" = None,
                depths: "list[torch.Tensor | None] | None" = None,
                up: "list[torch.Tensor | None] | None" = None):
        """Train: ``(images, targets) -> dict`` of weighted losses. Eval: ``(images,
        intrinsics=[K]) -> list[dict]`` per image with boxes (given image's pixels), labels
        (1-based), scores, masks (N, H, W) probabilities, rotations, translations, scales,
        valid, noc_embeddings (N, D), depth (H, W). ``min_score`` drops weaker detections
        before the 3D heads run (the Predictor passes its score threshold).

        Eval diagnosis: ``gt_boxes`` ((N_i, 4) xyxy in each given image's pixels) and
        ``gt_labels`` ((N_i,) 1-based) replace the detector's output: one detection per box,
        in the given order, score 1, mask probabilities from the mask head on that box. The
        3D heads then run on the true boxes and classes, so their errors show without
        detection errors.

        Eval extras, one entry per image (None = not known for that image): ``depths`` (H_i, W_i)
        measured metric depth of the given image (a registered depth camera; 0 or NaN where
        unknown): the 3D heads use it wherever it is valid and the predicted depth fills the
        holes; the returned ``depth`` is that fused map. ``up`` (3,) the camera-frame up
        direction (against gravity): the upright prior, rotations are solved about it (yaw
        only) since furniture stands upright."""
        if self.training:
            if targets is None:
                raise ValueError("RocaModel in train mode needs targets")
            if any(x is not None for x in (gt_boxes, gt_labels, depths, up)):
                raise ValueError("gt_boxes, gt_labels, depths and up are eval-mode options")
            return self._forward_train(images, targets)
        if intrinsics is None:
            if targets is not None and all("K" in t for t in targets):
                intrinsics = [t["K"] for t in targets]
            else:
                raise ValueError("RocaModel in eval mode needs intrinsics=[K (3, 3) per image]")
        if len(intrinsics) != len(images):
            raise ValueError(f"{len(images)} images but {len(intrinsics)} intrinsics")
        if (gt_boxes is None) != (gt_labels is None):
            raise ValueError("gt_boxes and gt_labels go together")
        if gt_boxes is not None and not (len(gt_boxes) == len(gt_labels) == len(images)):
            raise ValueError(f"{len(images)} images but {len(gt_boxes)} gt_boxes and "
                             f"{len(gt_labels)} gt_labels")
        for name, extra in (("depths", depths), ("up", up)):
            if extra is not None and len(extra) != len(images):
                raise ValueError(f"{len(images)} images but {len(extra)} {name}")
        return self._forward_eval(images, intrinsics, min_score, gt_boxes, gt_labels, depths, up)

    def _features(self, imgs: list[torch.Tensor], targets: "list[dict] | None"):
        image_list, _ = self.transform(imgs)
        feats = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, feats, targets)
        return image_list, feats, proposals, rpn_losses

    def _depth(self, feats, Ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.cfg.image_size
        depth, feat_d = self.depth_head(feats, Ks)
        return depth[:, 0, :h, :w], feat_d

    def _roi_inputs(self, feat_d, depth, boxes, bidx, Ks):
        s = self.cfg.roi_size
        if self.cfg.roi_sampling_ratio == 1:
            # one bilinear sample per bin centre: the same values as ROIAlign(aligned=True,
            # sampling_ratio=1) for boxes inside the image, but grid_sample's CPU backward is
            # ~2.5x faster
            feat_rois = sample_rois(feat_d, boxes * 0.25, bidx, s, "bilinear", padding="border")
        else:
            rois = torch.cat([bidx[:, None].to(boxes.dtype), boxes], dim=1)
            feat_rois = roi_align(feat_d, rois, (s, s), spatial_scale=0.25,
                                  sampling_ratio=self.cfg.roi_sampling_ratio, aligned=True)
        depth_rois = sample_rois(depth[:, None], boxes, bidx, s, "bilinear")[:, 0]
        return feat_rois, depth_rois, Ks[bidx]

    def _box_crops(self, imgs, boxes: torch.Tensor, bidx: torch.Tensor) -> dict[int, torch.Tensor]:
        """Image crops of the boxes at each size the yaw, centre and (in eval) shape heads read,
        cut once per size (heads share one when their sizes match)."""
        sizes = set()
        if self.yaw_head is not None:
            sizes.add(self.cfg.yaw_crop)
        if self.centre_head is not None:
            sizes.add(self.cfg.centre_crop)
        if self.shape_head is not None and not self.training:
            sizes.add(self.cfg.shape_crop)
        if not sizes:
            return {}
        stacked = torch.stack(imgs)
        return {size: yaw_crops(stacked, boxes, bidx, size) for size in sizes}

    def _forward_train(self, images, targets) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        imgs, Ks, targets = self._resize_inputs(images, [t["K"] for t in targets], targets)
        self.roi_heads.class_weights = self.class_weights
        losses: dict[str, torch.Tensor] = {}
        with self._stage("backbone_rpn"):
            image_list, feats, proposals, rpn_losses = self._features(imgs, targets)
        losses.update(rpn_losses)
        with self._stage("roi_heads"):
            roi_losses, fg = self.roi_heads.forward_train(feats, proposals, image_list.image_sizes, targets)
        losses.update(roi_losses)
        if self.class_head is not None:
            losses["loss_class_head"] = self._class_head_loss(imgs, Ks, fg)
        with self._stage("depth"):
            depth, feat_d = self._depth(feats, Ks)
            gt_depth = torch.stack([t["depth"] for t in targets]).to(depth.dtype)
            losses["loss_depth"] = berhu_loss(depth, gt_depth, gt_depth > 0)

        # at most align_rois_per_image foreground proposals per image go through alignment
        boxes, bidx, matched, labels = [], [], [], []
        for i, (b, lab, m) in enumerate(zip(fg.boxes, fg.labels, fg.matched)):
            keep = torch.randperm(b.shape[0], device=b.device)[: cfg.align_rois_per_image]
            boxes.append(b[keep].detach())
            labels.append(lab[keep])
            matched.append(m[keep])
            bidx.append(torch.full((keep.numel(),), i, dtype=torch.int64, device=b.device))
        boxes_t, bidx_t, labels_t = torch.cat(boxes).float(), torch.cat(bidx), torch.cat(labels)
        classes = labels_t - 1
        gt = self._gather_targets(targets, boxes_t, bidx_t, matched, Ks)

        with self._stage("alignment"):
            feat_rois, depth_rois, K_rois = self._roi_inputs(feat_d, depth, boxes_t, bidx_t, Ks)
            out = self.alignment_head(feat_rois, depth_rois, gt.mask, gt.mask > 0.5, boxes_t, K_rois, classes)
            losses.update(alignment_losses(out, gt, depth_rois))
            crops = self._box_crops(imgs, boxes_t, bidx_t)
            if self.yaw_head is not None:
                logits = self.yaw_head(crops[cfg.yaw_crop], classes)
                allowed, valid = yaw_targets(gt.rotation, boxes_t, K_rois, gt.symmetry, cfg.yaw_bins)
                losses["loss_yaw"] = yaw_loss(logits, allowed, valid, gt.class_weight)
            if self.centre_head is not None:
                pred = self.centre_head(crops[cfg.centre_crop],
                                        box_geometry(boxes_t, K_rois, cfg.image_size), classes)
                losses["loss_centre"] = centre_loss(
                    pred, centre_targets(gt.translation, boxes_t, K_rois, gt.scale), gt.class_weight)
            if self.up_head is not None:
                has = [i for i, t in enumerate(targets) if t["rotations"].shape[0] > 0]
                if has:
                    pred_up = self.up_head(thumbnails(torch.stack([imgs[i] for i in has])))
                    gt_up = torch.stack([up_targets(targets[i]["rotations"].float()) for i in has])
                    losses["loss_up"] = up_loss(pred_up, gt_up.to(pred_up.device))
                else:
                    losses["loss_up"] = sum(p.sum() for p in self.up_head.parameters()) * 0.0
        with self._stage("retrieval"):
            r, s = boxes_t.shape[0], cfg.roi_size
            vox_w = (gt.mask * (depth_rois > 1e-3)).reshape(r, s * s)
            z, _ = self.retrieval_head.embed_noc(out.noc.reshape(r, s * s, 3), vox_w, out.shape_code)
            pos = torch.cat([t["cad_voxels"][m] for t, m in zip(targets, matched)]).float()
            neg = torch.cat([t["neg_cad_voxels"][m] for t, m in zip(targets, matched)]).float()
            z_pos = self.retrieval_head.embed_cad(pos)
            z_neg = self.retrieval_head.embed_cad(neg)
            logits = self.retrieval_head.decoder(z)
            losses.update(retrieval_losses(z, z_pos, z_neg, logits, pos, cfg.triplet_margin))

        lw = cfg.loss_weights
        return {k: v * getattr(lw, _LOSS_FIELDS[k]) for k, v in losses.items()}

    def _class_logits(self, imgs, Ks: torch.Tensor, boxes_per_image: list[torch.Tensor],
                      mirror: bool = False) -> torch.Tensor:
        """The class head's logits (R, C + 1) for each image's boxes (network-input pixels);
        ``mirror``: log-probabilities averaged with the mirrored crops' (``mirror_tta``)."""
        boxes = torch.cat(boxes_per_image).float()
        bidx = torch.cat([torch.full((b.shape[0],), i, dtype=torch.int64, device=boxes.device)
                          for i, b in enumerate(boxes_per_image)])
        crops = yaw_crops(torch.stack(imgs), boxes, bidx, self.cfg.class_crop)
        geometry = box_geometry(boxes, Ks[bidx], self.cfg.image_size)
        if mirror:
            return mirror_tta.class_log_probs(self.class_head, crops, geometry)
        return self.class_head(crops, geometry)

    def _class_head_loss(self, imgs, Ks: torch.Tensor, fg) -> torch.Tensor:
        """The class head's loss on the proposals the box head trained on (the detector's
        sampling: a quarter foreground, the rest background)."""
        labels = torch.cat(fg.sampled_labels)
        return class_loss(self._class_logits(imgs, Ks, fg.sampled_boxes), labels,
                          self.roi_heads._label_weights(labels))

    def _rescore(self, imgs, Ks: torch.Tensor, dets: list[dict]) -> list[dict]:
        """Detections with the class head's scores (``class_head.rescore``), sorted by them."""
        if sum(d["boxes"].shape[0] for d in dets) == 0:
            return dets
        logits = self._class_logits(imgs, Ks, [d["boxes"] for d in dets], "class" in self.cfg.mirror_heads)
        scores = rescore(torch.cat([d["scores"] for d in dets]), torch.cat([d["labels"] for d in dets]),
                         logits, self.cfg.class_mix, self.cfg.class_mix_mean)
        out = []
        for d, s in zip(dets, scores.split([d["boxes"].shape[0] for d in dets])):
            order = s.argsort(descending=True)
            out.append({**{k: v[order] for k, v in d.items()}, "scores": s[order]})
        return out

    def _gather_targets(self, targets, boxes, bidx, matched, Ks) -> RoiTargets:
        """Per-ROI ground truth: pose of the matched object and its maps cropped to the ROI."""
        s = self.cfg.roi_size
        cat = lambda key: torch.cat([t[key][m] for t, m in zip(targets, matched)])  # noqa: E731
        labels = torch.cat([t["labels"][m] for t, m in zip(targets, matched)])
        maps = torch.stack([torch.cat([t["depth"][None], t["noc"]], 0) for t in targets]).float()
        crops = sample_rois(maps, boxes, bidx, s, "nearest")  # (R, 4, S, S)
        masks = boxes.new_zeros(boxes.shape[0], s, s)
        for i, (t, m) in enumerate(zip(targets, matched)):
            sel = torch.where(bidx == i)[0]
            if sel.numel() == 0:
                continue
            inst = sample_rois(t["masks"][None].float(), boxes[sel], torch.zeros_like(sel), s, "nearest")
            masks[sel] = inst[torch.arange(sel.numel(), device=sel.device), m]
        depth = crops[:, 0]
        u, v = roi_pixel_grid(boxes, s)
        points = backproject_rois(u, v, depth, Ks[bidx])
        cw = self.class_weights[(labels - 1).clamp_min(0)]
        return RoiTargets(rotation=cat("rotations").float(), translation=cat("translations").float(),
                          scale=cat("scales").float(), symmetry=cat("symmetries").long(),
                          noc=crops[:, 1:].permute(0, 2, 3, 1), mask=masks, depth=depth, points=points,
                          class_weight=cw)

    @torch.no_grad()
    def _detections_from_boxes(self, feats, image_sizes, orig_hw, gt_boxes, gt_labels
                               ) -> list[dict[str, torch.Tensor]]:
        """Ground-truth boxes (given image's pixels) and labels -> the detector's per-image
        output format at the network input: score 1, mask head probabilities on each box."""
        h, w = self.cfg.image_size
        heads = self.roi_heads
        boxes, labels = [], []
        for i, ((oh, ow), b, lab) in enumerate(zip(orig_hw, gt_boxes, gt_labels)):
            b = torch.as_tensor(b, dtype=torch.float32, device=self.class_weights.device).reshape(-1, 4)
            lab = torch.as_tensor(lab, dtype=torch.int64, device=b.device).reshape(-1)
            if lab.shape[0] != b.shape[0]:
                raise ValueError(f"image {i}: {b.shape[0]} gt_boxes but {lab.shape[0]} gt_labels")
            if lab.numel() and (lab.min() < 1 or lab.max() > self.cfg.num_classes):
                raise ValueError(f"image {i}: gt_labels must be 1-based class ids in "
                                 f"1..{self.cfg.num_classes}, got {lab.tolist()}")
            scale = b.new_tensor([w / ow, h / oh, w / ow, h / oh])
            boxes.append((b * scale).clamp_min(0).minimum(b.new_tensor([w, h, w, h])))
            labels.append(lab)
        logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, boxes, image_sizes)))
        lab = torch.cat(labels)
        probs = logits[torch.arange(lab.shape[0], device=logits.device), lab].sigmoid()  # (N, M, M)
        per_image = probs.split([b.shape[0] for b in boxes])
        return [{"boxes": b, "scores": torch.ones_like(lab_i, dtype=b.dtype), "labels": lab_i,
                 "mask_probs": p} for b, lab_i, p in zip(boxes, labels, per_image)]

    @torch.no_grad()
    def _forward_eval(self, images, intrinsics, min_score=None, gt_boxes=None,
                      gt_labels=None, depths=None, up=None) -> list[dict[str, torch.Tensor]]:
        cfg = self.cfg
        orig = [tuple(img.shape[-2:]) for img in images]
        imgs, Ks, _ = self._resize_inputs(images, intrinsics, None)
        with self._stage("backbone_rpn"):
            image_list, feats, proposals, _ = self._features(imgs, None)
        with self._stage("roi_heads"):
            if gt_boxes is not None:
                dets = self._detections_from_boxes(feats, image_list.image_sizes, orig, gt_boxes,
                                                   gt_labels)
            else:
                dets = self.roi_heads.forward_eval(feats, proposals, image_list.image_sizes)
                if self.class_head is not None and self.use_class_head:
                    dets = self._rescore(imgs, Ks, dets)
            if min_score is not None and gt_boxes is None:
                dets = [{k: v[d["scores"] >= min_score] for k, v in d.items()} for d in dets]
        with self._stage("depth"):
            depth, feat_d = self._depth(feats, Ks)
            if depths is not None:
                depth = fuse_measured_depth(depth, depths)
        boxes = torch.cat([d["boxes"] for d in dets]).float()
        bidx = torch.cat([torch.full((d["boxes"].shape[0],), i, dtype=torch.int64, device=boxes.device)
                          for i, d in enumerate(dets)])
        classes = torch.cat([d["labels"] for d in dets]) - 1
        s = cfg.roi_size
        probs = torch.cat([d["mask_probs"] for d in dets]).float()
        r = boxes.shape[0]
        with self._stage("alignment"):
            feat_rois, depth_rois, K_rois = self._roi_inputs(feat_d, depth, boxes, bidx, Ks)
            m = F.interpolate(probs[:, None], size=(s, s), mode="bilinear", align_corners=False)[:, 0] \
                if r else probs.new_zeros(0, s, s)
            if self.up_head is not None and self.use_up_head:
                # the predicted upright prior, for the images without a measured up
                given = up if up is not None else [None] * len(imgs)
                if any(u is None for u in given):
                    pred_up = self.up_head(thumbnails(torch.stack(imgs)))
                    up = [u if u is not None else p for u, p in zip(given, pred_up)]
            up_rois = None if up is None else per_roi_up(up, bidx, r, boxes)
            crops = self._box_crops(imgs, boxes, bidx)
            yaw = None
            if self.yaw_head is not None and self.use_yaw_head and r:
                logits = (mirror_tta.yaw_log_probs(self.yaw_head, crops[cfg.yaw_crop], classes)
                          if "yaw" in cfg.mirror_heads else self.yaw_head(crops[cfg.yaw_crop], classes))
                yaw, _ = decode_yaw(logits, boxes, K_rois)
            centre = size = None
            if self.centre_head is not None and self.use_centre_head and r:
                geometry = box_geometry(boxes, K_rois, cfg.image_size)
                centre_in = (crops[cfg.centre_crop], geometry, classes)
                pred = (mirror_tta.centre_outputs(self.centre_head, *centre_in) if "centre" in cfg.mirror_heads
                        else self.centre_head(*centre_in))
                size = decode_size(pred)
                centre = decode_centre(pred, boxes, K_rois)
                if depths is not None:  # measured depth places objects better than the head: keep ROCA's
                    measured = torch.tensor([d is not None for d in depths], device=boxes.device)[bidx]
                    centre = torch.where(measured[:, None], torch.full_like(centre, float("nan")), centre)
            out = self.alignment_head(feat_rois, depth_rois, m, m > cfg.align_mask_threshold, boxes, K_rois,
                                      classes, up_rois, yaw, centre, size)
        with self._stage("retrieval"):
            if self.shape_head is not None and self.use_shape_head and r:
                # the crop's (and size's) embedding instead of the voxelised NOCs'
                z = (mirror_tta.shape_embeddings(self.shape_head, crops[cfg.shape_crop], classes, out.scale)
                     if "shape" in cfg.mirror_heads else self.shape_head(crops[cfg.shape_crop], classes, out.scale))
            else:
                vox_w = ((m > cfg.retrieval_mask_threshold) & (depth_rois > 1e-3)).float().reshape(r, s * s)
                z, _ = self.retrieval_head.embed_noc(out.noc.reshape(r, s * s, 3), vox_w, out.shape_code)

        results = []
        h, w = cfg.image_size
        for i, (oh, ow) in enumerate(orig):
            sel = torch.where(bidx == i)[0]
            b = boxes[sel] * torch.tensor([ow / w, oh / h, ow / w, oh / h], device=boxes.device)
            mp = probs[sel][:, None]
            masks = paste_masks_in_image(mp, b, (oh, ow), padding=1)[:, 0] if sel.numel() else \
                probs.new_zeros(0, oh, ow)
            d = depth[i] if (oh, ow) == (h, w) else F.interpolate(depth[i][None, None], size=(oh, ow),
                                                                  mode="bilinear", align_corners=False)[0, 0]
            results.append({
                "boxes": b, "labels": dets[i]["labels"], "scores": dets[i]["scores"], "masks": masks,
                "rotations": out.rotation[sel], "translations": out.translation[sel],
                "scales": out.scale[sel], "valid": out.solved[sel], "noc_embeddings": z[sel].float(),
                "depth": d,
            })
        return results
