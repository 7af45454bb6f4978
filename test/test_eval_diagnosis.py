"""roca-make-dataset -> roca-eval with defaults, and the diagnosis modes of roca-eval
(--gt-boxes, --gt-depth, retrieval accuracy) on a tiny rendered data set and a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from roca_core.checkpoint import save_checkpoint
from roca_core.cli.eval import choose_split, main as eval_main
from roca_core.data.loader import RocaDataset
from roca_core.evaluation.evaluator import evaluate_predictor
from roca_core.evaluation.model_tap import gt_box_hook
from roca_core.model.roca import RocaModel
from roca_core.predictor import Predictor

from training_fixtures import tiny_model_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """6 rendered 48x64 images in 2 rooms, made by the CLI with its default split.

    A subprocess keeps the renderer's EGL context out of this process (importing
    torchvision after an EGL context was created crashes in this environment)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "render.yaml").write_text("min_visible_pixels: 20\n")
    cmd = [sys.executable, "-m", "roca_core.cli.make_dataset", "--out", str(root / "data"),
           "--images", "6", "--height", "48", "--width", "64", "--focal", "58",
           "--images-per-scene", "3", "--config", str(root / "render.yaml"), "--workers", "1",
           "--seed", "4", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "data"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = tiny_model_config()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", RocaModel(cfg), cfg)


def _run_eval(args: list[str], capsys) -> tuple[int, str]:
    rc = eval_main(args + ["--no-progress", "--device", "cpu"])
    return rc, capsys.readouterr().err


def test_make_dataset_writes_a_held_out_val_split_that_eval_reads_by_default(tiny_data, checkpoint,
                                                                              tmp_path, capsys):
    train = json.loads((tiny_data / "annotations_train.json").read_text())
    val = json.loads((tiny_data / "annotations_val.json").read_text())
    assert len(train["images"]) == 3 and len(val["images"]) == 3  # one room each
    assert not {im["scene_id"] for im in train["images"]} & {im["scene_id"] for im in val["images"]}
    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(tiny_data),
                         "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["split"] == "val" and report["num_images"] == 3 and "WARNING" not in err


def test_eval_without_a_val_split_falls_back_loudly_or_names_the_splits(tiny_data, checkpoint,
                                                                        tmp_path, capsys):
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    for name in ("images", "rendering", "cad_db", "annotations_train.json"):
        (only_train / name).symlink_to(tiny_data / name)
    assert choose_split(only_train, None)[0] == "train"
    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(only_train),
                         "--out", str(tmp_path / "r.json"), "--max-images", "1"], capsys)
    assert rc == 0 and "no val split" in err and "not held out" in err
    assert json.loads((tmp_path / "r.json").read_text())["split"] == "train"
    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(only_train),
                         "--split", "val"], capsys)
    assert rc == 1 and "no annotations for split 'val'" in err and "'train'" in err


def test_gt_boxes_give_every_object_exactly_one_prediction_of_its_class(tiny_data, checkpoint):
    dataset = RocaDataset(tiny_data, split="val")
    predictor = Predictor(checkpoint, cad_database=tiny_data / "cad_db", device="cpu",
                          score_threshold=0.05)
    source: dict = {}
    hook = gt_box_hook(predictor.model, source)
    try:
        total = 0
        for i in range(len(dataset)):
            image, target = dataset[i]
            source.update(boxes=target["boxes"], labels=target["labels"])
            rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            dets = predictor.predict(rgb, target["K"].numpy())
            want = sorted(zip((int(c) - 1 for c in target["labels"]), target["boxes"].tolist()))
            got = sorted((d.class_index, d.box.tolist()) for d in dets)
            assert [c for c, _ in got] == [c for c, _ in want]
            np.testing.assert_allclose([b for _, b in got], [b for _, b in want], atol=1e-3)
            assert all(d.score == 1.0 and d.cad_id is not None for d in dets)
            total += len(dets)
        assert total > 0
    finally:
        hook.remove()
    # The hook is gone: the detector answers again (an untrained one, so not the same boxes).
    image, target = dataset[0]
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert all(d.score < 1.0 for d in predictor.predict(rgb, target["K"].numpy()))


def test_eval_gt_boxes_and_gt_depth_report(tiny_data, checkpoint, tmp_path, capsys):
    dataset = RocaDataset(tiny_data, split="val")
    num_gt = int(sum(len(dataset.annotations(i)) for i in range(len(dataset))))
    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(tiny_data), "--gt-boxes",
                         "--gt-depth", "--out", str(tmp_path / "r.json"),
                         "--md", str(tmp_path / "r.md")], capsys)
    assert rc == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["gt_boxes"] is True and r["gt_depth"] is True
    assert r["num_detections"] == num_gt == sum(r["alignment"]["num_gt"].values())
    pe = r["pose_errors"]
    assert pe["num_gt"] == pe["num_with_prediction"] == num_gt
    assert r["detection"]["box_ap50"] is None and r["detection"]["mask_ap50"] is not None
    ret = r["retrieval"]
    assert ret["num_gt"] == num_gt and ret["num_cad_not_in_database"] == 0
    for source in ("pred_noc", "gt_noc"):
        assert ret[source]["num"] == num_gt
        assert 0.0 <= ret[source]["top1"] <= ret[source]["top5"] <= 100.0
        assert 0.0 < ret[source]["chance_top1"] <= ret[source]["chance_top5"] <= 100.0
    assert r["depth"]["abs_rel"] < 0.05  # the ground-truth map, resized to the network and back
    md = (tmp_path / "r.md").read_text()
    assert "ground-truth boxes" in md and "| box AP50 |" not in md and "| mask AP50 |" in md
    assert (f"Retrieval of the ground-truth CAD among its class ({num_gt} GT objects, queried on "
            "the ground-truth boxes)") in md

    # Without --gt-boxes, retrieval counts only objects the (untrained) detector found.
    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(tiny_data),
                         "--out", str(tmp_path / "d.json")], capsys)
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["gt_boxes"] is False and d["detection"]["box_ap50"] is not None
    assert d["retrieval"]["num_gt"] == num_gt
    assert d["retrieval"]["pred_noc"]["num"] <= d["pose_errors"]["num_with_prediction"]
    assert d["depth"]["abs_rel"] > r["depth"]["abs_rel"]


def test_gt_boxes_need_a_model(tiny_data):
    class NoModel:
        def predict(self, image, K):
            return []
    with pytest.raises(ValueError, match="RocaModel"):
        evaluate_predictor(NoModel(), RocaDataset(tiny_data, split="val"), gt_boxes=True,
                           progress=False)


def test_retrieval_chance_level_counts_the_same_class_cads_of_the_database(tiny_data, checkpoint):
    """Against the 56-model embedded library (6-7 CADs per class) instead of the data set's
    own few CADs: the chance level is the mean of 1 / (CADs of the object's class)."""
    dataset = RocaDataset(tiny_data, split="val")
    predictor = Predictor(checkpoint, cad_database=None, device="cpu", score_threshold=0.05)
    report = evaluate_predictor(predictor, dataset, gt_boxes=True, progress=False)
    db = predictor.cad_database
    classes = [dataset.class_names[int(c) - 1] for i in range(len(dataset))
               for c in dataset[i][1]["labels"]]
    per_class = Counter(db.model_classes)
    ret = report["retrieval"]
    assert ret["num_cad_not_in_database"] == 0 and ret["pred_noc"]["num"] == len(classes)
    expected = 100.0 * np.mean([1.0 / per_class[c] for c in classes])
    assert ret["pred_noc"]["chance_top1"] == pytest.approx(expected)
    assert ret["gt_noc"]["chance_top1"] == pytest.approx(expected) and expected < 20.0
    expected5 = 100.0 * np.mean([min(5, per_class[c]) / per_class[c] for c in classes])
    assert ret["gt_noc"]["chance_top5"] == pytest.approx(expected5)


def test_model_gt_boxes_keep_order_map_to_the_image_and_refuse_bad_input():
    torch.manual_seed(1)
    cfg = tiny_model_config()
    model = RocaModel(cfg).eval()
    image = torch.rand(3, 96, 128)  # twice the network input: boxes are scaled there and back
    K = torch.tensor([[116.0, 0, 63.5], [0, 116.0, 47.5], [0, 0, 1]])
    boxes = torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 4.0, 126.0, 50.0], [0.0, 0.0, 30.0, 30.0]])
    labels = torch.tensor([6, 9, 6])
    out = model([image], intrinsics=[K], gt_boxes=[boxes], gt_labels=[labels])[0]
    assert torch.allclose(out["boxes"], boxes, atol=1e-4) and torch.equal(out["labels"], labels)
    assert out["scores"].tolist() == [1.0, 1.0, 1.0] and out["masks"].shape == (3, 96, 128)
    assert out["rotations"].shape == (3, 3, 3) and out["noc_embeddings"].shape == (3, cfg.embedding_dim)
    empty = model([image], intrinsics=[K], gt_boxes=[boxes[:0]], gt_labels=[labels[:0]])[0]
    assert empty["boxes"].shape == (0, 4) and empty["noc_embeddings"].shape[0] == 0
    with pytest.raises(ValueError, match="1-based"):
        model([image], intrinsics=[K], gt_boxes=[boxes], gt_labels=[labels - 6])
    with pytest.raises(ValueError, match="gt_boxes but"):
        model([image], intrinsics=[K], gt_boxes=[boxes], gt_labels=[labels[:2]])
    with pytest.raises(ValueError, match="go together"):
        model([image], intrinsics=[K], gt_boxes=[boxes])
    with pytest.raises(ValueError, match="eval-mode"):
        model.train()([image], [{"K": K}], gt_boxes=[boxes], gt_labels=[labels])


def test_default_val_split_holds_out_a_tenth_of_the_rooms_and_at_least_one():
    from roca_core.cli.make_dataset import default_val_fraction
    assert default_val_fraction(5, 10) == 0.0  # a single room cannot be split
    for rooms in range(2, 60):
        # make_dataset holds out int(round(rooms * fraction)) rooms
        val_rooms = int(round(rooms * default_val_fraction(rooms * 10, 10)))
        assert 1 <= val_rooms <= max(1, round(rooms * 0.1)), rooms
    assert int(round(800 * default_val_fraction(8000, 10))) == 80


def test_eval_upright_prior_and_depth_source_errors(tiny_data, checkpoint, tmp_path, capsys):
    """--upright hands each frame's up direction (from its upright ground-truth objects) to the
    predictor: every prediction then stands upright. Asking for sensor depth a data set does
    not have is a clear error, as is contradicting --gt-depth."""
    from roca_core.evaluation.evaluator import up_from_ground_truth
    dataset = RocaDataset(tiny_data, split="val")
    predictor = Predictor(checkpoint, cad_database=False, device="cpu", score_threshold=0.0)
    seen = []
    original = predictor.predict

    def spy(rgb, K, **extra):
        dets = original(rgb, K, **extra)
        seen.append((extra.get("up"), dets))
        return dets

    predictor.predict = spy
    report = evaluate_predictor(predictor, dataset, upright=True, progress=False)
    assert report["upright"] is True and report["depth_source"] == "predicted"
    checked = 0
    for up, dets in seen:
        assert up is not None  # every frame of the tiny set has objects
        for d in dets:
            np.testing.assert_allclose(d.rotation[:, 1], up, atol=1e-4)
            checked += 1
    assert checked > 0
    _, target = dataset[0]
    np.testing.assert_allclose(up_from_ground_truth(target),
                               target["rotations"][0][:, 1].numpy(), atol=1e-5)

    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(tiny_data), "--max-images", "1",
                         "--depth-source", "sensor"], capsys)
    assert rc == 1 and "--sensor-depth" in err
    rc, err = _run_eval(["--checkpoint", str(checkpoint), "--data", str(tiny_data), "--gt-depth",
                         "--depth-source", "sensor"], capsys)
    assert rc == 2 and "contradicts" in err


def test_eval_floor_prior_stands_predictions_on_the_ground_truth_floor(tiny_data, checkpoint):
    """--floor hands each frame's up direction and camera height (from its ground-truth objects,
    all on the floor, and their CAD models' heights) to the predictor. With weight 1 and the
    size following the distance (the defaults), every detection the floor applies to then has
    its bottom on that floor; with size_exponent 0 the same translation, with the size as predicted.
    The height lies in the renderer's camera height range."""
    import copy

    from roca_core.evaluation.evaluator import camera_height_from_ground_truth
    from roca_core.geometry.ground_plane import GroundPlaneConfig, bottom_drops

    dataset = RocaDataset(tiny_data, split="val")
    predictor = Predictor(checkpoint, cad_database=tiny_data / "cad_db", device="cpu", score_threshold=0.0)
    predictor.ground_plane = GroundPlaneConfig(weight=1.0, size_exponent=1.0, bottom_edge_weight=0.0)
    seen = []
    original = predictor.predict

    def spy(rgb, K, **extra):
        before = Predictor.predict(predictor, rgb, K, up=extra.get("up"))
        dets = original(rgb, K, **extra)
        seen.append((extra.get("up"), extra.get("camera_height"), before, dets))
        return dets

    predictor.predict = spy
    report = evaluate_predictor(predictor, dataset, floor=True, progress=False)
    assert report["floor"] is True and report["upright"] is True
    moved = 0
    for up, height, before, dets in seen:
        assert up is not None and 1.0 - 1e-3 <= height <= 1.8 + 1e-3  # RenderConfig's camera heights
        translation_only = copy.deepcopy(before)
        predictor.ground_plane = GroundPlaneConfig(size_exponent=0.0)
        predictor._stand_on_floor(translation_only, up, height)
        predictor.ground_plane = GroundPlaneConfig(bottom_edge_weight=0.0)
        for b, d, t in zip(before, dets, translation_only):
            f = d.scale[1] / b.scale[1]
            np.testing.assert_allclose(d.scale, b.scale * f, rtol=1e-6)  # one factor for both
            np.testing.assert_allclose(d.translation, b.translation * f, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(t.translation, d.translation, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(t.scale, b.scale)
            drop = bottom_drops(d.translation[None], d.scale[None], [predictor.half_height(d)], up)[0]
            if abs(f - 1.0) > 1e-9:
                assert drop == pytest.approx(height, rel=1e-6)
                moved += 1
    assert moved > 0
    _, target = dataset[0]
    assert camera_height_from_ground_truth(target, None) is None
    with pytest.raises(ValueError, match="CAD database"):
        evaluate_predictor(Predictor(checkpoint, cad_database=False, device="cpu"), dataset, floor=True,
                           progress=False)


def test_floor_prior_slides_detections_onto_their_box_bottoms(tiny_data, checkpoint):
    """After the floor's scaling, each detection slides along the floor until its CAD model's
    lowest point meets its box's bottom edge (weight 1: all the way; the default goes half way).
    Wherever it moved, that point projects onto the edge's row and the bottom stays on the
    floor; boxes at the image's bottom border and slides beyond the cap stay where the floor put
    them."""
    from roca_core.geometry.ground_plane import GroundPlaneConfig, bottom_drops
    from roca_core.predictor import BOTTOM_EDGE_POINTS

    dataset = RocaDataset(tiny_data, split="val")
    predictor = Predictor(checkpoint, cad_database=tiny_data / "cad_db", device="cpu", score_threshold=0.0)
    frames = []
    original = predictor.predict

    def spy(rgb, K, **extra):
        frames.append((rgb, K, extra.get("up"), extra.get("camera_height")))
        return original(rgb, K, **extra)

    predictor.predict = spy
    evaluate_predictor(predictor, dataset, floor=True, progress=False)
    predictor.predict = original
    moved = kept = 0
    for rgb, K, up, height in frames:
        predictor.ground_plane = GroundPlaneConfig(bottom_edge_weight=0.0)
        floor_only = predictor.predict(rgb, K, up=up, camera_height=height)
        predictor.ground_plane = GroundPlaneConfig(bottom_edge_weight=1.0, bottom_edge_max_shift_m=50.0)
        slid = predictor.predict(rgb, K, up=up, camera_height=height)
        assert len(floor_only) == len(slid)
        for a, b in zip(floor_only, slid):
            np.testing.assert_allclose(b.scale, a.scale)
            np.testing.assert_allclose(b.rotation, a.rotation)
            move = b.translation - a.translation
            halves = [predictor.half_height(a)]
            np.testing.assert_allclose(bottom_drops(b.translation[None], b.scale[None], halves, up),
                                       bottom_drops(a.translation[None], a.scale[None], halves, up), atol=1e-9)
            if np.linalg.norm(move) == 0.0:
                kept += 1
                continue
            assert b.box[3] < rgb.shape[0] - 1 - GroundPlaneConfig().bottom_edge_margin_px
            points = predictor._surfaces(b.cad_id).points.numpy().astype(np.float64)[:BOTTOM_EDGE_POINTS]
            cam = (points * b.scale) @ b.rotation.T + b.translation
            lowest = float((K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]).max())
            assert lowest == pytest.approx(float(b.box[3]), abs=0.05)
            moved += 1
    assert moved > 0 and kept > 0
    # a cap of a millimetre leaves every detection where the floor put it
    rgb, K, up, height = frames[0]
    predictor.ground_plane = GroundPlaneConfig(bottom_edge_weight=0.0)
    floor_only = predictor.predict(rgb, K, up=up, camera_height=height)
    predictor.ground_plane = GroundPlaneConfig(bottom_edge_weight=1.0, bottom_edge_max_shift_m=1e-3)
    capped = predictor.predict(rgb, K, up=up, camera_height=height)
    for a, b in zip(floor_only, capped):
        assert np.linalg.norm(b.translation - a.translation) <= 1e-3


def test_eval_floor_bottom_weight_is_checked_and_reported(tiny_data, checkpoint, tmp_path, capsys):
    out = tmp_path / "floor.json"
    base = ["--checkpoint", str(checkpoint), "--data", str(tiny_data), "--max-images", "1", "--floor"]
    rc, err = _run_eval(base + ["--floor-bottom-weight", "0", "--out", str(out)], capsys)
    assert rc == 0, err
    report = json.loads(out.read_text())
    assert report["floor_bottom_weight"] == 0.0 and report["floor_weight"] == 1.0
    rc, err = _run_eval(base + ["--floor-bottom-weight", "1.5"], capsys)
    assert rc == 1 and "bottom_edge_weight" in err
