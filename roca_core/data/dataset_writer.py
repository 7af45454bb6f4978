"""`roca-make-dataset`: render a synthetic ScanNet25k-like data set with ground truth.

Output folder layout (the same roles as the reference preparation's Images / Rendering /
Dataset folders, so :class:`roca_core.data.loader.RocaDataset` reads it like real data)::

    DIR/images/<scene_id>/color/<frame>.jpg        RGB with sensor noise (JPEG like ScanNet)
    DIR/images/<scene_id>/intrinsics_color.txt     4x4 intrinsics, as in ScanNet frame folders
    DIR/rendering/<scene_id>/depth/<frame>.png     uint16 depth in millimetres (0 = none)
    DIR/rendering/<scene_id>/sensor_depth/<frame>.png  only with --sensor-depth: sensor-like depth
                                                   (roca_core.data.sensor_depth), same format
    DIR/rendering/<scene_id>/instance/<frame>.png  uint8 instance ids (= alignment_id, 0 = none)
    DIR/annotations_<split>.json                   COCO records (roca_core.data.coco_format)
    DIR/cad_db/                                    CadDatabase of the models used
    DIR/cad_meshes/<class>/<id>.obj                their canonical meshes
    DIR/dataset_info.json                          seed, counts, config

Visibility rule (as the real data): masks are the *visible* pixels from the instance buffer,
so occluded and truncated objects keep their full 9-DoF pose but a partial mask; boxes are the
bounds of the visible mask; an object with fewer than ``min_visible_pixels`` (default 100)
visible pixels is not annotated and its pixels are cleared from the instance image (it still
occludes and has depth, like un-annotated furniture in ScanNet).

Every image is a pure function of (seed, image index): scene layouts are seeded by
(seed, scene index), cameras and noise by (seed, image index), so the output does not depend
on the number of workers. Sensor-like depth draws from its own generator (seed, 4, image index),
so switching it on leaves every other output unchanged.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import trimesh
from tqdm import tqdm

from roca_core.classes import CLASS_NAMES
from roca_core.config_io import to_dict
from roca_core.data import coco_format
from roca_core.data.cad_library import CadModel, embedded_cad_library_dir, load_library
from roca_core.data.config import RenderConfig, validate_render_config
from roca_core.data.renderer import DrawItem, RenderOutput, SceneRenderer
from roca_core.data.scene_sampler import CameraPose, SceneLayout, sample_camera, sample_layout
from roca_core.data.sensor_depth import simulate_sensor_depth
from roca_core.geometry.rotations import matrix_to_quat_np

DEPTH_SCALE = 1000.0  # depth PNG units per metre
SENSOR_DEPTH_DIR = "sensor_depth"  # rendering/<scene>/<this>/<frame>.png, beside depth/


@dataclass
class RenderedImage:
    """Everything about one image before it is written (used by tests and the writer)."""

    index: int
    scene_id: str
    frame: str
    rgb: np.ndarray            # (H, W, 3) uint8, noisy
    depth: np.ndarray          # (H, W) float32 metres (clean)
    instance: np.ndarray       # (H, W) uint8, only annotated objects
    noc: np.ndarray            # (H, W, 3) float32 rendered NOCs
    K: np.ndarray
    objects: list[dict]        # per annotated object: alignment_id, class, cad id, pose, mask
    sensor_depth: np.ndarray | None = None  # (H, W) float32 metres, sensor-like (0 = none)


def scene_id_for(seed: int, scene_index: int) -> str:
    return f"synth{seed:04d}_{scene_index:05d}"


class SyntheticSceneGenerator:
    """Renders images; one instance per process (it owns a GL context)."""

    def __init__(self, cfg: RenderConfig, seed: int, models: list[CadModel] | None = None,
                 sensor_depth: bool = False):
        self.cfg = cfg
        self.seed = int(seed)
        self.sensor_depth = bool(sensor_depth)  # also simulate depth-camera output per image
        if models is None:
            models = load_library(embedded_cad_library_dir(cfg.library_seed, cfg.variants_per_class))
        self.models = models
        cam = cfg.camera
        self.K = cam.intrinsics()
        self.renderer = SceneRenderer(cam.width, cam.height)
        for i, m in enumerate(models):
            self.renderer.add_mesh(f"cad{i}", m.mesh)
        self.renderer.add_mesh("unit_box", trimesh.creation.box(extents=(1.0, 1.0, 1.0)))
        self._layout_cache: dict[int, SceneLayout] = {}

    def layout(self, scene_index: int) -> SceneLayout:
        if scene_index not in self._layout_cache:
            rng = np.random.default_rng([self.seed, 1, scene_index])
            self._layout_cache = {scene_index: sample_layout(rng, self.models, self.cfg)}
        return self._layout_cache[scene_index]

    def _room_items(self, layout: SceneLayout, w2c: np.ndarray) -> list[DrawItem]:
        (sx, sz), h, t = layout.room_size, layout.wall_height, 0.05

        def slab(center, size, mat):
            m = np.eye(4)
            m[:3, :3] = np.diag(size)
            m[:3, 3] = center
            return DrawItem("unit_box", w2c @ m, mat.color, mat.color2, mat.tex_kind, mat.tex_freq,
                            tex_scale=tuple(size))

        # Box texture coords are unit-box coordinates scaled to metres via tex_scale.
        items = [slab((0, -t / 2, 0), (sx + 2 * t, t, sz + 2 * t), layout.floor),
                 slab((0, h + t / 2, 0), (sx + 2 * t, t, sz + 2 * t), layout.wall)]
        for sign in (-1, 1):
            items.append(slab((sign * (sx / 2 + t / 2), h / 2, 0), (t, h, sz + 2 * t), layout.wall))
            items.append(slab((0, h / 2, sign * (sz / 2 + t / 2)), (sx + 2 * t, h, t), layout.wall))
        return items

    def render(self, index: int) -> RenderedImage:
        cfg = self.cfg
        scene_index = index // cfg.images_per_scene
        layout = self.layout(scene_index)
        rng = np.random.default_rng([self.seed, 2, index])
        # A few camera draws until one sees an object well enough to annotate (the rng sequence
        # is fixed, so this stays deterministic); the last draw is kept either way.
        for _attempt in range(cfg.camera_attempts):
            cam = sample_camera(rng, layout, cfg)
            out = self._render_raw(layout, cam)
            counts = np.bincount(out.instance.ravel(), minlength=len(layout.objects) + 1)[1:]
            if not layout.objects or (counts >= cfg.min_visible_pixels).any():
                break
        img = self._annotate(index, scene_index, f"{index % cfg.images_per_scene:06d}", layout, cam, out, rng)
        return self._with_sensor_depth(img, out, np.random.default_rng([self.seed, 4, index]))

    def render_view(self, scene_index: int, cam: CameraPose, frame: int, noise_seed: int = 0) -> RenderedImage:
        """Render room ``scene_index`` from a given camera (camera paths, e.g. the demo sequence)."""
        layout = self.layout(scene_index)
        rng = np.random.default_rng([self.seed, 3, scene_index, noise_seed])  # one sensor for all frames
        out = self._render_raw(layout, cam)
        img = self._annotate(frame, scene_index, f"{frame:06d}", layout, cam, out, rng)
        return self._with_sensor_depth(img, out, np.random.default_rng([self.seed, 5, scene_index, noise_seed, frame]))

    def _with_sensor_depth(self, img: RenderedImage, out: RenderOutput, rng: np.random.Generator) -> RenderedImage:
        """Add the simulated depth-camera image (from the clean render) when asked for."""
        if self.sensor_depth:
            img.sensor_depth = simulate_sensor_depth(out.depth, self.K, rng, out.rgb, self.cfg.sensor_depth)
        return img

    def _render_raw(self, layout: SceneLayout, cam: CameraPose) -> RenderOutput:
        cfg = self.cfg
        w2c = cam.world_to_cam()
        items = self._room_items(layout, w2c)
        for o in layout.objects:
            items.append(DrawItem(f"cad{o.model_index}", w2c @ o.world_transform(), o.material.color,
                                  o.material.color2, o.material.tex_kind, o.material.tex_freq,
                                  tex_scale=tuple(o.scale), instance=o.instance))
        return self.renderer.render(items, self.K, cfg.camera.near, cfg.camera.far,
                                    cam.R_wc @ layout.light_dir_world, layout.ambient, layout.diffuse)

    def _annotate(self, index: int, scene_index: int, frame: str, layout: SceneLayout, cam: CameraPose,
                  out: RenderOutput, rng: np.random.Generator) -> RenderedImage:
        """Visible-instance masks and camera-frame poses of the objects seen well enough."""
        cfg = self.cfg
        w2c = cam.world_to_cam()
        instance = np.zeros(out.instance.shape, np.uint8)
        objects = []
        for o in layout.objects:
            mask = out.instance == o.instance
            if int(mask.sum()) < cfg.min_visible_pixels:
                continue
            instance[mask] = o.instance
            m_cam = w2c @ o.world_transform()
            R = cam.R_wc @ np.array([[np.cos(o.yaw), 0, np.sin(o.yaw)], [0, 1, 0], [-np.sin(o.yaw), 0, np.cos(o.yaw)]])
            objects.append({"alignment_id": o.instance, "model": o.model, "mask": mask,
                            "R": R, "t": m_cam[:3, 3].copy(), "q": matrix_to_quat_np(R), "s": o.scale.copy()})
        rgb = apply_sensor_noise(out.rgb, rng, cfg)
        return RenderedImage(index=index, scene_id=scene_id_for(self.seed, scene_index),
                             frame=frame, rgb=rgb, depth=out.depth,
                             instance=instance, noc=out.noc, K=self.K.copy(), objects=objects)

    def release(self) -> None:
        self.renderer.release()


def apply_sensor_noise(rgb: np.ndarray, rng: np.random.Generator, cfg: RenderConfig) -> np.ndarray:
    """Gaussian pixel noise and sometimes a slight blur; float (H, W, 3) -> uint8."""
    img = rgb.astype(np.float32)
    nz = cfg.noise
    if rng.random() < nz.blur_probability:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*nz.blur_sigma_range)))
    gain = rng.uniform(0.9, 1.1, 3).astype(np.float32)  # white balance
    sigma = np.float32(rng.uniform(*nz.rgb_sigma_range) * 255.0)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= sigma
    img *= gain * np.float32(255.0)
    img += noise
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


def write_image_files(img: RenderedImage, out_dir: Path, jpeg_quality: int) -> str:
    """Write RGB / depth / instance files; returns the image's file_name (relative)."""
    file_name = f"images/{img.scene_id}/color/{img.frame}.jpg"
    paths = {"color": out_dir / file_name,
             "depth": out_dir / f"rendering/{img.scene_id}/depth/{img.frame}.png",
             "instance": out_dir / f"rendering/{img.scene_id}/instance/{img.frame}.png"}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(paths["color"]), img.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    cv2.imwrite(str(paths["depth"]), depth_to_png_mm(img.depth))
    if img.sensor_depth is not None:
        sensor_path = out_dir / f"rendering/{img.scene_id}/{SENSOR_DEPTH_DIR}/{img.frame}.png"
        sensor_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sensor_path), depth_to_png_mm(img.sensor_depth))
    cv2.imwrite(str(paths["instance"]), img.instance)
    intr = out_dir / f"images/{img.scene_id}/intrinsics_color.txt"  # as in ScanNet frame folders
    if not intr.exists():
        k4 = np.eye(4)
        k4[:3, :3] = img.K
        np.savetxt(intr, k4, fmt="%.6f")
    return file_name


def depth_to_png_mm(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres -> uint16 millimetres (0 stays 0 = no depth)."""
    return np.clip(np.rint(depth_m * DEPTH_SCALE), 0, 65535).astype(np.uint16)


def image_annotations(img: RenderedImage, file_name: str) -> dict:
    """Image + annotation records of one image (ids are assigned later, in index order)."""
    h, w = img.depth.shape
    anns = []
    for o in img.objects:
        m: CadModel = o["model"]
        anns.append(coco_format.annotation_record(
            0, 0, o["mask"], CLASS_NAMES.index(m.class_name), img.scene_id, img.K, o["t"], o["q"], o["s"],
            m.symmetry.tag, m.catid_cad, m.id, o["alignment_id"]))
    return {"image": coco_format.image_record(0, file_name, h, w, img.scene_id), "annotations": anns,
            "cad_ids": sorted({o["model"].id for o in img.objects}), "index": img.index}


# ---------------------------------------------------------------------------- workers
_WORKER: dict = {}


def _worker_init(cfg: RenderConfig, seed: int, out_dir: str, single_thread: bool = False,
                 sensor_depth: bool = False) -> None:
    if single_thread:  # one process per core: keep llvmpipe and OpenCV from oversubscribing
        import os
        os.environ["LP_NUM_THREADS"] = "1"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        cv2.setNumThreads(1)
    _WORKER["gen"] = SyntheticSceneGenerator(cfg, seed, sensor_depth=sensor_depth)
    _WORKER["out"] = Path(out_dir)


def _worker_render(index: int) -> dict:
    gen: SyntheticSceneGenerator = _WORKER["gen"]
    img = gen.render(index)
    file_name = write_image_files(img, _WORKER["out"], gen.cfg.noise.jpeg_quality)
    return image_annotations(img, file_name)


def make_dataset(out_dir: str | Path, num_images: int, seed: int = 0, workers: int = 1,
                 split_val: float = 0.0, cfg: RenderConfig | None = None, progress: bool = True,
                 sensor_depth: bool = False) -> dict:
    """Render ``num_images`` images into ``out_dir``; returns a summary (counts, images/s).

    ``sensor_depth`` also writes sensor-like depth (``cfg.sensor_depth``) beside the true depth.

    Scenes (groups of ``images_per_scene`` images) are split: the last ``split_val`` fraction of
    scenes is the val split, so no scene is in both.
    """
    cfg = validate_render_config(cfg or RenderConfig())
    if num_images < 1:
        raise ValueError(f"--images must be >= 1, got {num_images}")
    if not 0.0 <= split_val < 1.0:
        raise ValueError(f"--split-val must be in [0, 1), got {split_val}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lib_dir = embedded_cad_library_dir(cfg.library_seed, cfg.variants_per_class)  # once, before workers
    t0 = time.perf_counter()
    results: list[dict] = []
    indices = list(range(num_images))
    bar = tqdm(total=num_images, desc="rendering", unit="img", disable=not progress)
    if workers == 1:
        _worker_init(cfg, seed, str(out_dir), sensor_depth=sensor_depth)
        try:
            for i in indices:
                results.append(_worker_render(i))
                bar.update()
        finally:
            _WORKER.pop("gen").release()
    else:
        ctx = mp.get_context("spawn")  # each worker opens its own GL context
        with ctx.Pool(workers, initializer=_worker_init, initargs=(cfg, seed, str(out_dir), True, sensor_depth)) as pool:
            for r in pool.imap(_worker_render, indices, chunksize=max(1, min(8, num_images // (4 * workers)))):
                results.append(r)
                bar.update()
    bar.close()
    elapsed = time.perf_counter() - t0
    results.sort(key=lambda r: r["index"])

    num_scenes = (num_images + cfg.images_per_scene - 1) // cfg.images_per_scene
    num_val = int(round(num_scenes * split_val))
    val_scenes = {scene_id_for(seed, s) for s in range(num_scenes - num_val, num_scenes)}
    splits = {"train": [r for r in results if r["image"]["scene_id"] not in val_scenes]}
    if num_val:
        splits["val"] = [r for r in results if r["image"]["scene_id"] in val_scenes]
    counts = {}
    for split, rs in splits.items():
        images, anns = [], []
        for r in rs:
            image = dict(r["image"], id=len(images))
            images.append(image)
            for a in r["annotations"]:
                anns.append(dict(a, id=len(anns), image_id=image["id"]))
        data = {"categories": coco_format.categories(), "images": images, "annotations": anns}
        (out_dir / f"annotations_{split}.json").write_text(json.dumps(data))
        counts[split] = {"images": len(images), "annotations": len(anns)}

    used = sorted({c for r in results for c in r["cad_ids"]})
    _write_used_cads(lib_dir, used, out_dir)
    info = {"seed": seed, "num_images": num_images, "workers": workers, "splits": counts,
            "seconds": round(elapsed, 3), "images_per_second": round(num_images / elapsed, 3),
            "cad_models_used": len(used), "sensor_depth": bool(sensor_depth), "config": to_dict(cfg)}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return info


def _write_used_cads(lib_dir: Path, used_ids: list[str], out_dir: Path) -> None:
    """Copy the used canonical meshes and save their CadDatabase into the data set folder."""
    from roca_core.data.cad_database import build_database_from_models

    models = {m.id: m for m in load_library(lib_dir)}
    chosen = [models[i] for i in used_ids]
    for m in chosen:
        dst = out_dir / "cad_meshes" / m.class_name / f"{m.id}.obj"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(m.mesh_path, dst)
        m.mesh_path = str(dst.resolve())
    db_dir = out_dir / "cad_db"
    if db_dir.exists():
        shutil.rmtree(db_dir)
    build_database_from_models(chosen, progress=False).save(db_dir)
