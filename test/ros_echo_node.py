"""A separate process for the message round-trip test: echoes every roca_msgs type.

For each message type ``T`` it subscribes ``echo_in/T`` and republishes the received message
unchanged on ``echo_out/T``; it serves ``echo/reload_cad_database`` answering with a response
derived from the request, so the service types cross the process boundary both ways.
Run: ``python test/ros_echo_node.py`` (stops on SIGINT/SIGTERM or after --timeout s).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

import roca_msgs.msg as msgs  # noqa: E402
from roca_msgs.srv import ReloadCadDatabase  # noqa: E402

MESSAGE_TYPES = (msgs.ObjectAlignment, msgs.ObjectAlignmentArray, msgs.CadModelInfo, msgs.CadDatabaseInfo)
QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                 durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def respond(request: ReloadCadDatabase.Request, response: ReloadCadDatabase.Response) -> ReloadCadDatabase.Response:
    """Deterministic answer the test can predict from its request."""
    response.success = request.database_path.startswith("/")
    response.message = request.database_path[::-1]
    response.num_models = len(request.database_path)
    return response


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    node = Node("roca_echo")
    publishers = {}
    for msg_type in MESSAGE_TYPES:
        name = msg_type.__name__
        publishers[name] = node.create_publisher(msg_type, f"echo_out/{name}", QOS)
        node.create_subscription(msg_type, f"echo_in/{name}",
                                 lambda m, n=name: publishers[n].publish(m), QOS)
    node.create_service(ReloadCadDatabase, "echo/reload_cad_database", respond)
    print("echo node ready", flush=True)
    deadline = time.monotonic() + args.timeout
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
