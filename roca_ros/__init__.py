"""roca_ros: the ROS 2 adapter of roca (messages in, roca_core call, messages out).

The nodes follow the system's ROS_AUTOMATIC_DISCOVERY_RANGE like any ROS node and log the
range they run with; this repository's own environments (.venv, Makefile, .ci/run, the tests,
the demo and the benchmarks) default it to LOCALHOST.
"""
