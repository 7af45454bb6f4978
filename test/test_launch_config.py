"""launch/roca.launch.py, config/roca.yaml and config/roca.rviz agree with the node.

launch and launch_ros are not installed in the pip environment, so the launch file is
checked by syntax and by the arguments it declares.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from roca_ros.params import PARAM_SPECS, NodeSettings

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "roca.launch.py"


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _declared_arguments(tree: ast.Module) -> dict[str, str]:
    """name -> default_value of every DeclareLaunchArgument(...) call with literal arguments."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            name = node.args[0].value
            defaults = [k.value for k in node.keywords if k.arg == "default_value"]
            out[name] = defaults[0].value if defaults and isinstance(defaults[0], ast.Constant) else None
    return out


def test_launch_file_declares_the_documented_arguments():
    args = _declared_arguments(_launch_tree())
    assert set(args) == {"namespace", "image_topic", "camera_info_topic", "params_file", "checkpoint",
                         "cad_database", "device", "image_transport", "lifecycle", "use_rviz", "fixed_frame",
                         "use_sim_time", "log_level", "depth_topic", "imu_topic"}
    assert args["lifecycle"] == "false"
    assert args["namespace"] == "roca"
    assert (args["image_topic"], args["camera_info_topic"]) == ("image", "camera_info")
    assert args["use_rviz"] == "false" and args["use_sim_time"] == "false"
    assert args["fixed_frame"] == "camera" and args["log_level"] == ""
    assert args["params_file"] is None  # computed: the installed share/roca_ros/config/roca.yaml


def test_launch_file_names_only_installed_console_scripts():
    """Every executable string in the launch file is a console script of setup.py (or rviz2);
    which one runs for which arguments is tested in test_launch_ros2.py."""
    from importlib import metadata

    tree = _launch_tree()
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"launch", "launch_ros.actions", "launch.actions", "ament_index_python.packages"} <= imports
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    scripts = {ep.name for ep in metadata.distribution("roca_ros").entry_points if ep.group == "console_scripts"}
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and re.fullmatch(r"roca_\w*node|rviz2", n.value)}
    assert named == {"roca_node", "roca_lifecycle_node", "rviz2"}
    assert named - {"rviz2"} <= scripts


def test_launch_arguments_become_parameter_overrides_only_when_given():
    from launch_emulation import launch_nodes

    (node,) = launch_nodes(LAUNCH, {"image_transport": "compressed", "image_topic": "/camera/image_raw"})
    assert node.parameters[1:] == [{"image_transport": "compressed"}]
    assert ("image", "/camera/image_raw") in node.remappings
    (node,) = launch_nodes(LAUNCH, {})
    assert node.parameters[1:] == []  # the parameter file's values stand


def test_rviz_follows_namespace_remaps_and_fixed_frame(tmp_path):
    from launch_emulation import launch_nodes

    node, rviz = launch_nodes(LAUNCH, {
        "use_rviz": "true", "namespace": "cam2", "image_topic": "/camera/color/image_raw",
        "camera_info_topic": "/camera/color/camera_info", "fixed_frame": "camera_color_optical_frame"})
    assert (rviz.executable, rviz.namespace, node.namespace) == ("rviz2", "cam2", "cam2")
    config = yaml.safe_load(Path(rviz.arguments[1]).read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"
    topics = {d["Name"]: d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    assert topics == {"Camera image": "/camera/color/image_raw", "Aligned CAD models": "/cam2/markers",
                      "Debug overlay": "/cam2/debug_image"}
    # A relative image topic resolves in the namespace, as the node resolves it.
    _, rviz = launch_nodes(LAUNCH, {"use_rviz": "true", "namespace": "cam3", "image_topic": "color/image_raw"})
    topics = {d["Name"]: d["Topic"]["Value"]
              for d in yaml.safe_load(Path(rviz.arguments[1]).read_text())["Visualization Manager"]["Displays"]
              if "Topic" in d}
    assert topics["Camera image"] == "/cam3/color/image_raw" and topics["Aligned CAD models"] == "/cam3/markers"
    # A compressed stream: RViz's image display takes the transport from the topic name.
    _, rviz = launch_nodes(LAUNCH, {"use_rviz": "true", "image_topic": "/bag/image_raw",
                                    "image_transport": "compressed"})
    displays = yaml.safe_load(Path(rviz.arguments[1]).read_text())["Visualization Manager"]["Displays"]
    assert {d["Name"]: d["Topic"]["Value"] for d in displays if "Topic" in d}["Camera image"] == \
        "/bag/image_raw/compressed"


def test_use_sim_time_and_log_level_reach_the_node_and_rviz(tmp_path):
    from launch_emulation import launch_nodes

    node, rviz = launch_nodes(LAUNCH, {"use_sim_time": "true", "log_level": "debug", "use_rviz": "true"})
    assert node.parameters[1:] == [{"use_sim_time": True}]
    assert node.options["ros_arguments"] == ["--log-level", "debug"]
    assert rviz.parameters == [{"use_sim_time": True}]
    (node,) = launch_nodes(LAUNCH, {})
    assert node.parameters[1:] == [] and node.options["ros_arguments"] == []
    import pytest
    with pytest.raises(ValueError, match="use_sim_time must be true or false"):
        launch_nodes(LAUNCH, {"use_sim_time": "sometimes"})


def test_log_level_argument_is_accepted_by_the_node(tmp_path):
    """The command line the launch file makes for log_level:=debug starts roca_node at DEBUG."""
    import subprocess
    import sys

    from launch_emulation import launch_nodes

    (node,) = launch_nodes(LAUNCH, {"log_level": "debug"})
    ros_arguments = node.options["ros_arguments"]
    code = ("import rclpy, rclpy.logging; rclpy.init(args=['x', '--ros-args'] + " + repr(ros_arguments) + "); "
            "print(rclpy.logging.get_logger('roca_node').get_effective_level())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("10"), out.stdout  # LoggingSeverity.DEBUG


def test_params_yaml_lists_every_parameter_with_its_default_and_a_comment():
    text = (REPO / "config" / "roca.yaml").read_text()
    data = yaml.safe_load(text)
    (node_key,) = data
    assert node_key == "/**/roca_node"
    params = data[node_key]["ros__parameters"]
    assert list(params) == [s.name for s in PARAM_SPECS]
    for spec in PARAM_SPECS:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default  # YAML has lists
        assert params[spec.name] == default and type(params[spec.name]) is type(default), spec.name
        lines = text.splitlines()
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(spec.name + ":"))
        assert lines[index - 1].strip().startswith("#"), f"{spec.name} has no comment above it"
    assert NodeSettings.from_values(params) == NodeSettings()


def test_param_table_matches_settings_dataclass():
    import dataclasses
    assert [f.name for f in dataclasses.fields(NodeSettings)] == [s.name for s in PARAM_SPECS]
    assert all(getattr(NodeSettings(), s.name) == s.default for s in PARAM_SPECS)
    assert all(s.description for s in PARAM_SPECS)
    read_only = {s.name for s in PARAM_SPECS if s.read_only}
    assert read_only == {"checkpoint", "device", "half_precision", "image_transport", "depth_topic", "imu_topic"}
    assert {s.name for s in PARAM_SPECS if s.set_by_service} == {"cad_database"}


def test_rviz_config_shows_image_markers_and_debug_image():
    config = yaml.safe_load((REPO / "config" / "roca.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera"
    topics = {(d["Class"], d["Topic"]["Value"]) for d in manager["Displays"] if "Topic" in d}
    assert topics == {("rviz_default_plugins/Image", "/roca/image"),
                      ("rviz_default_plugins/MarkerArray", "/roca/markers"),
                      ("rviz_default_plugins/Image", "/roca/debug_image")}


def test_parameter_validation_rejects_bad_values_with_reasons():
    import pytest
    from roca_ros.params import ParameterError, validate_parameter

    cases = {
        ("score_threshold", 1.5): "score_threshold must be <= 1.0",
        ("score_threshold", "high"): "score_threshold must be a number",
        ("mask_threshold", -0.1): "mask_threshold must be >= 0.0",
        ("max_objects", 0): "max_objects must be >= 1",
        ("max_objects", 2.5): "max_objects must be an integer",
        ("sync_slop", 0.0): "sync_slop must be > 0.0",
        ("marker_lifetime", -1.0): "marker_lifetime must be >= 0.0",
        ("device", "gpu"): "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
        ("publish_markers", 1): "publish_markers must be a bool",
        ("score_threshold", float("nan")): "must be finite",
        ("score_threshold", True): "must be a number",
        ("nonexistent", 1): "unknown parameter",
    }
    for (name, value), message in cases.items():
        with pytest.raises(ParameterError, match=message.replace("(", r"\(")):
            validate_parameter(name, value)
    assert validate_parameter("score_threshold", 1) == 1.0 and isinstance(validate_parameter("sync_slop", 1), float)
    assert validate_parameter("device", "cuda:1") == "cuda:1"
    settings = NodeSettings().updated({"score_threshold": 0.25})
    assert settings.score_threshold == 0.25 and NodeSettings().score_threshold == 0.5


def test_classes_allow_list_and_bounds_agree_with_the_checks():
    import pytest
    from roca_ros.params import ParameterError, validate_parameter

    assert validate_parameter("classes", ["chair", "table"]) == ("chair", "table")
    assert validate_parameter("classes", None) == () and validate_parameter("classes", []) == ()
    with pytest.raises(ParameterError, match=r"classes: unknown classes \['sofa_bed'\]"):
        validate_parameter("classes", ["chair", "sofa_bed"])
    with pytest.raises(ParameterError, match="classes must be a list of strings"):
        validate_parameter("classes", "chair")
    bounded = [s for s in PARAM_SPECS if s.bounds is not None]
    assert {s.name for s in bounded} >= {"score_threshold", "mask_threshold", "max_objects", "sync_slop",
                                         "marker_lifetime", "stats_period", "fallback_hfov_deg"}
    for spec in bounded:
        low, high = spec.bounds
        step = 1 if isinstance(spec.default, int) else 1e-6
        assert spec.coerce(high) == high, spec.name
        with pytest.raises(ParameterError):
            spec.coerce(high + step)
        with pytest.raises(ParameterError):
            spec.coerce(low - step)
