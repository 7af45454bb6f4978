"""Test configuration shared by every test.

Network safety: every rclpy process of the test suite keeps DDS discovery on this machine,
and the suite uses its own ROS domain so parallel runs on one machine do not cross-talk.
This runs before any test module imports rclpy.
"""
import os
import random

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 200)))
os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="module")
def roca_home(tmp_path_factory):
    """A private ROCA_HOME (cache of the embedded CAD library) for one test module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ROCA_HOME", str(tmp_path_factory.mktemp("roca_home")))
    yield
    mp.undo()
