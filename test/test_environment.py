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


def test_importing_roca_ros_sets_the_default_even_without_the_pth(tmp_path):
    """The node's own entry point must default to LOCALHOST on machines without our venv."""
    code = (
        "import os, sys\n"
        "os.environ.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)\n"
        "import roca_ros\n"
        "print(os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'))\n"
    )
    assert run_clean(code) == "LOCALHOST"
