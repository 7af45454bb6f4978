"""Command-line tools of roca_core (no ROS)."""
