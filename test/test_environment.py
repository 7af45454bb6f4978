"""The environment keeps DDS discovery on this machine, as every rclpy process must."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = "import os; print(os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'))"


def run_clean(code: str, **extra_env: str) -> str:
    """Run ``code`` in a new interpreter of this environment without the variable set."""
    env = {k: v for k, v in os.environ.items() if k != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_this_test_process_uses_localhost_discovery():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_every_process_of_the_venv_defaults_to_localhost():
    # The .pth file written by scripts/setup_env.sh sets the default at interpreter start.
    assert run_clean(CHECK) == "LOCALHOST"


def test_an_explicit_user_choice_is_kept():
    assert run_clean(CHECK, ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET") == "SUBNET"


def test_an_rclpy_node_starts_with_localhost_range_from_inside():
    """A fresh venv process that creates an rclpy node has LOCALHOST in its own environment
    when rcl initialises (rcl reads the range from that variable at init)."""
    pytest.importorskip("rclpy")
    code = (
        "import rclpy\n"
        "from rclpy.context import Context\n"
        "ctx = Context(); rclpy.init(context=ctx)\n"
        "node = rclpy.create_node('discovery_probe', context=ctx)\n"
        "import os; print(os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'])\n"
        "node.destroy_node(); rclpy.shutdown(context=ctx)\n"
    )
    assert run_clean(code) == "LOCALHOST"


def test_the_nodes_follow_the_systems_range_and_the_demo_keeps_localhost():
    """roca_node is a ROS node like any other: importing it leaves an unset range unset (rmw's
    default applies, and the node logs which); the demo, an environment of this project, sets
    LOCALHOST for its processes. Nothing here creates a node."""
    code = (
        "import os\n"
        "os.environ.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)\n"
        "import roca_ros, roca_ros.node, roca_ros.lifecycle_node\n"
        "print(os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'))\n"
        "from roca_ros.diagnostics import discovery_range\n"
        "print(discovery_range())\n"
        "import roca_ros.demo\n"
        "print(os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-3:] == [
        "None", "SUBNET (ROS_AUTOMATIC_DISCOVERY_RANGE unset)", "LOCALHOST"]
