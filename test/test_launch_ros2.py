"""``ros2 launch roca_ros roca.launch.py`` as users run it: from a colcon workspace and from .venv.

launch / launch_ros are not installed here, so :mod:`launch_emulation` repeats their steps:
the launch file is found by walking ``share/roca_ros`` of the ament index, the executable at
``<prefix>/lib/roca_ros/<executable>``, and the node is started with exactly the command
line the launch description produces. Then: its topics and types come up, and SIGINT (once,
or twice in quick succession as a terminal Ctrl-C under launch delivers it) ends it with
exit code 0, no traceback, the worker stopped, and every frame it processed published
completely (objects and markers) and received.

The colcon workspace is fresh (the repository copied into ``src/roca``) and builds roca_ros
on top of this environment, which provides roca_msgs (the full two-package build of the
README is test_package_metadata.py's). The model is a small random checkpoint: plumbing only.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("roca_msgs.msg")

from visualization_msgs.msg import Marker  # noqa: E402

from launch_emulation import command_line, find_executable, find_launch_file, launch_nodes  # noqa: E402
from ros_helpers import (  # noqa: E402
    REPO, START_TIMEOUT_S, VENV_BIN, Client, NodeProcess, node_env, private_domain_id, save_random_checkpoint,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = private_domain_id()
IMAGE_TOPIC, CAMERA_INFO_TOPIC = "/camera/image_raw", "/camera/camera_info"
LAUNCH_FILE = "roca.launch.py"


def _sourced_environment(setup_sh: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment after ``. install/setup.sh`` (colcon's own script; setup.bash, which
    the README uses, comes with the colcon-bash extension of a ROS install and sets the same)."""
    out = subprocess.run(["sh", "-c", f". '{setup_sh}' && env -0"], env=base, capture_output=True,
                         check=True, timeout=60)
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def installs(tmp_path_factory) -> dict[str, dict]:
    """name -> {env, prefix}: a fresh colcon workspace and this .venv, each as users set it up."""
    colcon = VENV_BIN / "colcon"
    if not colcon.exists():
        pytest.skip("colcon not installed in this environment")
    base = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    base.pop("PYTHONPATH", None)
    ws = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(REPO, ws / "src" / "roca", ignore=shutil.ignore_patterns(
        ".venv", "build", "install", "log", ".git", "*.egg-info", "__pycache__", "demo_out", "data", "out"))
    build = subprocess.run([str(colcon), "build", "--base-paths", "src/roca", "--event-handlers", "console_direct-"],
                           cwd=ws, env=base, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return {
        "colcon": {"env": _sourced_environment(ws / "install" / "setup.sh", base),
                   "prefix": ws / "install" / "roca_ros"},
        "venv": {"env": base, "prefix": Path(sys.prefix)},
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "small_random.safetensors")


@pytest.fixture(params=["colcon", "venv"])
def install(request, installs, monkeypatch) -> dict:
    """One install, with this process's ament index pointed at it (as ros2 launch would see it)."""
    chosen = installs[request.param]
    monkeypatch.setenv("AMENT_PREFIX_PATH", chosen["env"]["AMENT_PREFIX_PATH"])
    return chosen


def test_launch_file_and_executables_are_found_as_ros2_launch_finds_them(install, tmp_path):
    prefix = install["prefix"]
    share = prefix / "share" / "roca_ros"
    launch_file = find_launch_file("roca_ros", LAUNCH_FILE)
    assert launch_file.parent == share / "launch"
    (node,) = launch_nodes(launch_file, {})
    assert command_line(node, tmp_path) == [
        str(prefix / "lib" / "roca_ros" / "roca_node"), "--ros-args", "-r", "__node:=roca_node",
        "-r", "__ns:=/roca", "--params-file", str(share / "config" / "roca.yaml"),
        "-r", "image:=image", "-r", "camera_info:=camera_info"]
    assert not node.lifecycle

    depth = "/camera/camera/aligned_depth_to_color/image_raw"
    (managed,) = launch_nodes(launch_file, {"lifecycle": "true", "namespace": "cam2", "device": "cpu",
                                            "depth_topic": depth})
    command = command_line(managed, tmp_path)
    assert managed.lifecycle and command[0] == str(prefix / "lib" / "roca_ros" / "roca_lifecycle_node")
    assert command[1:6] == ["--ros-args", "-r", "__node:=roca_node", "-r", "__ns:=/cam2"]
    overrides = Path(command[command.index("--params-file", 7) + 1]).read_text()
    assert "/cam2/roca_node:" in overrides and "device: cpu" in overrides
    assert f"depth_topic: {depth}" in overrides and "imu_topic" not in overrides  # only the arguments given

    node, rviz = launch_nodes(launch_file, {"use_rviz": "true"})
    assert (rviz.package, rviz.executable, rviz.arguments[0]) == ("rviz2", "rviz2", "-d")
    # RViz gets the installed config/roca.rviz rewritten for the launch's frame and topics.
    assert Path(rviz.arguments[1]).is_file() and (share / "config" / "roca.rviz").is_file()
    with pytest.raises(ValueError, match="use_rviz must be true or false, got 'maybe'"):
        launch_nodes(launch_file, {"use_rviz": "maybe"})
    # `ros2 run roca_ros <tool>` finds every console script the same way.
    for tool in ("roca_node", "roca_lifecycle_node", "roca-predict"):
        assert find_executable("roca_ros", tool).parent == prefix / "lib" / "roca_ros"


def _processed_at_stop(log: str) -> int:
    match = re.search(r"stopped: worker finished its last frame; (\d+) frames processed", log)
    assert match, f"no stop report in the log:\n{log}"
    return int(match.group(1))


@pytest.mark.parametrize("signals", [1, 2], ids=["sigint", "sigint-twice"])
def test_launched_node_serves_its_topics_and_stops_cleanly_on_sigint(install, signals, checkpoint, tmp_path):
    launch_file = find_launch_file("roca_ros", LAUNCH_FILE)
    (node,) = launch_nodes(launch_file, {"checkpoint": str(checkpoint), "image_topic": IMAGE_TOPIC,
                                         "camera_info_topic": CAMERA_INFO_TOPIC})
    command = command_line(node, tmp_path)
    share = install["prefix"] / "share" / "roca_ros"
    assert command[1:] == ["--ros-args", "-r", "__node:=roca_node", "-r", "__ns:=/roca",
                           "--params-file", str(share / "config" / "roca.yaml"),
                           "--params-file", str(tmp_path / "launch_params_1.yaml"),
                           "-r", f"image:={IMAGE_TOPIC}", "-r", f"camera_info:={CAMERA_INFO_TOPIC}"]
    # launch starts the process in the user's working directory, not in the source tree.
    proc = NodeProcess(command, tmp_path / "node.log", node_env(DOMAIN_ID, install["env"]), cwd=tmp_path)
    client = None
    try:
        assert proc.wait_for_log("ready:", START_TIMEOUT_S), proc.log()
        client = Client(DOMAIN_ID, image_topic=IMAGE_TOPIC, camera_info_topic=CAMERA_INFO_TOPIC)
        n = client.node
        assert client.spin_until(lambda: ("roca_node", "/roca") in n.get_node_names_and_namespaces()
                                 and n.count_publishers("/roca/markers") and n.count_subscribers(IMAGE_TOPIC)
                                 and n.count_subscribers(CAMERA_INFO_TOPIC), 20.0), "node not discovered"
        published = dict(n.get_publisher_names_and_types_by_node("roca_node", "/roca"))
        subscribed = dict(n.get_subscriber_names_and_types_by_node("roca_node", "/roca"))
        services = dict(n.get_service_names_and_types_by_node("roca_node", "/roca"))
        assert {name: published.get(name) for name in (
            "/roca/objects", "/roca/markers", "/roca/debug_image", "/roca/cad_database", "/roca/roca_node/stats")} == {
            "/roca/objects": ["roca_msgs/msg/ObjectAlignmentArray"],
            "/roca/markers": ["visualization_msgs/msg/MarkerArray"],
            "/roca/debug_image": ["sensor_msgs/msg/Image"],
            "/roca/cad_database": ["roca_msgs/msg/CadDatabaseInfo"],
            "/roca/roca_node/stats": ["std_msgs/msg/String"]}
        assert subscribed == {IMAGE_TOPIC: ["sensor_msgs/msg/Image"], CAMERA_INFO_TOPIC: ["sensor_msgs/msg/CameraInfo"]}
        assert services.get("/roca/reload_cad_database") == ["roca_msgs/srv/ReloadCadDatabase"]
        time.sleep(0.5)  # the node's writers match this client's readers (both directions of discovery)

        # Frames at 5 Hz; once results flow, stop the node right after a frame went out, so the
        # worker is (most likely) busy with it.
        sent = 0
        while len(client.objects) < 3 and sent < 100:
            client.publish(*client.frame())
            sent += 1
            client.spin_until(lambda: False, 0.2)
        assert len(client.objects) >= 3, f"no results for {sent} frames:\n{proc.log()}"
        client.publish(*client.frame())
        client.spin_until(lambda: False, 0.03)
        for _ in range(signals):
            proc.proc.send_signal(signal.SIGINT)
            time.sleep(0.02)
        assert client.spin_until(lambda: proc.proc.poll() is not None, 30.0), "node still running after SIGINT"
        client.spin_until(lambda: False, 0.5)
        code, log = proc.stop(), proc.log()
        assert code == 0, log
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
        processed = _processed_at_stop(log)
        # The last marker array is the shutdown's DELETEALL (stamped now, not an image's stamp).
        clears = sorted(set(client.markers) - set(client.objects))
        assert len(clears) == 1 and clears[0] > max(client.objects), "markers not cleared on shutdown"
        assert [m.action for m in client.markers[clears[0]].markers] == [Marker.DELETEALL]
        assert sorted(client.objects) == sorted(set(client.markers) - set(clears)), "a frame was half-published"
        assert len(client.objects) == processed, f"{processed} frames processed, {len(client.objects)} received"
    finally:
        if client is not None:
            client.close()
        proc.stop(signal.SIGKILL)
