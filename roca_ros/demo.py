"""The roca demo, the README's main command (``make demo``).

Three processes, as on a robot: the node (``roca_node``, started as users start it), a camera
player (:mod:`roca_ros.demo_player`) publishing a synthetic sequence over ROS topics at a given
rate, and this recorder, which listens to ``/roca/objects`` (and the debug image), then writes

- ``overlays/<frame>.png``: the node's debug image (masks, boxes, projected CAD outlines),
- ``scenes/<frame>.glb``: the aligned CAD models of each frame, in the camera frame,
- ``objects.json``: every object message, with its latency,
- ``summary.md`` / ``summary.json``: accuracy against the sequence's ground truth
  (Scan2CAD thresholds: 20 cm, 20 degrees, 20 % scale; per frame and merged over the scene),

and prints a table of frames, objects, latency and accuracy.

``--depth`` renders the sweep with simulated depth-camera output and plays it as a RealSense
does with ``align_depth.enable:=true`` (16UC1 millimetres on ``aligned_depth_to_color/image_raw``,
registered to the colour image): the node pairs it with each frame (``depth_topic``) and refines
the poses against it. ``--upright`` publishes gravity on ``imu`` (an accelerometer at rest, in
the camera's frame) and the node uses it as the upright prior (``imu_topic``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402


@dataclass
class Recording:
    """What the recorder heard, keyed by the header stamp of the input image."""

    objects: dict[int, Any] = field(default_factory=dict)      # stamp_ns -> ObjectAlignmentArray
    received_wall: dict[int, float] = field(default_factory=dict)
    debug_images: dict[int, np.ndarray] = field(default_factory=dict)
    database: Any = None


def message_objects(msg: Any) -> list[SimpleNamespace]:
    """ObjectAlignmentArray -> detection-like records for roca_core.visualize and the metric."""
    from roca_core.geometry.rotations import quat_to_matrix_np
    from roca_core.predictor import compose_transform

    out = []
    for o in msg.objects:
        q = np.array([o.pose.orientation.w, o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z])
        t = np.array([o.pose.position.x, o.pose.position.y, o.pose.position.z])
        s = np.array([o.scale.x, o.scale.y, o.scale.z])
        R = quat_to_matrix_np(q)
        mesh_path = o.mesh_uri[len("file://"):] if o.mesh_uri.startswith("file://") else None
        out.append(SimpleNamespace(
            class_name=o.class_name, class_index=int(o.class_index), score=float(o.score),
            box=np.array([o.x_min, o.y_min, o.x_max, o.y_max]), mask=np.zeros((0, 0), bool),
            rotation=R, quaternion=q, translation=t, scale=s, transform=compose_transform(R, t, s),
            cad_id=o.cad_id or None, mesh_path=mesh_path, retrieval_distance=float(o.retrieval_distance),
            valid=bool(o.valid)))
    return out


def record_to_json(obj: SimpleNamespace) -> dict:
    return {"class_name": obj.class_name, "class_index": obj.class_index, "score": obj.score,
            "box_xyxy": obj.box.tolist(), "t": obj.translation.tolist(), "q_wxyz": obj.quaternion.tolist(),
            "s": obj.scale.tolist(), "cad_id": obj.cad_id, "mesh_path": obj.mesh_path,
            "retrieval_distance": obj.retrieval_distance, "valid": obj.valid}


def score_sequence(seq: dict, frames: list[dict], score_threshold: float) -> dict:
    """Alignment accuracy per frame and over the whole sweep (scene mode, world frame)."""
    from roca_core.classes import Symmetry
    from roca_core.evaluation import AlignmentThresholds, GtObject, PredObject, evaluate_alignment

    scene = seq.get("scene_id", "demo")
    gts, preds, poses, per_frame = [], [], {}, []
    thresholds = AlignmentThresholds(score=score_threshold)
    for i, (gt_frame, rec) in enumerate(zip(seq["frames"], frames)):
        poses[(scene, i)] = np.asarray(gt_frame["cam_to_world"])
        f_gts = [GtObject(scene, i, g["class_name"], np.array(g["t"]), np.array(g["q"]), np.array(g["s"]),
                          Symmetry.from_tag(g["sym"]), g["cad_id"], object_id=str(g["alignment_id"]))
                 for g in gt_frame["objects"]]
        f_preds = [PredObject(scene, i, p["class_name"], p["score"], np.array(p["t"]), np.array(p["q_wxyz"]),
                              np.array(p["s"]), p["cad_id"]) for p in rec.get("objects", [])]
        gts += f_gts
        preds += f_preds
        if f_gts:
            r = evaluate_alignment(f_preds, f_gts, mode="frame", thresholds=thresholds)
            per_frame.append({"correct": int(sum(r.num_correct.values())), "gt": len(f_gts),
                              "correct_retrieval": int(sum(r.retrieval_aware.num_correct.values()))})
        else:
            per_frame.append({"correct": 0, "gt": 0, "correct_retrieval": 0})
    frame_mode = evaluate_alignment(preds, gts, mode="frame", thresholds=thresholds)
    scene_mode = evaluate_alignment(preds, gts, mode="scene", poses=poses, thresholds=thresholds)
    return {"per_frame": per_frame, "frame_mode": frame_mode.to_dict(), "scene_mode": scene_mode.to_dict()}


def wait_for(predicate, timeout: float, spin, proc: "subprocess.Popen | None" = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spin(0.05)
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
    return False


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: "list[str] | None" = None) -> int:  # noqa: C901 - a linear script
    parser = argparse.ArgumentParser(prog="roca-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--frames", type=int, default=16, help="frames in the camera sweep (default: 16)")
    parser.add_argument("--rate", type=float, default=2.0, help="camera frames per second (default: 2)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic room (default: 7)")
    parser.add_argument("--checkpoint", default="", help="model checkpoint (default: the committed demo model)")
    parser.add_argument("--cad-db", default="", help="CAD database (default: the embedded CAD library)")
    parser.add_argument("--device", default="cpu", help="device of the node (default: cpu)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="detection score threshold")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of the demo's processes (default: a random free-ish id 100-200)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the node to start")
    parser.add_argument("--depth", action="store_true",
                        help="play simulated registered depth (16UC1 mm) too; the node uses it (depth_topic)")
    parser.add_argument("--upright", action="store_true",
                        help="play gravity as sensor_msgs/Imu; the node uses it as the upright prior (imu_topic)")
    parser.add_argument("--floor", action="store_true",
                        help="also give the node the camera's height above the floor (camera_height, the "
                             "ground-plane prior); implies --upright")
    args = parser.parse_args(argv)
    args.upright = args.upright or args.floor
    if args.frames < 1 or args.rate <= 0:
        parser.error("--frames must be >= 1 and --rate > 0")

    from roca_core.checkpoint import CheckpointError
    from roca_core.predictor import default_checkpoint

    checkpoint = args.checkpoint
    if not checkpoint:
        try:
            checkpoint = str(default_checkpoint())
        except CheckpointError as exc:
            print(f"roca-demo: the demo is not built yet: {exc}")
            return 0
    out = Path(args.out).resolve()
    for sub in ("overlays", "scenes"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # The demo's processes share one ROS domain of their own (discovery stays on localhost).
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               ROS_DOMAIN_ID=str(args.domain_id if args.domain_id is not None else random.randint(100, 200)))
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    if args.depth:
        # Colour (0.5 MB) and depth (0.35 MB) published back to back overflow Fast DDS's default 512 KB
        # shared-memory segment and get lost (README, "Large images on one machine"): the profile the
        # README recommends for cameras, in every demo process.
        from roca_core.paths import share_dir
        profile = share_dir() / "config" / "fastdds_large_images.xml"
        if profile.is_file():
            env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = env["FASTDDS_DEFAULT_PROFILES_FILE"]

    t0 = time.monotonic()
    print(f"[demo] rendering a {args.frames}-frame camera sweep (seed {args.seed}) ...", flush=True)
    from roca_core.data.sequence import load_sequence, render_sequence

    seq_dir = render_sequence(out / "sequence", num_frames=args.frames, seed=args.seed, sensor_depth=args.depth)
    seq = load_sequence(seq_dir)

    bin_dir = Path(sys.executable).parent
    node_exe = bin_dir / "roca_node"
    node_cmd = ([str(node_exe)] if node_exe.exists() else [sys.executable, "-m", "roca_ros.node"]) + [
        "--ros-args", "-p", f"checkpoint:={checkpoint}", "-p", f"device:={args.device}",
        "-p", f"score_threshold:={args.score_threshold}", "-p", "stats_period:=0.0"]
    if args.cad_db:
        node_cmd += ["-p", f"cad_database:={Path(args.cad_db).resolve()}"]
    if args.depth:
        node_cmd += ["-p", "depth_topic:=aligned_depth_to_color/image_raw"]
    if args.upright:
        node_cmd += ["-p", "imu_topic:=imu"]
    if args.floor:  # the sweep keeps its first camera's height; the floor is the world's y = 0
        args.camera_height = float(seq["frames"][0]["cam_to_world"][1][3])
        node_cmd += ["-p", f"camera_height:={args.camera_height:.4f}"]
    node_log = out / "node.log"
    print(f"[demo] starting the node: {' '.join(node_cmd)}", flush=True)
    node_proc = subprocess.Popen(node_cmd, env=env, stdout=open(node_log, "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
    player_proc = None

    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image

    from roca_msgs.msg import CadDatabaseInfo, ObjectAlignmentArray
    from roca_ros.image_conversion import image_to_rgb
    from roca_ros.time_sync import stamp_to_ns

    rclpy.init()
    rec_node = Node("roca_demo_recorder")
    rec = Recording()

    def on_objects(msg: ObjectAlignmentArray) -> None:
        key = stamp_to_ns(msg.header.stamp)
        rec.objects[key] = msg
        rec.received_wall[key] = time.time()

    def on_debug(msg: Image) -> None:
        rec.debug_images[stamp_to_ns(msg.header.stamp)] = image_to_rgb(msg)

    def on_db(msg: CadDatabaseInfo) -> None:
        rec.database = msg

    reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    rec_node.create_subscription(ObjectAlignmentArray, "/roca/objects", on_objects, reliable)
    rec_node.create_subscription(Image, "/roca/debug_image", on_debug, QoSProfile(depth=10))
    rec_node.create_subscription(CadDatabaseInfo, "/roca/cad_database", on_db, latched)

    def spin(timeout: float) -> None:
        rclpy.spin_once(rec_node, timeout_sec=timeout)

    try:
        print("[demo] waiting for the node to load the model and the CAD database ...", flush=True)
        if not wait_for(lambda: rec.database is not None, args.timeout, spin, node_proc):
            print(f"roca-demo: the node did not start (log {node_log}):\n{tail(node_log)}", file=sys.stderr)
            return 1
        print(f"[demo] node ready ({len(rec.database.models)} CAD models); playing {args.frames} frames "
              f"at {args.rate:g} Hz", flush=True)
        times_file = out / "publish_times.json"
        player_proc = subprocess.Popen(
            [sys.executable, "-m", "roca_ros.demo_player", "--sequence", str(seq_dir), "--rate", str(args.rate),
             "--times", str(times_file)] + ["--depth"] * args.depth + ["--imu"] * args.upright, env=env)
        wait_for(lambda: player_proc.poll() is not None, args.frames / args.rate + 120, spin)
        if player_proc.returncode != 0:
            print("roca-demo: the camera player failed", file=sys.stderr)
            return 1
        published = json.loads(times_file.read_text())
        stamps = [p["stamp_ns"] for p in published]
        # Drain: results of the last frames may still be on their way.
        last_count, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 5.0 and not all(s in rec.objects for s in stamps):
            spin(0.1)
            if len(rec.objects) != last_count:
                last_count, quiet_since = len(rec.objects), time.monotonic()
        spin(0.5)  # debug images follow their objects message
    finally:
        if player_proc is not None and player_proc.poll() is None:
            player_proc.terminate()
        if node_proc.poll() is None:
            os.killpg(node_proc.pid, signal.SIGINT)
            try:
                node_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node_proc.pid, signal.SIGKILL)
        rec_node.destroy_node()
        rclpy.try_shutdown()

    return write_outputs(out, seq, seq_dir, published, rec, args, time.monotonic() - t0)


def mode_line(args: argparse.Namespace) -> str:
    """What the node was given, for the summary."""
    parts = ["RGB", "sensor depth (16UC1, refine auto)" if getattr(args, "depth", False) else "",
             "IMU gravity (upright prior)" if getattr(args, "upright", False) else "",
             f"camera height {args.camera_height:.2f} m (ground-plane prior)" if getattr(args, "floor", False)
             else ""]
    return " + ".join(p for p in parts if p)


def write_outputs(out: Path, seq: dict, seq_dir: Path, published: list[dict], rec: Recording,
                  args: argparse.Namespace, elapsed_s: float) -> int:
    """Overlays, GLB scenes, objects.json, the accuracy summary and the printed table."""
    import cv2

    from roca_core.visualize import draw_overlay, export_scene_glb

    frames = []
    for p in published:
        i, key = p["frame"], p["stamp_ns"]
        msg = rec.objects.get(key)
        entry: dict[str, Any] = {"frame": i, "stamp_ns": key, "processed": msg is not None}
        if msg is not None:
            objects = message_objects(msg)
            entry.update(latency_ms=(rec.received_wall[key] - p["published_wall"]) * 1000.0,
                         inference_ms=msg.inference_time * 1000.0, objects=[record_to_json(o) for o in objects])
            overlay = rec.debug_images.get(key)
            if overlay is None:  # no debug image arrived: draw from the message (no masks)
                bgr = cv2.imread(str(seq_dir / seq["frames"][i]["file"]))
                overlay = draw_overlay(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), objects, seq["K"])
            cv2.imwrite(str(out / "overlays" / f"{i:06d}.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            export_scene_glb(out / "scenes" / f"{i:06d}.glb", objects)
        frames.append(entry)
    (out / "objects.json").write_text(json.dumps(frames, indent=1))

    scores = score_sequence(seq, frames, args.score_threshold)
    latencies = [f["latency_ms"] for f in frames if f["processed"]]
    processed = sum(f["processed"] for f in frames)
    summary = {
        "frames_published": len(frames), "frames_processed": processed, "frames_dropped": len(frames) - processed,
        "rate_hz": args.rate, "latency_ms_median": float(np.median(latencies)) if latencies else None,
        "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies else None,
        "inputs": mode_line(args), "accuracy": scores, "elapsed_s": elapsed_s,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    rows = ["| frame | GT objects | detected | aligned correctly | + right CAD | latency ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for f, pf in zip(frames, scores["per_frame"]):
        det = len(f.get("objects", [])) if f["processed"] else "dropped"
        lat = f"{f['latency_ms']:.0f}" if f["processed"] else "-"
        rows.append(f"| {f['frame']} | {pf['gt']} | {det} | {pf['correct']} | {pf['correct_retrieval']} | {lat} |")
    fm, sm = scores["frame_mode"], scores["scene_mode"]

    def pct(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1f} %"

    lines = [
        "# roca demo", "", f"Inputs: {mode_line(args)}.", "",
        f"{len(frames)} frames at {args.rate:g} Hz, {processed} processed, {len(frames) - processed} dropped; "
        f"latency (image published -> objects received) median "
        f"{summary['latency_ms_median'] or float('nan'):.0f} ms, p95 {summary['latency_ms_p95'] or float('nan'):.0f} ms.",
        "", *rows, "",
        "| accuracy (20 cm, 20 deg, 20 % scale) | class mean | instance mean |", "| --- | ---: | ---: |",
        f"| per frame: alignment | {pct(fm['alignment']['class_mean'])} | {pct(fm['alignment']['instance_mean'])} |",
        f"| per frame: alignment + CAD retrieval | {pct(fm['retrieval_aware']['class_mean'])} | "
        f"{pct(fm['retrieval_aware']['instance_mean'])} |",
        f"| whole sweep (world frame, merged): alignment | {pct(sm['alignment']['class_mean'])} | "
        f"{pct(sm['alignment']['instance_mean'])} |",
        f"| whole sweep: alignment + CAD retrieval | {pct(sm['retrieval_aware']['class_mean'])} | "
        f"{pct(sm['retrieval_aware']['instance_mean'])} |",
        "", f"Outputs in {out}: overlays/, scenes/ (GLB), objects.json, summary.json, node.log.",
    ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0 if processed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
