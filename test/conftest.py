"""Test configuration shared by every test.

Network safety: every rclpy process of the test suite keeps DDS discovery on this machine,
and the suite uses its own ROS domain so parallel runs on one machine do not cross-talk.
This runs before any test module imports rclpy.
"""
import os
import random

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 200)))
os.environ.setdefault("PYTHONUNBUFFERED", "1")
