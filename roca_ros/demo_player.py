"""Plays a synthetic camera sequence into ROS topics, as a camera driver would.

Its own process in the demo: publishes ``image`` (rgb8) and ``camera_info`` of every frame of a
sequence (``roca_core.data.sequence``) at a fixed rate, stamps each pair with the same time,
optionally with the frame's registered depth (``--depth``: ``aligned_depth_to_color/image_raw``,
16UC1 millimetres, as a RealSense with ``align_depth.enable:=true``) and an accelerometer
reading of gravity (``--imu``: sensor_msgs/Imu on ``imu`` in the camera's frame), and writes which stamp went with which frame (and the wall-clock publish time, for latency)
to a JSON file when done.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402


def camera_info_msg(K, width: int, height: int, header):
    """sensor_msgs/CameraInfo of an undistorted pinhole camera."""
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header = header
    info.width, info.height = int(width), int(height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [float(v) for v in K.reshape(-1)]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def depth_msg(millimetres, header):
    """sensor_msgs/Image 16UC1 (millimetres, 0 = no measurement) registered to the colour image."""
    from sensor_msgs.msg import Image

    msg = Image(header=header, height=int(millimetres.shape[0]), width=int(millimetres.shape[1]),
                encoding="16UC1", is_bigendian=0, step=int(millimetres.shape[1]) * 2)
    msg.data = np.ascontiguousarray(millimetres, dtype="<u2").tobytes()
    return msg


def imu_msg(up, header, gravity: float = 9.80665):
    """sensor_msgs/Imu of a camera at rest: the accelerometer reads g along the up direction."""
    from sensor_msgs.msg import Imu

    msg = Imu(header=header)
    a = gravity * np.asarray(up, dtype=float) / np.linalg.norm(up)
    msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = (float(v) for v in a)
    msg.orientation_covariance[0] = -1.0  # no orientation estimate
    return msg


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="roca-demo-player", description=__doc__)
    parser.add_argument("--sequence", required=True, help="sequence folder (sequence.json + frames/)")
    parser.add_argument("--rate", type=float, default=2.0, help="frames per second")
    parser.add_argument("--namespace", default="roca", help="namespace of the node's input topics")
    parser.add_argument("--frame-id", default="camera", help="frame_id of the published headers")
    parser.add_argument("--times", required=True, help="JSON file to write the publish log to")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for subscribers")
    parser.add_argument("--depth", action="store_true",
                        help="also publish the sequence's depth (rendered with sensor_depth) registered to the image")
    parser.add_argument("--imu", action="store_true", help="also publish gravity as sensor_msgs/Imu on 'imu'")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")

    import cv2
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, Imu
    from std_msgs.msg import Header

    from roca_core.data.sequence import load_sequence
    from roca_ros.image_conversion import rgb_to_image_msg
    from roca_ros.time_sync import stamp_to_ns

    seq = load_sequence(args.sequence)
    frames = []
    for frame in seq["frames"]:
        bgr = cv2.imread(str(Path(args.sequence) / frame["file"]), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"roca-demo-player: cannot read {frame['file']}", file=sys.stderr)
            return 1
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    depths = []
    if args.depth:
        for frame in seq["frames"]:
            mm = cv2.imread(str(Path(args.sequence) / frame.get("depth_file", "-")), cv2.IMREAD_UNCHANGED)
            if mm is None or mm.dtype != np.uint16:
                print(f"roca-demo-player: no 16-bit depth for {frame['file']} (render with sensor_depth)",
                      file=sys.stderr)
                return 1
            depths.append(mm)

    rclpy.init()
    node = Node("roca_demo_player")
    qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
    ns = "/" + args.namespace.strip("/") if args.namespace.strip("/") else ""
    image_pub = node.create_publisher(Image, f"{ns}/image", qos)
    info_pub = node.create_publisher(CameraInfo, f"{ns}/camera_info", qos)
    depth_pub = node.create_publisher(Image, f"{ns}/aligned_depth_to_color/image_raw", qos) if args.depth else None
    imu_pub = node.create_publisher(Imu, f"{ns}/imu", qos) if args.imu else None
    log = []
    try:
        deadline = time.monotonic() + args.wait
        while image_pub.get_subscription_count() == 0 or info_pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print("roca-demo-player: nobody subscribed to the camera topics", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(0.5)  # let discovery settle both ways
        period = 1.0 / args.rate
        start = time.monotonic()
        for i, rgb in enumerate(frames):
            # Keep the rate: sleep until this frame's slot.
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            header = Header(frame_id=args.frame_id, stamp=node.get_clock().now().to_msg())
            if imu_pub is not None:
                imu_pub.publish(imu_msg(seq["frames"][i]["up"], header))
            if depth_pub is not None:
                depth_pub.publish(depth_msg(depths[i], header))
            info_pub.publish(camera_info_msg(seq["K"], seq["width"], seq["height"], header))
            image_pub.publish(rgb_to_image_msg(rgb, header))
            log.append({"frame": i, "stamp_ns": stamp_to_ns(header.stamp),
                        "published_wall": time.time()})
            rclpy.spin_once(node, timeout_sec=0.0)
        time.sleep(0.5)  # let the last messages leave before the publishers go away
    finally:
        Path(args.times).write_text(json.dumps(log, indent=1))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
