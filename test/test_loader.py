"""RocaDataset on the synthetic output and on a tiny fixture in the real ScanNet25k/Scan2CAD format."""
from __future__ import annotations

import hashlib
import json
import pickle

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from roca_core.classes import CLASS_NAMES, Symmetry
from roca_core.data.config import RenderConfig
from roca_core.data.dataset_writer import SyntheticSceneGenerator, make_dataset
from roca_core.data.loader import RocaDataset, collate_fn, color_jitter

torch.set_num_threads(2)
SCENE, FRAME = "scene0007_00", "000200"


@pytest.fixture(scope="module")
def synth(roca_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    make_dataset(out, 6, seed=11, workers=1, cfg=RenderConfig(images_per_scene=3), progress=False)
    return out


@pytest.fixture(scope="module")
def real(roca_home, tmp_path_factory):
    """A reference-format ``Data/`` folder built from one rendered view.

    Differences from the synthetic writer that the loader must handle: Dataset/ and
    Images/tasks/scannet_frames_25k/ and Rendering/ folders, 4x4 intrinsics, no segmentation
    (train split), a non-CAD ScanNet label without pose, shuffled category ids, ShapeNet-like
    ``id_cad`` hashes, CAD grids in a pickle of (z, y, x) indices, and an image with no objects.
    """
    root = tmp_path_factory.mktemp("Data")
    gen = SyntheticSceneGenerator(RenderConfig(), seed=21)
    try:
        img = next(im for im in (gen.render(i) for i in range(40)) if len(im.objects) >= 2)
        models = gen.models
    finally:
        gen.release()
    color = root / "Images" / "tasks" / "scannet_frames_25k" / SCENE / "color"
    color.mkdir(parents=True)
    cv2.imwrite(str(color / f"{FRAME}.jpg"), img.rgb[..., ::-1])
    cv2.imwrite(str(color / "000300.jpg"), img.rgb[..., ::-1])
    k4 = np.eye(4)
    k4[:3, :3] = img.K
    np.savetxt(color.parent / "intrinsics_color.txt", k4)
    for kind, arr in (("depth", np.rint(img.depth * 1000).astype(np.uint16)), ("instance", img.instance)):
        d = root / "Rendering" / SCENE / kind
        d.mkdir(parents=True)
        cv2.imwrite(str(d / f"{FRAME}.png"), arr)
        cv2.imwrite(str(d / "000300.png"), np.zeros_like(arr))
    cat_order = list(reversed(CLASS_NAMES))  # ids deliberately not the roca class indices
    categories = [{"name": n, "id": i} for i, n in enumerate(cat_order)]
    anns, grids, hashes = [], {}, {}
    for o in img.objects:
        m = o["model"]
        hashes[m.id] = hashlib.md5(m.id.encode()).hexdigest()  # ShapeNet-like id
        ys, xs = np.nonzero(o["mask"])
        anns.append({"id": len(anns), "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
                     "area": float(o["mask"].sum()), "iscrowd": 0, "image_id": 0,
                     "category_id": cat_order.index(m.class_name), "scene_id": SCENE, "is_cad": True,
                     "intrinsics": k4.tolist(), "duplicate": False, "alignment_id": int(o["alignment_id"]),
                     "q": o["q"].tolist(), "s": o["s"].tolist(), "t": o["t"].tolist(), "sym": m.symmetry.tag,
                     "model": {"scene_id": SCENE, "catid_cad": m.catid_cad, "id_cad": hashes[m.id],
                               "idx": int(o["alignment_id"])}})
    anns.append({"id": len(anns), "bbox": [0, 0, 5, 5], "area": 25.0, "iscrowd": 0, "image_id": 0,
                 "category_id": cat_order.index("chair"), "scene_id": SCENE, "is_cad": False,
                 "intrinsics": k4.tolist(), "duplicate": False, "alignment_id": 99})
    from roca_core.data.cad_database import build_database_from_models
    db = build_database_from_models(models, progress=False)
    for cid, h in hashes.items():
        ixyz = np.argwhere(db.voxels[db.index_of(cid)])
        catid = next(m.catid_cad for m in models if m.id == cid)
        grids[(catid, h)] = ixyz[:, ::-1].astype(np.int32)  # the reference stores (z, y, x)
    # one more model of each used class so negatives can differ
    for m in models:
        if m.id not in hashes and any(mm.class_name == m.class_name for mm in models if mm.id in hashes):
            grids[(m.catid_cad, "neg_" + m.id)] = np.argwhere(db.voxels[db.index_of(m.id)])[:, ::-1]
    images = [{"id": 0, "height": 360, "width": 480, "scene_id": SCENE, "duplicate": False,
               "file_name": f"tasks/scannet_frames_25k/{SCENE}/color/{FRAME}.jpg"},
              {"id": 1, "height": 360, "width": 480, "scene_id": SCENE, "duplicate": False,
               "file_name": f"tasks/scannet_frames_25k/{SCENE}/color/000300.jpg"}]
    (root / "Dataset").mkdir()
    (root / "Dataset" / "scan2cad_instances_train.json").write_text(
        json.dumps({"categories": categories, "images": images, "annotations": anns}))
    with open(root / "Dataset" / "train_grids_32.pkl", "wb") as f:
        pickle.dump(grids, f)
    return root, img, db, hashes


def _check_sample(image, t, n_expected=None):
    h, w = image.shape[1:]
    n = len(t["labels"])
    if n_expected is not None:
        assert n == n_expected
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    shapes = {"boxes": (n, 4), "masks": (n, h, w), "depth": (h, w), "K": (3, 3), "rotations": (n, 3, 3),
              "quaternions": (n, 4), "translations": (n, 3), "scales": (n, 3), "noc": (3, h, w),
              "cad_voxels": (n, 32, 32, 32), "neg_cad_voxels": (n, 32, 32, 32), "symmetries": (n,)}
    for k, s in shapes.items():
        assert tuple(t[k].shape) == s, k
    assert t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
    assert len(t["cad_ids"]) == n
    for j in range(n):
        m = t["masks"][j].bool()
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert t["boxes"][j].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert torch.all(t["noc"][:, ~t["masks"].bool().any(0)] == 0)
        assert torch.allclose(t["rotations"][j] @ t["rotations"][j].T, torch.eye(3), atol=1e-5)


def test_synthetic_samples_follow_the_contract(synth):
    ds = RocaDataset(synth, "train")
    assert len(ds) == 6
    for i in range(len(ds)):
        image, t = ds[i]
        _check_sample(image, t)
        assert t["image_id"] == i and t["scene_id"].startswith("synth0011_")
        for j in range(len(t["labels"])):
            assert t["cad_voxels"][j].sum() > 0
            assert not torch.equal(t["cad_voxels"][j], t["neg_cad_voxels"][j]) or \
                sum(1 for c in ds._class_pool[int(t["labels"][j]) - 1]) == 1


def test_dataset_summaries(synth):
    ds = RocaDataset(synth, "train")
    counts = ds.class_counts()
    labels = torch.cat([ds[i][1]["labels"] for i in range(len(ds))])
    assert counts.tolist() == torch.bincount(labels - 1, minlength=len(CLASS_NAMES)).tolist()
    assert ds.cad_database is not None and set(ds.cad_database.ids) >= {
        c for i in range(len(ds)) for c in (a["model"]["id_cad"] for a in ds.annotations(i))}


def test_real_format_fixture_is_read_like_the_reference(real):
    root, img, db, hashes = real
    ds = RocaDataset(root, "train")
    assert len(ds) == 2
    assert ds.cad_database is None  # grids came from the reference pickle
    assert ds.class_counts().sum() == len(img.objects)
    image, t = ds[0]
    _check_sample(image, t, n_expected=len(img.objects))  # the non-CAD label is skipped
    expected = {hashes[o["model"].id]: o for o in img.objects}
    inverse = {v: k for k, v in hashes.items()}
    for j, cid in enumerate(t["cad_ids"]):
        o = expected[cid]
        assert CLASS_NAMES[int(t["labels"][j]) - 1] == o["model"].class_name  # mapped by name
        assert torch.equal(t["masks"][j].bool(), torch.from_numpy(o["mask"]))
        assert np.allclose(t["translations"][j].numpy(), o["t"], atol=1e-5)
        assert Symmetry(int(t["symmetries"][j])) == o["model"].symmetry
        # the pickle's (z, y, x) indices come back in roca's grid[ix, iy, iz] order
        assert np.array_equal(t["cad_voxels"][j].numpy().astype(bool), db.voxels[db.index_of(inverse[cid])])
        lo, hi = o["model"].mesh.bounds
        noc = t["noc"].permute(1, 2, 0)[t["masks"][j].bool()].numpy()
        tol = 0.02 / o["s"].min()
        assert np.all(noc >= lo - tol) and np.all(noc <= hi + tol)
    assert np.allclose(t["K"].numpy(), img.K, atol=1e-4)
    assert np.allclose(t["depth"].numpy(), np.rint(img.depth * 1000) / 1000, atol=1e-6)  # mm PNG -> metres
    image, t = ds[1]  # no objects: empty tensors with the right trailing shapes, K from the scene file
    _check_sample(image, t, n_expected=0)
    assert np.allclose(t["K"].numpy(), img.K, atol=1e-4)
    assert float(t["depth"].sum()) == 0.0  # its rendering has no CAD in view


def test_resizing_scales_intrinsics_and_keeps_targets_consistent(real):
    root, img, _, hashes = real
    ds = RocaDataset(root, "train", image_size=(180, 240))
    image, t = ds[0]
    assert tuple(image.shape) == (3, 180, 240)
    _check_sample(image, t)
    assert t["K"][0, 0] == pytest.approx(img.K[0, 0] / 2, rel=1e-5)
    expected = {hashes[o["model"].id]: o for o in img.objects}
    for j, cid in enumerate(t["cad_ids"]):
        o = expected[cid]
        lo, hi = o["model"].mesh.bounds
        noc = t["noc"].permute(1, 2, 0)[t["masks"][j].bool()].numpy()
        tol = 0.03 / o["s"].min()  # nearest-neighbour depth shifts points by up to half a source pixel
        assert np.all(noc >= lo - tol) and np.all(noc <= hi + tol)
        assert torch.all(t["depth"][t["masks"][j].bool()] > 0)


def test_colour_jitter_changes_only_the_image(synth):
    plain = RocaDataset(synth, "train")
    aug = RocaDataset(synth, "train", augment=True)
    torch.manual_seed(0)
    img_a, t_a = aug[1]
    torch.manual_seed(0)
    img_b, _ = aug[1]
    img_p, t_p = plain[1]
    assert torch.equal(img_a, img_b)
    assert not torch.allclose(img_a, img_p)
    assert 0 <= img_a.min() and img_a.max() <= 1
    assert torch.equal(t_a["noc"], t_p["noc"]) and torch.equal(t_a["boxes"], t_p["boxes"])
    # factors stay within [0.8, 1.25]: the mean brightness cannot move by more than that
    ratio = float(img_a.mean() / img_p.mean())
    assert 0.8 ** 2 * 0.9 < ratio < 1.25 ** 2 * 1.1
    x = torch.full((3, 4, 4), 0.5)
    torch.manual_seed(1)
    y = color_jitter(x)
    assert torch.all((y >= 0.5 * 0.8 - 1e-6) & (y <= 0.5 * 1.25 + 1e-6))


def test_collate_and_dataloader(synth):
    ds = RocaDataset(synth, "train", image_size=(120, 160))
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_fn)))
    assert len(images) == len(targets) == 3
    assert all(tuple(im.shape) == (3, 120, 160) for im in images)
    assert collate_fn([]) == ([], [])


def test_clear_errors_for_missing_data(tmp_path, synth):
    from roca_core.data.loader import DatasetError
    with pytest.raises(DatasetError, match="not found"):
        RocaDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no annotations for split 'test'"):
        RocaDataset(synth, "test")
    with pytest.raises(ValueError, match="image_size"):
        RocaDataset(synth, "train", image_size=(0, 10))
