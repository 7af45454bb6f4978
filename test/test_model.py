"""RocaModel on the small preset: a full training step, eval outputs, edge cases."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from roca_core.classes import Symmetry
from roca_core.model import LossWeights, ModelConfig, RocaModel, load_preset
from roca_core.model.losses import symmetry_rotations
from roca_core.model.synthetic import make_batch

torch.set_num_threads(2)

EXPECTED_LOSSES = {
    "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask", "loss_depth",
    "loss_roi_depth", "loss_box_minmax", "loss_scale", "loss_trans_init", "loss_noc", "loss_rot",
    "loss_trans", "loss_triplet", "loss_completion",
}


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return load_preset("small")


def _heads(model: RocaModel) -> dict[str, torch.nn.Module]:
    a, r = model.alignment_head, model.retrieval_head
    return {
        "backbone.body": model.backbone.body, "backbone.fpn": model.backbone.fpn, "rpn": model.rpn,
        "box_head": model.roi_heads.box_head, "box_predictor": model.roi_heads.box_predictor,
        "mask_head": model.roi_heads.mask_head, "mask_predictor": model.roi_heads.mask_predictor,
        "depth_head": model.depth_head, "align.pixel_mlp": a.pixel_mlp, "align.shape_mlp": a.shape_mlp,
        "align.scale_mlp": a.scale_mlp, "align.offset_mlp": a.offset_mlp, "align.noc": a.noc_out,
        "align.weights": a.w_out, "retrieval.noc_encoder": r.noc_encoder,
        "retrieval.cad_encoder": r.cad_encoder, "retrieval.shape_mlp": r.shape_mlp,
        "retrieval.decoder": r.decoder,
    }


def test_training_step_all_losses_finite_and_every_head_gets_gradient(cfg):
    torch.manual_seed(0)
    model = RocaModel(cfg).train()
    images, targets = make_batch(cfg.image_height, cfg.image_width, batch_size=2, num_objects=3, seed=1)
    losses = model(images, targets)
    assert set(losses) == EXPECTED_LOSSES
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    total = sum(losses.values())
    total.backward()
    for name, head in _heads(model).items():
        grads = [p.grad for p in head.parameters() if p.grad is not None]
        assert grads, f"{name}: no gradient"
        assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradient"
        assert sum(g.abs().sum() for g in grads) > 0, f"{name}: zero gradient"


def test_loss_weights_scale_their_losses(cfg):
    images, targets = make_batch(cfg.image_height, cfg.image_width, batch_size=1, num_objects=2, seed=2)
    out = []
    for w in (LossWeights(), dataclasses.replace(LossWeights(), noc=6.0, rot=0.0)):
        torch.manual_seed(0)
        model = RocaModel(dataclasses.replace(cfg, loss_weights=w)).train()
        torch.manual_seed(1)
        out.append({k: v.item() for k, v in model(images, targets).items()})
    assert out[1]["loss_noc"] == pytest.approx(2 * out[0]["loss_noc"], rel=1e-4)
    assert out[1]["loss_rot"] == 0.0 and out[0]["loss_rot"] > 0
    assert out[1]["loss_scale"] == pytest.approx(out[0]["loss_scale"], rel=1e-4)


def test_class_weights_change_weighted_losses_only(cfg):
    images, targets = make_batch(cfg.image_height, cfg.image_width, batch_size=1, num_objects=2, seed=3)
    res = []
    for scale_first in (False, True):
        torch.manual_seed(0)
        model = RocaModel(cfg).train()
        if scale_first:
            w = torch.full((cfg.num_classes,), 0.5)
            model.set_class_weights(w)
        torch.manual_seed(1)
        res.append({k: v.item() for k, v in model(images, targets).items()})
    # a uniform class weight cancels in weighted means (normalised by the weight sum) ...
    assert res[1]["loss_scale"] == pytest.approx(res[0]["loss_scale"], rel=1e-4)
    # ... but the box regression is normalised by the sample count, so it halves
    assert res[1]["loss_box_reg"] == pytest.approx(0.5 * res[0]["loss_box_reg"], rel=1e-4)
    assert res[1]["loss_triplet"] == pytest.approx(res[0]["loss_triplet"], rel=1e-4)
    with pytest.raises(ValueError, match="class weights"):
        RocaModel(cfg).set_class_weights([1.0, 2.0])


def test_training_step_with_an_image_without_objects(cfg):
    torch.manual_seed(0)
    model = RocaModel(cfg).train()
    images, targets = make_batch(cfg.image_height, cfg.image_width, batch_size=2, num_objects=0, seed=4)
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_training_resizes_inputs_of_another_size(cfg):
    torch.manual_seed(0)
    model = RocaModel(cfg).train()
    images, targets = make_batch(96, 160, batch_size=1, num_objects=2, seed=5)
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_eval_outputs_in_the_given_image_size(cfg):
    torch.manual_seed(0)
    model = RocaModel(cfg).eval()
    h, w = 100, 150
    images, targets = make_batch(h, w, batch_size=2, num_objects=1, seed=6)
    out = model(images, intrinsics=[t["K"] for t in targets])
    assert len(out) == 2
    for o in out:
        n = o["boxes"].shape[0]
        assert n > 0  # random heads still score above the 0.05 box threshold
        assert o["boxes"].shape == (n, 4) and o["labels"].shape == (n,) and o["scores"].shape == (n,)
        assert o["masks"].shape == (n, h, w) and o["depth"].shape == (h, w)
        assert o["rotations"].shape == (n, 3, 3) and o["translations"].shape == (n, 3)
        assert o["scales"].shape == (n, 3) and o["valid"].dtype == torch.bool
        assert o["noc_embeddings"].shape == (n, cfg.embedding_dim)
        assert (o["boxes"][:, 0::2] <= w + 1e-3).all() and (o["boxes"][:, 1::2] <= h + 1e-3).all()
        assert (o["labels"] >= 1).all() and (o["labels"] <= cfg.num_classes).all()
        torch.testing.assert_close(torch.linalg.det(o["rotations"]), torch.ones(n), atol=1e-4, rtol=0)
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1


def test_eval_with_no_detections(cfg):
    model = RocaModel(dataclasses.replace(cfg, box_score_thresh=1.0)).eval()
    images, targets = make_batch(cfg.image_height, cfg.image_width, batch_size=1, num_objects=1, seed=7)
    out = model(images, intrinsics=[targets[0]["K"]])[0]
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, cfg.image_height, cfg.image_width)
    assert out["rotations"].shape == (0, 3, 3) and out["noc_embeddings"].shape == (0, cfg.embedding_dim)


def test_eval_requires_intrinsics_and_valid_images(cfg):
    model = RocaModel(cfg).eval()
    with pytest.raises(ValueError, match="intrinsics"):
        model([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="empty"):
        model([torch.rand(3, 0, 64)], intrinsics=[torch.eye(3)])


def test_embed_cad_shapes(cfg):
    model = RocaModel(cfg).eval()
    with torch.no_grad():
        z = model.embed_cad(torch.rand(5, 32, 32, 32))
    assert z.shape == (5, cfg.embedding_dim) and torch.isfinite(z).all()
    with pytest.raises(ValueError, match="voxels"):
        model.embed_cad(torch.rand(5, 16, 16, 16))


def test_alignment_falls_back_to_identity_below_min_pixels(cfg):
    head = RocaModel(cfg).alignment_head.eval()
    r, s = 2, cfg.roi_size
    mask = torch.zeros(r, s, s)
    mask[0, :8, :8] = 1.0  # 64 pixels: solved
    mask[1, :3, :5] = 1.0  # 15 pixels: below the minimum of 16
    K = torch.tensor([[200.0, 0, 64], [0, 200.0, 48], [0, 0, 1]]).expand(r, 3, 3)
    boxes = torch.tensor([[10.0, 10, 60, 70], [20.0, 5, 90, 40]])
    with torch.no_grad():
        out = head(torch.rand(r, head.pixel_mlp[0].in_features, s, s), torch.full((r, s, s), 2.0), mask,
                   mask > 0.5, boxes, K, torch.tensor([0, 3]))
    assert out.solved.tolist() == [True, False]
    torch.testing.assert_close(out.rotation[1], torch.eye(3))
    torch.testing.assert_close(out.translation[1], out.t_init[1])
    assert torch.isfinite(out.rotation).all() and torch.isfinite(out.translation).all()


def test_symmetry_rotations_are_the_up_axis_group():
    sym = torch.tensor([int(Symmetry.NONE), int(Symmetry.ROTATE_UP_2), int(Symmetry.ROTATE_UP_4),
                        int(Symmetry.ROTATE_UP_INF)])
    rots = symmetry_rotations(sym, torch.float64)
    for i, n in enumerate((1, 2, 4, 36)):
        distinct = torch.unique(rots[i].reshape(-1, 9).round(decimals=6), dim=0)
        assert distinct.shape[0] == n
        torch.testing.assert_close(rots[i][:, 1, 1], torch.ones(36, dtype=torch.float64))  # about y


def test_presets_load_and_differ():
    small, paper = load_preset("small"), load_preset("paper")
    assert paper.backbone == "resnet50" and (paper.image_height, paper.image_width) == (360, 480)
    assert small.fpn_channels < paper.fpn_channels


def test_roi_crops_and_procrustes_recover_the_ground_truth_pose():
    """With ground-truth depth and NOCs, the head's geometry (ROI sampling, back-projection,
    q~ = q * s, t = t_init + mu(p~) - R mu(q~)) gives back the exact pose."""
    from roca_core.geometry import weighted_procrustes
    from roca_core.model.roi_sampling import backproject_rois, roi_pixel_grid, sample_rois

    images, targets = make_batch(96, 128, batch_size=1, num_objects=1, seed=11)
    t = targets[0]
    boxes = t["boxes"]
    s = 32
    maps = torch.cat([t["depth"][None], t["noc"], t["masks"].float()], 0)[None]
    crop = sample_rois(maps, boxes, torch.zeros(1, dtype=torch.int64), s, "nearest")[0]
    u, v = roi_pixel_grid(boxes, s)
    p = backproject_rois(u, v, crop[0][None], t["K"][None])[0]  # (S, S, 3)
    q = crop[1:4].permute(1, 2, 0)
    w = (crop[4] > 0.5).float()
    assert w.sum() > 100
    t_init = torch.tensor([0.1, -0.2, 0.3]) + t["translations"][0]  # any initial guess
    src = (q * t["scales"][0]).reshape(1, -1, 3)
    rot, t_delta = weighted_procrustes(src, (p - t_init).reshape(1, -1, 3), w.reshape(1, -1))
    torch.testing.assert_close(rot[0], t["rotations"][0], atol=1e-4, rtol=0)
    torch.testing.assert_close(t_init + t_delta[0], t["translations"][0], atol=1e-4, rtol=0)


def test_camera_rays_match_the_pinhole_model():
    from roca_core.model.depth_head import camera_rays
    K = torch.tensor([[[200.0, 0.0, 63.5], [0.0, 180.0, 40.0], [0.0, 0.0, 1.0]],
                      [[100.0, 0.0, 10.0], [0.0, 100.0, 20.0], [0.0, 0.0, 1.0]]])
    rays = camera_rays(K, (20, 32), 4)  # (B, 2, h, w)
    assert rays.shape == (2, 2, 20, 32)
    # cell (i, j) of a stride-4 map is centred on pixel index (4j + 1.5, 4i + 1.5)
    for b in range(2):
        for i, j in ((0, 0), (7, 13), (19, 31)):
            u, v = 4 * j + 1.5, 4 * i + 1.5
            fx, fy, cx, cy = K[b, 0, 0], K[b, 1, 1], K[b, 0, 2], K[b, 1, 2]
            assert rays[b, 0, i, j].item() == pytest.approx(((u - cx) / fx).item())
            assert rays[b, 1, i, j].item() == pytest.approx(((v - cy) / fy).item())
    # a centred principal point gives a ray field antisymmetric about the image centre
    assert torch.allclose(rays[0, 0, :, :16], -rays[0, 0, :, 16:].flip(-1), atol=1e-6)


def test_depth_with_ray_input_depends_on_the_intrinsics(cfg):
    c = dataclasses.replace(cfg, depth_ray_input=True)
    torch.manual_seed(0)
    model = RocaModel(c).eval()
    img = torch.rand(3, c.image_height, c.image_width)
    K = torch.tensor([[232.0, 0, 127.5], [0, 232.0, 95.5], [0, 0, 1]])
    K2 = K.clone()
    K2[0, 0] = K2[1, 1] = 400.0
    d1 = model([img], intrinsics=[K])[0]["depth"]
    d2 = model([img], intrinsics=[K])[0]["depth"]
    d3 = model([img], intrinsics=[K2])[0]["depth"]
    assert torch.equal(d1, d2)
    assert not torch.allclose(d1, d3)
    with pytest.raises(ValueError, match="intrinsics"):
        model.depth_head(model.backbone(img[None]))


def test_roi_sampling_ratio_is_validated(cfg):
    from roca_core.config_io import ConfigError
    with pytest.raises(ConfigError, match="roi_sampling_ratio"):
        dataclasses.replace(cfg, roi_sampling_ratio=0)


def test_depth_feature_crops_with_one_sample_match_roi_align():
    """The grid_sample fast path used at roi_sampling_ratio 1 equals torchvision's ROIAlign."""
    from torchvision.ops import roi_align
    from roca_core.model.roi_sampling import sample_rois
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(3, 8, 24, 32, generator=g)
    xy = torch.rand(12, 2, generator=g) * torch.tensor([100.0, 70.0])
    boxes = torch.cat([xy, xy + torch.rand(12, 2, generator=g) * 40 + 2], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, 128.0, 96.0])  # the whole image: samples reach the border
    boxes = torch.minimum(boxes, torch.tensor([128.0, 96.0, 128.0, 96.0]))  # clipped, as detections are
    bidx = torch.arange(12) % 3
    ref = roi_align(feat, torch.cat([bidx[:, None].float(), boxes], 1), (16, 16), 0.25, 1, True)
    fast = sample_rois(feat, boxes * 0.25, bidx, 16, "bilinear", padding="border")
    assert torch.allclose(fast, ref, atol=1e-4)
