"""roca_ros: the ROS 2 adapter of roca (messages in, roca_core call, messages out)."""
import os

# Keep DDS discovery on this machine unless the user decided otherwise (see README).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
