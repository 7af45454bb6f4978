"""AP50, depth error, the report writers and the evaluator loop on hand-made data."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.evaluation.depth_metric import DepthErrorAccumulator
from roca_core.evaluation.detection_metric import (DetectionAPAccumulator, average_precision,
                                                   box_iou)
from roca_core.evaluation.evaluator import evaluate_frames, evaluate_predictor
from roca_core.evaluation.report import format_markdown, write_json, write_markdown
from roca_core.geometry.rotations import matrix_to_quat_np, quat_to_matrix_np

torch.set_num_threads(2)

CHAIR = CLASS_NAMES.index("chair")
TABLE = CLASS_NAMES.index("table")


# ---------------------------------------------------------------------------------------
# AP50


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


def test_ap_tp_then_fp_is_100_percent():
    """One GT; a TP at 0.9 reaches recall 1 at precision 1 before the FP at 0.8."""
    assert average_precision(np.array([0.9, 0.8]), np.array([True, False]), 1) == 1.0


def test_ap_fp_then_tp_is_50_percent():
    """The envelope at every recall point is the precision 1/2 of the second detection."""
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 1) == pytest.approx(0.5)


def test_ap_half_recall_by_hand():
    """Two GTs, one found at precision 1: recall points 0..0.5 (51 of 101) score 1."""
    assert average_precision(np.array([0.9]), np.array([True]), 2) == pytest.approx(51 / 101)


def test_accumulator_hand_case_boxes_and_masks():
    acc = DetectionAPAccumulator()
    gt_box = np.array([[10, 10, 50, 50]], float)
    gt_mask = np.zeros((1, 64, 64), bool)
    gt_mask[0, 10:50, 10:50] = True
    # Chair TP at 0.9 (exact), a second chair at 0.8 on the same object (duplicate -> FP),
    # a table at 0.7 where there is no table (no GT for tables -> ignored).
    pb = np.array([[10, 10, 50, 50], [12, 10, 50, 50], [0, 0, 5, 5]], float)
    pm = np.zeros((3, 64, 64), bool)
    pm[0, 10:50, 10:50] = True
    pm[1, 12:50, 10:50] = True
    pm[2, 0:5, 0:5] = True
    acc.add([CHAIR, CHAIR, TABLE], [0.9, 0.8, 0.7], pb, [CHAIR], gt_box, pm, gt_mask)
    res = acc.result()
    assert res.box_ap50 == pytest.approx(100.0) and res.mask_ap50 == pytest.approx(100.0)
    assert set(res.per_class_box) == {"chair"}
    # A second image with a missed chair halves recall: AP = 51/101.
    acc.add([], [], np.zeros((0, 4)), [CHAIR], gt_box, np.zeros((0, 64, 64), bool), gt_mask)
    assert acc.result().box_ap50 == pytest.approx(100.0 * 51 / 101)


def test_accumulator_agrees_with_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    acc = DetectionAPAccumulator()
    images, anns, dets = [], [], []
    for img in range(12):
        images.append({"id": img, "height": 200, "width": 200})
        gtc = rng.integers(0, 3, size=rng.integers(1, 5))
        gtb = np.concatenate([rng.uniform(0, 120, (len(gtc), 2)), rng.uniform(20, 80, (len(gtc), 2))], 1)
        gtb[:, 2:] += gtb[:, :2]
        # Detections: jittered GTs (some too far to match) plus random boxes.
        dc = np.concatenate([gtc, rng.integers(0, 3, size=2)])
        db = np.concatenate([gtb + rng.normal(0, 8, gtb.shape),
                             np.array([[0, 0, 40, 40], [100, 100, 180, 150]], float)])
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        ds = rng.uniform(0, 1, len(dc))
        acc.add(dc, ds, db, gtc, gtb)
        for c, b in zip(gtc, gtb):
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(c) + 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
        for c, b, s in zip(dc, db, ds):
            dets.append({"image_id": img, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASS_NAMES)]}
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.areaRng = [ev.params.areaRng[0]]
    ev.params.areaRngLbl = ["all"]
    ev.params.maxDets = [100]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]  # (101, K)
    per_class = {CLASS_NAMES[k]: 100 * prec[:, k].mean() for k in range(len(CLASS_NAMES))
                 if (prec[:, k] > -1).any()}
    ours = acc.result()
    assert set(ours.per_class_box) == set(per_class)
    for name, ap in per_class.items():
        assert ours.per_class_box[name] == pytest.approx(ap, abs=1e-6), name
    assert 0 < ours.box_ap50 < 100


# ---------------------------------------------------------------------------------------
# Depth


def test_depth_errors_by_hand():
    acc = DepthErrorAccumulator()
    gt = np.array([[1.0, 2.0], [0.0, 4.0]])  # one unknown pixel
    pred = np.array([[1.5, 2.0], [9.0, 3.0]])
    acc.add(pred, gt)
    r = acc.result()
    assert r.num_pixels == 3
    assert r.mae_m == pytest.approx((0.5 + 0 + 1) / 3)
    assert r.rmse_m == pytest.approx(math.sqrt((0.25 + 1) / 3))
    assert r.abs_rel == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert r.delta_1_25 == pytest.approx(100 / 3)  # 1.5/1 and 4/3 are both off by > 25 %


# ---------------------------------------------------------------------------------------
# The evaluator loop with ground truth fed back as predictions


def _target(scene: str, image_id: int, objects: list[dict], h=48, w=64) -> dict:
    n = len(objects)
    masks = torch.zeros((n, h, w), dtype=torch.uint8)
    boxes = torch.zeros((n, 4))
    for j, o in enumerate(objects):
        x0, y0, x1, y1 = o["box"]
        masks[j, y0:y1, x0:x1] = 1
        boxes[j] = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
    rots = torch.tensor(np.array([quat_to_matrix_np(o["q"]) for o in objects]).reshape(n, 3, 3),
                        dtype=torch.float32)
    return {
        "boxes": boxes, "labels": torch.tensor([CLASS_NAMES.index(o["cls"]) + 1 for o in objects]),
        "masks": masks, "depth": torch.full((h, w), 2.0), "K": torch.tensor(
            [[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]),
        "rotations": rots, "quaternions": torch.tensor(np.array([o["q"] for o in objects]).reshape(n, 4),
                                                       dtype=torch.float32),
        "translations": torch.tensor(np.array([o["t"] for o in objects]).reshape(n, 3), dtype=torch.float32),
        "scales": torch.tensor(np.array([o["s"] for o in objects]).reshape(n, 3), dtype=torch.float32),
        "symmetries": torch.tensor([int(o["sym"]) for o in objects], dtype=torch.int64),
        "cad_ids": [o["cad"] for o in objects], "image_id": image_id, "scene_id": scene,
    }


class FakeDataset:
    """Three frames of one scene (one of them empty), in the dataset contract's format."""

    def __init__(self, rng: np.random.Generator):
        def obj(cls, box, sym, cad):
            q = rng.normal(size=4)
            return {"cls": cls, "box": box, "q": q / np.linalg.norm(q),
                    "t": rng.uniform(-1, 1, 3) + [0, 0, 3], "s": rng.uniform(0.4, 1.5, 3),
                    "sym": sym, "cad": cad}
        self.frames = [
            _target("scene0", 0, [obj("chair", (5, 5, 25, 30), Symmetry.NONE, "chair_a"),
                                  obj("table", (30, 10, 60, 40), Symmetry.ROTATE_UP_4, "table_a")]),
            _target("scene0", 1, [obj("chair", (0, 0, 20, 20), Symmetry.NONE, "chair_b")]),
            _target("scene1", 2, []),
        ]
        self.poses = [np.eye(4) for _ in self.frames]

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return torch.rand(3, 48, 64), self.frames[i]

    def camera_pose(self, i):
        return self.poses[i]


class GroundTruthPredictor:
    """Answers with the dataset's own ground truth (Detection duck type) and depth."""

    def __init__(self, dataset: FakeDataset):
        self.dataset = dataset
        self.calls = 0
        self.last_depth = None

    def predict(self, image_rgb: np.ndarray, K: np.ndarray):
        assert image_rgb.dtype == np.uint8 and image_rgb.shape == (48, 64, 3)
        target = self.dataset.frames[self.calls]
        self.calls += 1
        self.last_depth = target["depth"].numpy()
        dets = []
        for j in range(len(target["labels"])):
            r = target["rotations"][j].double().numpy()
            dets.append(SimpleNamespace(
                class_name=CLASS_NAMES[int(target["labels"][j]) - 1], score=0.9 - 0.1 * j,
                box=target["boxes"][j].numpy(), mask=target["masks"][j].numpy().astype(bool),
                rotation=r, quaternion=matrix_to_quat_np(r),
                translation=target["translations"][j].numpy(), scale=target["scales"][j].numpy(),
                cad_id=target["cad_ids"][j], valid=True))
        return dets


def test_evaluator_on_ground_truth_scores_100_percent(tmp_path):
    ds = FakeDataset(np.random.default_rng(1))
    report = evaluate_predictor(GroundTruthPredictor(ds), ds, progress=False)
    for mode in ("frame_mode", "scene_mode"):
        for key in ("alignment", "retrieval_aware"):
            assert report[mode][key]["class_mean"] == 100.0, (mode, key)
            assert report[mode][key]["instance_mean"] == 100.0, (mode, key)
    assert report["mode"] == "scene"
    assert report["alignment"]["per_class"] == {"chair": 100.0, "table": 100.0}
    assert report["alignment"]["num_gt"] == {"chair": 2, "table": 1}
    assert report["detection"]["box_ap50"] == pytest.approx(100.0)
    assert report["detection"]["mask_ap50"] == pytest.approx(100.0)
    assert report["depth"]["mae_m"] == 0.0 and report["depth"]["num_pixels"] == 3 * 48 * 64
    assert report["num_images"] == 3 and report["num_detections"] == 3


def test_evaluator_frame_only_without_poses_and_max_images():
    ds = FakeDataset(np.random.default_rng(2))
    ds.camera_pose = lambda i: None  # type: ignore[method-assign]
    pred = GroundTruthPredictor(ds)
    report = evaluate_predictor(pred, ds, progress=False, max_images=1)
    assert pred.calls == 1 and report["num_images"] == 1
    assert report["mode"] == "frame" and "scene_mode" not in report
    with pytest.raises(ValueError, match="camera pose"):
        evaluate_predictor(GroundTruthPredictor(ds), ds, progress=False, mode="scene")


def test_evaluator_scores_a_wrong_predictor_below_100():
    ds = FakeDataset(np.random.default_rng(4))

    class Shifted(GroundTruthPredictor):
        def predict(self, image_rgb, K):
            dets = super().predict(image_rgb, K)
            for d in dets:
                if d.class_name == "table":
                    d.translation = d.translation + np.array([0.3, 0.0, 0.0], np.float32)
                d.cad_id = "other"
            return dets

    report = evaluate_predictor(Shifted(ds), ds, progress=False, mode="frame")
    assert report["alignment"]["per_class"] == {"chair": 100.0, "table": 0.0}
    assert report["alignment"]["class_mean"] == 50.0
    assert report["alignment"]["instance_mean"] == pytest.approx(200 / 3)
    assert report["retrieval_aware"]["instance_mean"] == 0.0
    pe = report["pose_errors"]  # the table is 30 cm off, the chairs exact
    assert pe["num_gt"] == 3 and pe["num_with_prediction"] == 3
    assert pe["within_translation"] == pytest.approx(200 / 3) and pe["within_rotation"] == 100.0
    assert pe["within_all"] == pytest.approx(200 / 3)
    md = format_markdown(report)
    assert "Pose errors of the closest same-class prediction (3 of 3" in md
    per_class = report["pose_errors_per_class"]  # the table's error shows in its own column
    assert per_class["table"]["within_translation"] == 0.0 and per_class["chair"]["within_translation"] == 100.0
    assert per_class["table"]["median_translation_m"] == pytest.approx(0.3, abs=1e-5)
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| translation median (m)")}
    assert rows["| translation median (m)"].endswith("| 0.000 | 0.300 | 0.000 |")  # chair, table, all


def test_evaluate_frames_refuses_an_empty_dataset():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_frames(lambda *a: None, [], progress=False)


# ---------------------------------------------------------------------------------------
# Report shape


def test_markdown_and_json_report_shape(tmp_path):
    ds = FakeDataset(np.random.default_rng(5))
    report = evaluate_predictor(GroundTruthPredictor(ds), ds, progress=False)
    md = format_markdown(report)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| metric"))
    assert header.split("|")[2].strip() == "chair" and "class mean" in header
    for row in ("alignment (per frame)", "retrieval-aware (per frame)", "alignment (per scene)",
                "retrieval-aware (per scene)", "box AP50", "mask AP50", "# GT objects"):
        assert any(line.startswith(f"| {row} |") for line in lines), row
    # Every row of each table has as many cells as its header.
    start = lines.index(header)
    end = lines.index("", start)
    assert len({line.count("|") for line in lines[start:end]}) == 1
    pose = lines.index(next(line for line in lines if line.startswith("| pose errors of the closest")))
    pose_end = lines.index("", pose) if "" in lines[pose:] else len(lines)
    assert pose_end - pose == 2 + 9 and len({line.count("|") for line in lines[pose:pose_end]}) == 1
    assert "Depth: abs rel 0.000" in md

    out = write_json(report, tmp_path / "sub" / "eval.json")
    data = json.loads(out.read_text())
    for key in ("alignment", "retrieval_aware"):
        assert set(data[key]) >= {"class_mean", "instance_mean", "per_class"}
        assert data[key]["class_mean"] == 100.0
    assert set(data["detection"]) >= {"box_ap50", "mask_ap50"}
    assert set(data["depth"]) >= {"abs_rel", "rmse_m", "mae_m"}
    assert data["num_images"] == 3
    md_path = write_markdown(report, tmp_path / "eval.md")
    assert md_path.read_text().startswith("## ROCA evaluation")


def test_json_writer_turns_nan_into_null(tmp_path):
    path = write_json({"alignment": {"class_mean": float("nan")}, "x": np.float32(1.5)},
                      tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"alignment": {"class_mean": None}, "x": 1.5}


def test_cli_help_and_missing_data_dir(capsys, tmp_path):
    from roca_core.cli.eval import main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
    assert main(["--data", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# evaluate_model: an in-memory nn.Module with the model contract, plus a CAD database


class GroundTruthModel(torch.nn.Module):
    """Eval-mode outputs of the model contract, copied from the dataset's ground truth.

    The NOC embedding of an object is the one-hot code of its CAD, and ``embed_cad`` reads
    the code back from the voxel grid, so nearest-neighbour retrieval is exact.
    """

    def __init__(self, dataset: FakeDataset, cad_ids: list[str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        self.dataset, self.cad_ids, self.calls = dataset, cad_ids, 0

    def embed_cad(self, voxels: torch.Tensor) -> torch.Tensor:
        return voxels[:, 0, 0, : len(self.cad_ids)].float()

    def forward(self, images, intrinsics=None):
        assert not self.training and intrinsics is not None
        t = self.dataset.frames[self.calls]
        self.calls += 1
        n = len(t["labels"])
        emb = torch.zeros(n, len(self.cad_ids))
        for j, cad in enumerate(t["cad_ids"]):
            emb[j, self.cad_ids.index(cad)] = 1.0
        return [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.full((n,), 0.9),
                 "masks": t["masks"].float()[:, None] * 0.9, "rotations": t["rotations"],
                 "translations": t["translations"], "scales": t["scales"],
                 "valid": torch.ones(n, dtype=torch.bool), "noc_embeddings": emb,
                 "depth": t["depth"] + 0.1}]


class FakeCadDatabase(SimpleNamespace):
    """The part of the CadDatabase contract that evaluate_model reads."""

    def __len__(self) -> int:
        return len(self.ids)


def test_evaluate_model_with_retrieval_from_a_cad_database():
    from roca_core.evaluation.evaluator import evaluate_model
    ds = FakeDataset(np.random.default_rng(6))
    cad_ids = ["chair_a", "chair_b", "table_a", "table_b"]
    voxels = np.zeros((4, 32, 32, 32), bool)
    for k in range(4):
        voxels[k, 0, 0, k] = True
    db = FakeCadDatabase(ids=cad_ids, model_classes=["chair", "chair", "table", "table"],
                         symmetries=[Symmetry.NONE] * 2 + [Symmetry.ROTATE_UP_4] * 2,
                         voxels=voxels)
    model = GroundTruthModel(ds, cad_ids).train()
    report = evaluate_model(model, ds, db, progress=False)
    assert model.training  # mode restored
    assert report["alignment"]["instance_mean"] == 100.0
    assert report["retrieval_aware"]["instance_mean"] == 100.0
    assert report["detection"]["mask_ap50"] == pytest.approx(100.0)
    assert report["depth"]["mae_m"] == pytest.approx(0.1, abs=1e-6)
    # Same-CAD retrieval per GT object: exact embeddings rank the right CAD first among the
    # two of its class (chance 50 %); the stand-in has no alignment head: no GT-NOC queries.
    ret = report["retrieval"]
    assert ret["num_gt"] == 3 and ret["pred_noc"]["num"] == 3 and ret["gt_noc"]["num"] == 0
    assert ret["pred_noc"]["top1"] == 100.0 and ret["pred_noc"]["chance_top1"] == 50.0
    # Embeddings that point at the other CAD of the class: top-1 fails, top-5 still hits.
    model.calls = 0
    model.cad_ids = ["chair_b", "chair_a", "table_b", "table_a"]
    ret = evaluate_model(model, ds, db, progress=False)["retrieval"]["pred_noc"]
    assert ret["top1"] == 0.0 and ret["top5"] == 100.0
    model.cad_ids = cad_ids
    # A database without the table's CAD: that object is counted apart, not as a miss.
    model.calls = 0
    keep = [0, 1, 3]
    partial = FakeCadDatabase(ids=[cad_ids[k] for k in keep], voxels=voxels[keep],
                              model_classes=["chair", "chair", "table"],
                              symmetries=[db.symmetries[k] for k in keep])
    ret = evaluate_model(model, ds, partial, progress=False)["retrieval"]
    assert ret["num_gt"] == 3 and ret["num_cad_not_in_database"] == 1
    assert ret["pred_noc"]["num"] == 2 and ret["pred_noc"]["top1"] == 100.0
    # Without a database, nothing is retrieved: retrieval-aware accuracy is 0.
    model.calls = 0
    report = evaluate_model(model, ds, None, progress=False)
    assert report["alignment"]["instance_mean"] == 100.0
    assert report["retrieval_aware"]["instance_mean"] == 0.0
    assert "retrieval" not in report


def test_frame_pose_is_read_from_the_coco_image_entry():
    from roca_core.evaluation.evaluator import frame_pose
    pose = np.arange(16, dtype=float).reshape(4, 4)
    ds = SimpleNamespace(images=[{"id": 0}, {"id": 1, "pose_cam_to_world": pose.tolist()}])
    assert frame_pose(ds, 0, {}) is None
    np.testing.assert_array_equal(frame_pose(ds, 1, {}), pose)
    np.testing.assert_array_equal(frame_pose(ds, 0, {"pose": torch.eye(4)}), np.eye(4))


@pytest.mark.slow
def test_roca_eval_end_to_end_on_a_rendered_image(tmp_path, capsys):
    """Real RocaDataset + Predictor (untrained small model): the CLI writes both reports."""
    from roca_core.checkpoint import save_checkpoint
    from roca_core.cli.eval import main
    from roca_core.data.dataset_writer import make_dataset
    from roca_core.model.config import ModelConfig, preset_path
    from roca_core.model.roca import RocaModel

    data = tmp_path / "data"
    make_dataset(data, 1, seed=5, progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig.from_yaml(preset_path("small"))
    ckpt = save_checkpoint(tmp_path / "model.safetensors", RocaModel(cfg), cfg)
    rc = main(["--checkpoint", str(ckpt), "--data", str(data), "--split", "train",
               "--out", str(tmp_path / "eval.json"), "--md", str(tmp_path / "eval.md"),
               "--no-progress"])
    assert rc == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_images"] == 1 and report["split"] == "train"
    assert report["cad_database"].endswith("cad_db")  # the data set's own CADs by default
    for key in ("alignment", "retrieval_aware"):
        assert 0.0 <= report[key]["instance_mean"] <= 100.0
        assert sum(report[key]["num_gt"].values()) >= 1
    assert 0.0 <= report["detection"]["box_ap50"] <= 100.0
    assert report["depth"]["num_pixels"] > 0 and report["depth"]["rmse_m"] > 0
    assert "| alignment (per frame) |" in (tmp_path / "eval.md").read_text()
    # A broken checkpoint is refused with a message, not a traceback.
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(["--checkpoint", str(tmp_path / "bad.safetensors"), "--data", str(data),
                 "--split", "train", "--no-progress"]) == 1
    assert "roca-eval:" in capsys.readouterr().err
