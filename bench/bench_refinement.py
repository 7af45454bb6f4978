"""Depth refinement of CAD poses (roca_core.geometry.depth_refinement): ms per object for
batches of objects, plus what it did to 10 cm / 10 deg / 10 % perturbed poses. Prints one table.

    python bench/bench_refinement.py [--threads 2] [--batches 1,8,32] [--repeats 15]

``--threads`` is torch's setting for the process; each batch size is measured with the fit's
own default (``RefinementConfig.threads`` = 1 intra-op thread during the call) and with all
``--threads`` threads.

Objects are the embedded CAD library's models (all symmetry kinds, so a realistic mix of yaw
hypotheses: 4 for asymmetric models, 2, 1 or 1 for 2-fold, 4-fold and round ones), upright at
1.5 to 4.5 m, seen 25 deg from above; their depth points are the visible surface (z-buffered
dense samples) with the D435-like noise of roca_core.data.sensor_depth. The time is that of
``refine_poses`` alone (depth points and CAD surfaces ready): wall-clock median and best per
object, and the process CPU time (all threads; less sensitive to other load on the machine,
whose load average the header prints). Building a CAD's surface (first use of a model, cached
afterwards) is reported separately.

``--rooms N`` (default 20) also renders N synthetic room images with sensor depth
(``roca_core.data.sensor_depth``) and refines their objects' ground-truth poses perturbed two
ways, against the sensor depth under each object's visible mask: 10 cm / 10 deg / 10 %, and
ROCA-like (any yaw, 5 deg tilt, 20 cm, 15 % log-normal scale); it prints the accuracy table.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roca_core.classes import Symmetry  # noqa: E402
from roca_core.data.cad_library import build_library  # noqa: E402
from roca_core.data.sensor_depth import SensorDepthConfig, depth_noise_sigma_m  # noqa: E402
from roca_core.geometry.depth_refinement import (RefinementConfig, cad_surface_from_mesh,  # noqa: E402
                                                 masked_depth_points, refine_poses)
from roca_core.geometry.rotations import rotation_about_y_np, rotation_angle_deg_np  # noqa: E402

K = np.array([[435.0, 0, 239.5], [0, 435.0, 179.5], [0, 0, 1]])
HW = (360, 480)


def scene_object(model, surface_points: np.ndarray, rng: np.random.Generator):
    """True pose, perturbed pose and noisy visible depth points of one object."""
    pitch = math.radians(25)
    tilt = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])
    R = tilt @ np.diag([1.0, -1.0, -1.0]) @ rotation_about_y_np(rng.uniform(0, 2 * math.pi))
    t = np.array([rng.uniform(-0.4, 0.4), rng.uniform(0.0, 0.4), rng.uniform(1.5, 4.5)])
    s = np.asarray(model.default_scale) * rng.uniform(0.9, 1.1, 3)
    x = (surface_points * s) @ R.T + t
    u = np.floor(x[:, 0] / x[:, 2] * K[0, 0] + K[0, 2] + 0.5).astype(int)
    v = np.floor(x[:, 1] / x[:, 2] * K[1, 1] + K[1, 2] + 0.5).astype(int)
    inside = (u >= 0) & (u < HW[1]) & (v >= 0) & (v < HW[0])
    zbuf = np.full(HW, np.inf)
    np.minimum.at(zbuf, (v[inside], u[inside]), x[inside, 2])
    depth = np.where(np.isfinite(zbuf), zbuf, 0.0)
    depth = np.where(depth > 0, depth + rng.standard_normal(HW) * depth_noise_sigma_m(depth, SensorDepthConfig()), 0)
    points = masked_depth_points(depth, K, depth > 0)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    w = math.radians(10) * axis
    skew = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    dR = np.eye(3) + math.sin(math.radians(10)) / math.radians(10) * skew + \
        (1 - math.cos(math.radians(10))) / math.radians(10) ** 2 * skew @ skew
    shift = rng.normal(size=3)
    start = (dR @ R, t + 0.1 * shift / np.linalg.norm(shift), s * (1 + 0.1 * rng.choice([-1, 1], 3)))
    return (R, t, s), start, points


def perturbed(R, t, s, rng: np.random.Generator, angle_deg: float, shift_m: float, log_scale_sigma: float,
              any_yaw: bool = False):
    """A pose off by ``angle_deg`` about a random axis (after any yaw), ``shift_m`` in a random
    direction and a log-normal scale change per axis."""
    if any_yaw:
        R = R @ rotation_about_y_np(rng.uniform(0, 2 * math.pi))
    axis = rng.normal(size=3)
    w = math.radians(angle_deg) * axis / np.linalg.norm(axis)
    theta = max(math.radians(angle_deg), 1e-12)
    skew = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    dR = np.eye(3) + math.sin(theta) / theta * skew + (1 - math.cos(theta)) / theta ** 2 * skew @ skew
    shift = rng.normal(size=3)
    return dR @ R, t + shift_m * shift / np.linalg.norm(shift), s * np.exp(rng.normal(0.0, log_scale_sigma, 3))


def rendered_rooms_table(models, surfaces: dict, rooms: int, seed: int) -> list[str]:
    """Accuracy of refined poses against the sensor depth of rendered rooms (see docstring)."""
    from roca_core.data.config import RenderConfig
    from roca_core.data.dataset_writer import SyntheticSceneGenerator

    gen = SyntheticSceneGenerator(RenderConfig(), seed, models=models, sensor_depth=True)
    try:
        images = [gen.render(i) for i in range(rooms)]
    finally:
        gen.release()
    lines = []
    for name, kwargs in (("10 cm / 10 deg / 10 %", dict(angle_deg=10, shift_m=0.1, log_scale_sigma=0.1)),
                         ("ROCA-like: any yaw, 5 deg tilt, 20 cm, 15 %",
                          dict(angle_deg=5, shift_m=0.2, log_scale_sigma=0.15, any_yaw=True))):
        rng = np.random.default_rng(seed)
        before, after, accepted, times = [], [], [], []
        for img in images:
            if not img.objects:
                continue
            truth = [(o["R"], o["t"], o["s"]) for o in img.objects]
            start = [perturbed(*pose, rng, **kwargs) for pose in truth]
            points = [masked_depth_points(img.sensor_depth, img.K, o["mask"]) for o in img.objects]
            t0 = time.perf_counter()
            res = refine_poses(*(np.stack(x) for x in zip(*start)), [surfaces[o["model"].id] for o in img.objects],
                               points)
            times.append((time.perf_counter() - t0) / len(img.objects))
            for k, o in enumerate(img.objects):
                before.append(errors(*start[k], truth[k], o["model"].symmetry))
                after.append(errors(res.rotations[k], res.translations[k], res.scales[k], truth[k],
                                    o["model"].symmetry))
                accepted.append(bool(res.accepted[k]))
        b, a = np.array(before), np.array(after)
        lines.append((name, f"{len(a)}", "{:.1f} / {:.1f} / {:.1f}".format(*np.median(b, 0)),
                      "{:.1f} / {:.1f} / {:.1f}".format(*np.median(a, 0)), f"{np.mean((b <= 20).all(1)) * 100:.0f}",
                      f"{np.mean((a <= 20).all(1)) * 100:.0f}", f"{np.mean(accepted) * 100:.0f}",
                      f"{np.mean(times) * 1000:.1f}"))
    head = ("start", "objects", "median deg / cm / % before", "after", "20/20/20 % before", "after",
            "accepted %", "ms/object")
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in lines]


def errors(R, t, s, truth, symmetry) -> tuple[float, float, float]:
    """Rotation (up to the symmetry; for round models the tilt of the up axis), translation
    (cm) and scale (|mean ratio - 1|, %) errors."""
    if symmetry == Symmetry.ROTATE_UP_INF:
        rot = math.degrees(math.acos(float(np.clip(R[:, 1] @ truth[0][:, 1], -1.0, 1.0))))
    else:
        n = symmetry.num_rotations
        rot = min(rotation_angle_deg_np(R, truth[0] @ rotation_about_y_np(2 * math.pi * j / n)) for j in range(n))
    return rot, 100 * float(np.linalg.norm(t - truth[1])), 100 * abs(float(np.mean(s / truth[2])) - 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--batches", default="1,8,32", help="objects per refine_poses call")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per batch size (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rooms", type=int, default=20, help="rendered room images for the accuracy table (0: none)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = RefinementConfig()
    rng = np.random.default_rng(args.seed)
    models = build_library(0, 6)
    t0 = time.perf_counter()
    surfaces = [cad_surface_from_mesh(m.mesh, m.symmetry) for m in models]
    build_ms = 1000 * (time.perf_counter() - t0) / len(models)
    dense = [cad_surface_from_mesh(m.mesh, num_points=30000, grid_size=2, num_candidates=1, seed=1).points.numpy()
             for m in models]

    rows: list[tuple[str, ...]] = []
    batches = [int(b) for b in args.batches.split(",") if b]
    all_before, all_after, accepted = [], [], []
    for batch in batches:
        picks = rng.choice(len(models), size=batch, replace=batch > len(models))
        scene = [scene_object(models[i], dense[i], rng) for i in picks]
        start = [np.stack(x) for x in zip(*(o[1] for o in scene))]
        sf, pts = [surfaces[i] for i in picks], [o[2] for o in scene]
        hyp = sum(min(cfg.yaw_hypotheses, 1 if models[i].symmetry.num_rotations == 36 else
                      max(1, cfg.yaw_hypotheses // models[i].symmetry.num_rotations)) for i in picks)
        for threads in sorted({cfg.threads or args.threads, args.threads}):
            run_cfg = dataclasses.replace(cfg, threads=threads)
            res = refine_poses(*start, sf, pts, run_cfg)  # warm-up (also builds the surface tables)
            samples, cpu = [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                res = refine_poses(*start, sf, pts, run_cfg)
                samples.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            ms = 1000 * statistics.median(samples)
            rows.append((f"{batch}", f"{threads}", f"{ms:.1f}", f"{ms / batch:.2f}",
                         f"{min(samples) * 1000 / batch:.2f}", f"{1000 * statistics.median(cpu) / batch:.2f}",
                         f"{hyp / batch:.1f}", f"{np.mean([len(x) for x in pts]):.0f}",
                         f"{res.accepted.mean() * 100:.0f}"))
        for k, i in enumerate(picks):
            all_before.append(errors(*(x[k] for x in start), scene[k][0], models[i].symmetry))
            all_after.append(errors(res.rotations[k], res.translations[k], res.scales[k], scene[k][0],
                                    models[i].symmetry))
            accepted.append(bool(res.accepted[k]))

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# bench_refinement: torch x{torch.get_num_threads()} threads ({os.cpu_count()} cores, load average "
          f"{load}), torch {torch.__version__}; "
          f"{cfg.hypothesis_iterations} + {cfg.iterations} iterations, <= {cfg.max_depth_points} depth points "
          f"per object ({cfg.hypothesis_points} for the yaw hypotheses)")
    head = ("objects", "fit threads", "ms/call", "ms/object", "best ms/object", "CPU ms/object", "yaw hypotheses/object",
            "depth points/object",
            "accepted %")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))
    before, after = np.array(all_before), np.array(all_after)
    print(f"CAD surface build (first use of a model): {build_ms:.0f} ms per model")
    print(f"over all {len(after)} objects (10 cm / 10 deg / 10 % perturbed, noisy depth), median error "
          f"before -> after: rotation {np.median(before[:, 0]):.1f} -> {np.median(after[:, 0]):.1f} deg, "
          f"translation {np.median(before[:, 1]):.1f} -> {np.median(after[:, 1]):.1f} cm, "
          f"scale {np.median(before[:, 2]):.1f} -> {np.median(after[:, 2]):.1f} %; "
          f"within 20 cm / 20 deg / 20 %: "
          f"{np.mean((after[:, 0] <= 20) & (after[:, 1] <= 20) & (after[:, 2] <= 20)) * 100:.0f} %, "
          f"within 5 cm / 5 deg / 5 %: "
          f"{np.mean((after[:, 0] <= 5) & (after[:, 1] <= 5) & (after[:, 2] <= 5)) * 100:.0f} % "
          f"(before: {np.mean((before[:, 0] <= 5) & (before[:, 1] <= 5) & (before[:, 2] <= 5)) * 100:.0f} %); "
          f"accepted {np.mean(accepted) * 100:.0f} %")
    if args.rooms > 0:
        print(f"\n# {args.rooms} rendered rooms (seed 11), sensor depth under each visible mask; errors: rotation "
              f"(up to symmetry; tilt for round models), translation, |mean scale ratio - 1|")
        by_id = dict(zip((m.id for m in models), surfaces))
        for line in rendered_rooms_table(models, by_id, args.rooms, 11):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
