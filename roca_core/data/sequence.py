"""Synthetic camera sequences: one room seen by a camera sweeping sideways.

The demo plays such a sequence into the ROS node as if it came from a robot's camera; the
ground truth of every frame (camera-frame 9-DoF poses, CAD ids, camera poses) travels with it
so the demo can score what the node says.

On disk: ``<dir>/frames/<i:06d>.png`` (RGB) and ``<dir>/sequence.json``::

    {"width": W, "height": H, "K": 3x3, "seed": S, "scene_id": "...",
     "frames": [{"file": "frames/000000.png", "cam_to_world": 4x4, "up": camera-frame up (3,),
                 ["depth_file": "depth/000000.png",]
                 "objects": [{"class_name", "class_index", "cad_id", "t", "q", "s", "sym",
                              "alignment_id", "bbox_xyxy"}]}]}

With ``sensor_depth=True``, ``depth/<i:06d>.png`` holds the simulated depth-camera image
(:mod:`roca_core.data.sensor_depth`) registered to the frame, as 16-bit millimetres (0 = no
measurement), the way a RealSense publishes aligned depth.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from roca_core.classes import CLASS_NAMES
from roca_core.data.config import RenderConfig
from roca_core.data.dataset_writer import SyntheticSceneGenerator
from roca_core.data.scene_sampler import CameraPose, camera_rotation, sample_camera

SEQUENCE_FILE = "sequence.json"


def sweep_cameras(first: CameraPose, num_frames: int, lateral_m: float, look_distance_m: float) -> list[CameraPose]:
    """Cameras sliding sideways across ``lateral_m`` while turning to keep one point in view.

    The point looked at lies ``look_distance_m`` ahead of the first camera on its horizontal
    heading; height and pitch stay those of the first camera.
    """
    heading = np.array([np.sin(first.yaw), 0.0, np.cos(first.yaw)])
    right = np.array([np.cos(first.yaw), 0.0, -np.sin(first.yaw)])
    target = first.position + heading * look_distance_m
    cams = []
    for offset in np.linspace(-lateral_m / 2, lateral_m / 2, num_frames):
        position = first.position + right * offset
        d = target - position
        yaw = float(np.arctan2(d[0], d[2]))
        R = camera_rotation(yaw, first.pitch_down)
        cams.append(CameraPose(R_wc=R, t_wc=-R @ position, position=position, yaw=yaw, pitch_down=first.pitch_down))
    return cams


def render_sequence(out_dir: "str | Path", num_frames: int = 12, seed: int = 7, scene_index: int = 0,
                    cfg: RenderConfig | None = None, lateral_m: float = 0.8, camera_tries: int = 12,
                    sensor_depth: bool = False) -> Path:
    """Render a sweep through one synthetic room; returns the sequence folder.

    Of ``camera_tries`` sampled start cameras, the one that sees the most objects is kept,
    so the sequence is about the furniture rather than a wall.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    cfg = cfg or RenderConfig()
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    gen = SyntheticSceneGenerator(cfg, seed, sensor_depth=sensor_depth)
    if sensor_depth:
        (out / "depth").mkdir(exist_ok=True)
    try:
        layout = gen.layout(scene_index)
        rng = np.random.default_rng([seed, 4, scene_index])
        best, best_seen = None, -1
        for _ in range(camera_tries):
            cam = sample_camera(rng, layout, cfg)
            seen = len(gen.render_view(scene_index, cam, 0).objects)
            if seen > best_seen:
                best, best_seen = cam, seen
        look = float(np.clip(np.mean(cfg.scene.distance_range_m), 1.0, 4.0))
        frames = []
        for i, cam in enumerate(sweep_cameras(best, num_frames, lateral_m, look)):
            img = gen.render_view(scene_index, cam, i)
            name = f"frames/{i:06d}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(img.rgb, cv2.COLOR_RGB2BGR))
            cam_to_world = np.linalg.inv(cam.world_to_cam())
            objects = []
            for o in img.objects:
                ys, xs = np.nonzero(o["mask"])
                objects.append({
                    "class_name": o["model"].class_name,
                    "class_index": CLASS_NAMES.index(o["model"].class_name),
                    "cad_id": o["model"].id,
                    "t": o["t"].tolist(), "q": o["q"].tolist(), "s": o["s"].tolist(),
                    "sym": o["model"].symmetry.tag,
                    "alignment_id": int(o["alignment_id"]),
                    "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                })
            frame = {"file": name, "cam_to_world": cam_to_world.tolist(),
                     "up": (cam.R_wc @ np.array([0.0, 1.0, 0.0])).tolist(), "objects": objects}
            if sensor_depth:
                frame["depth_file"] = f"depth/{i:06d}.png"
                mm = np.clip(np.round(np.nan_to_num(img.sensor_depth) * 1000.0), 0, 65535).astype(np.uint16)
                cv2.imwrite(str(out / frame["depth_file"]), mm)
            frames.append(frame)
        info = {"width": cfg.camera.width, "height": cfg.camera.height, "K": gen.K.tolist(),
                "seed": seed, "scene_id": img.scene_id, "frames": frames}
        (out / SEQUENCE_FILE).write_text(json.dumps(info, indent=1))
    finally:
        gen.release()
    return out


def load_sequence(seq_dir: "str | Path") -> dict:
    """Read ``sequence.json`` with a clear error when the folder is not a sequence."""
    path = Path(seq_dir) / SEQUENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{seq_dir} is not a roca sequence (no {SEQUENCE_FILE})")
    info = json.loads(path.read_text())
    info["K"] = np.asarray(info["K"], dtype=np.float64)
    return info
