"""Predictor and roca-predict on a randomly initialised small-preset model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from roca_core.checkpoint import CheckpointError
from roca_core.geometry.rotations import quat_to_matrix_np
from roca_core.model import RocaModel, load_preset
from roca_core.predictor import Detection, Predictor

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(random_small_checkpoint) -> Path:
    return random_small_checkpoint


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    # score threshold 0: a random model's scores are low, we want detections to check
    return Predictor(checkpoint, cad_database=None, device="cpu", score_threshold=0.0, max_detections=8)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 3: 2 * w // 3] = (200, 40, 40)
    return img


def _K(h: int, w: int, f: float = 1.0) -> np.ndarray:
    return np.array([[f * w, 0, (w - 1) / 2], [0, f * w, (h - 1) / 2], [0, 0, 1.0]])


def test_detections_have_consistent_shapes(predictor):
    h, w = 150, 210  # not the model's input size or aspect
    dets = predictor.predict(_image(h, w), _K(h, w))
    assert isinstance(dets, list) and 0 < len(dets) <= 8
    assert predictor.last_depth.shape == (h, w) and np.isfinite(predictor.last_depth).all()
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets:
        assert isinstance(d, Detection)
        assert d.class_name == predictor.class_names[d.class_index]
        assert d.box.shape == (4,) and 0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h
        assert d.mask.shape == (h, w) and d.mask.dtype == bool
        assert np.linalg.det(d.rotation) == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(quat_to_matrix_np(d.quaternion), d.rotation, atol=1e-5)
        np.testing.assert_allclose(d.transform[:3, :3], d.rotation @ np.diag(d.scale), atol=1e-9)
        np.testing.assert_allclose(d.transform[:3, 3], d.translation)
        # retrieval from the embedded library, within the predicted class
        assert d.cad_id is not None and predictor.db.model_classes[predictor.db.index_of(d.cad_id)] == d.class_name
        assert Path(d.mesh_path).is_file() and np.isfinite(d.retrieval_distance)
        json.dumps(d.to_dict())


def test_tiny_images_work_and_empty_images_raise(predictor):
    for h, w in ((1, 1), (8, 8), (3, 50)):
        dets = predictor.predict(_image(h, w), _K(h, w))
        assert isinstance(dets, list)
        for d in dets:
            assert d.mask.shape == (h, w)
    with pytest.raises(ValueError, match="empty"):
        predictor.predict(np.zeros((0, 0, 3), np.uint8), _K(1, 1))
    with pytest.raises(ValueError, match="empty"):
        predictor.predict(np.zeros((0, 5, 3), np.uint8), _K(1, 5))


def test_bad_inputs_raise(predictor):
    img = _image(40, 60)
    with pytest.raises(ValueError, match="RGB"):
        predictor.predict(img[..., 0], _K(40, 60))
    with pytest.raises(ValueError, match="focal"):
        predictor.predict(img, np.diag([-1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="principal point"):
        predictor.predict(img, np.array([[50.0, 0, 500], [0, 50.0, 20], [0, 0, 1]]))


def test_no_detections_is_an_empty_list(checkpoint):
    p = Predictor(checkpoint, cad_database=False, device="cpu", score_threshold=1.0)
    assert p.predict(_image(64, 80), _K(64, 80)) == []


def test_checkpoint_round_trip_through_predictor(checkpoint, predictor):
    torch.manual_seed(0)
    model = RocaModel(load_preset("small"))  # same seed: the weights that were saved
    from_model = Predictor(model, cad_database=False, device="cpu", score_threshold=0.0, max_detections=8)
    img, K = _image(96, 128, 3), _K(96, 128)
    a = from_model.predict(img, K)
    b = predictor.predict(img, K)
    assert [d.class_index for d in a] == [d.class_index for d in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.box, y.box, atol=1e-4)
        np.testing.assert_allclose(x.transform, y.transform, atol=1e-5)
        assert (x.mask == y.mask).all()


def test_missing_demo_model_is_a_clear_error(monkeypatch, tmp_path):
    import roca_core.predictor as pred_mod
    monkeypatch.setattr(pred_mod, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(pred_mod, "share_dir", lambda: tmp_path)
    with pytest.raises(CheckpointError, match="demo model"):
        Predictor(None, cad_database=False, device="cpu")


def test_roca_predict_cli_end_to_end(checkpoint, tmp_path, capsys):
    import trimesh
    from PIL import Image

    from roca_core.cli.predict import main

    img_path = tmp_path / "room.png"
    Image.fromarray(_image(72, 96, 5)).save(img_path)
    out = tmp_path / "out"
    rc = main([str(img_path), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu",
               "--score-threshold", "0.0", "--fov", "60"])
    assert rc == 0
    record = json.loads((out / "room.json").read_text())
    assert record["width"] == 96 and record["height"] == 72 and record["detections"]
    det = record["detections"][0]
    assert len(det["transform"]) == 4 and det["cad_id"] is not None
    overlay = np.asarray(Image.open(out / "room_overlay.png"))
    assert overlay.shape == (72, 96, 3) and not np.array_equal(overlay, _image(72, 96, 5))
    scene = trimesh.load(out / "room_scene.glb")
    assert len(scene.geometry) == len(record["detections"]) + 1  # + the camera marker


def test_roca_predict_cli_errors_name_the_file(checkpoint, tmp_path, capsys):
    from PIL import Image

    from roca_core.cli.predict import main

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    assert main([str(bad), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 2
    assert "broken.png" in capsys.readouterr().err
    good = tmp_path / "ok.png"
    Image.fromarray(_image(40, 60)).save(good)
    assert main([str(good), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--intrinsics", "50,50,70,20"]) == 2
    err = capsys.readouterr().err
    assert "ok.png" in err and "principal point" in err
    assert main([str(good), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--intrinsics", "0,50,30,20"]) == 2
    assert "focal" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.jpg" in capsys.readouterr().err


def test_overlay_and_scene_export_for_a_known_pose(tmp_path):
    import trimesh

    from roca_core.predictor import compose_transform
    from roca_core.visualize import CV_TO_GLTF, draw_overlay, export_scene_glb

    h, w = 120, 160
    K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])
    rot, t, s = np.eye(3), np.array([0.0, 0.0, 3.0]), np.array([1.0, 0.5, 1.0])
    mask = np.zeros((h, w), bool)
    mask[50:70, 60:100] = True
    det = Detection("table", 8, 0.9, np.array([50.0, 40, 110, 80]), mask, rot, np.array([1.0, 0, 0, 0]), t, s,
                    compose_transform(rot, t, s))
    img = np.full((h, w, 3), 30, np.uint8)
    out = draw_overlay(img, [det], K)
    assert out.shape == img.shape and (out[mask] != 30).any()
    # the aligned unit cube's front-left-top corner (-0.5, -0.25, -0.5) + t projects here:
    u, v = 79.5 + 150 * -0.5 / 2.5, 59.5 + 150 * -0.25 / 2.5
    patch = out[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3]
    assert (patch != 30).any()
    assert (out[5:15, 140:155] == 30).all()  # far from the object nothing is drawn
    path = export_scene_glb(tmp_path / "s.glb", [det])
    scene = trimesh.load(path)
    node = [n for n in scene.graph.nodes_geometry if "table" in n][0]
    mat, _ = scene.graph[node]
    np.testing.assert_allclose(mat, CV_TO_GLTF @ det.transform, atol=1e-6)


def test_committed_demo_model_fits_the_code_and_the_size_limit():
    """models/roca_demo.safetensors has config/small_heads.yaml's architecture (stage 2 plus the
    yaw, centre, up, class and shape heads: make demo-model, models/README.md), loads with this code and stays
    < 25 MB."""
    from roca_core.checkpoint import load_checkpoint
    from roca_core.predictor import default_checkpoint
    path = default_checkpoint()
    assert path.is_file(), f"the demo model is not committed at {path}"
    assert path.stat().st_size < 25 * 1024 * 1024
    model, cfg, _extra = load_checkpoint(path)
    assert cfg == load_preset("small_heads")  # trained with the shipped preset
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in RocaModel(cfg).parameters())


def test_roca_predict_cli_depth_and_up(checkpoint, tmp_path, capsys):
    """--depth (16-bit millimetres or .npy metres, one per image) and --up reach the predictor;
    a depth map of the wrong size, type or count is refused before the model loads."""
    import cv2
    from PIL import Image

    from roca_core.cli.predict import main, read_depth

    img_path = tmp_path / "room.png"
    Image.fromarray(_image(72, 96, 5)).save(img_path)
    mm = np.full((72, 96), 2500, np.uint16)
    mm[:10] = 0  # holes
    cv2.imwrite(str(tmp_path / "d.png"), mm)
    np.testing.assert_allclose(read_depth(tmp_path / "d.png", 72, 96, 0.001)[20:], 2.5)
    np.save(tmp_path / "d.npy", np.full((72, 96), 1.25, np.float32))
    assert read_depth(tmp_path / "d.npy", 72, 96, 0.001).max() == np.float32(1.25)
    base = [str(img_path), "--checkpoint", str(checkpoint), "--device", "cpu", "--score-threshold", "0.0",
            "--no-retrieval"]
    rc = main(base + ["--out", str(tmp_path / "o"), "--depth", str(tmp_path / "d.png"), "--up", "0,-2,0"])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "o" / "room.json").read_text())
    assert record["depth"].endswith("d.png") and record["up"] == [0.0, -1.0, 0.0]
    assert record["detections"]
    for det in record["detections"]:  # upright: every object's y axis is the camera's up
        np.testing.assert_allclose(np.asarray(det["transform"])[:3, 1] / det["scale"][1], [0, -1, 0],
                                   atol=1e-4)
    cv2.imwrite(str(tmp_path / "small.png"), mm[:36, :48])
    cv2.imwrite(str(tmp_path / "eight.png"), (mm // 20).astype(np.uint8))
    for extra, message in ((["--depth", str(tmp_path / "small.png")], "only depth registered"),
                           (["--depth", str(tmp_path / "eight.png")], "8-bit"),
                           (["--depth", str(tmp_path / "d.png"), str(tmp_path / "d.npy")], "one depth map per image"),
                           (["--depth", str(tmp_path / "nope.png")], "nope.png: no such file"),
                           (["--up", "0,0,0"], "non-zero"), (["--up", "1,2"], "x,y,z"),
                           (["--camera-height", "1.2"], "needs --up"),
                           (["--up", "0,-1,0", "--camera-height", "1.2"], "drop --no-retrieval")):
        assert main(base + ["--out", str(tmp_path / "bad")] + extra) == 2, extra
        assert message in capsys.readouterr().err, extra
    with_db = [a for a in base if a != "--no-retrieval"]
    assert main(with_db + ["--out", str(tmp_path / "bad"), "--up", "0,-1,0", "--camera-height", "-1"]) == 2
    assert "positive number of metres" in capsys.readouterr().err
    rc = main(with_db + ["--out", str(tmp_path / "floor"), "--up", "0,-1,0", "--camera-height", "1.2"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "floor" / "room.json").read_text())["camera_height"] == 1.2
