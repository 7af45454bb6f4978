"""Start roca_node (and optionally RViz) with the package's parameter file.

    ros2 launch roca_ros roca.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info use_rviz:=true

checkpoint, cad_database, device, image_transport, depth_topic and imu_topic override the
parameter file only when given (an empty argument leaves the file's value), so an edited params_file is not silently
overruled. lifecycle:=true starts the managed variant (roca_lifecycle_node), unconfigured: drive
it with ``ros2 lifecycle set /roca/roca_node configure`` (then ``activate``).

use_sim_time:=true (bag playback with ``--clock``) applies to the node and RViz; log_level sets
the node's log level. RViz runs in the node's namespace with config/roca.rviz rewritten for this
launch: Fixed Frame from fixed_frame, the camera image on image_topic as remapped, the markers
and debug image in the namespace.
"""
import os
import tempfile

import yaml

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "roca_ros"


def _share(*parts):
    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def _truthy(text, name="argument"):
    """A launch boolean as launch's IfCondition reads it (anything else is an error, not false)."""
    if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"{name} must be true or false, got '{text}'")
    return text.lower() in ("true", "1")


def _topic(namespace, name):
    """The absolute name a relative topic gets in the namespace (absolute names stay)."""
    if name.startswith("/"):
        return name
    return "/" + "/".join(part for part in (namespace.strip("/"), name) if part)


def rviz_config(source, fixed_frame, topics):
    """config/roca.rviz with the Fixed Frame and the display topics of this launch (a temporary file)."""
    with open(source) as stream:
        config = yaml.safe_load(stream)
    manager = config["Visualization Manager"]
    manager["Global Options"]["Fixed Frame"] = fixed_frame
    for display in manager["Displays"]:
        if display.get("Name") in topics:
            display["Topic"]["Value"] = topics[display["Name"]]
    handle, path = tempfile.mkstemp(prefix="roca_", suffix=".rviz")
    with os.fdopen(handle, "w") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    return path


def _rviz(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    if not _truthy(arg("use_rviz"), "use_rviz"):
        return []
    namespace = arg("namespace")
    # rviz_default_plugins picks the image transport from the topic's last name (".../compressed").
    camera = _topic(namespace, arg("image_topic")) + ("/compressed" if arg("image_transport") == "compressed" else "")
    topics = {"Camera image": camera,
              "Aligned CAD models": _topic(namespace, "markers"),
              "Debug overlay": _topic(namespace, "debug_image")}
    config = rviz_config(_share("config", "roca.rviz"), arg("fixed_frame"), topics)
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=namespace,
        arguments=["-d", config],
        parameters=[{"use_sim_time": True}] if _truthy(arg("use_sim_time"), "use_sim_time") else [],
        output="screen",
    )]


def _roca_node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {name: arg(name) for name in ("checkpoint", "cad_database", "device", "image_transport",
                                              "depth_topic", "imu_topic") if arg(name)}
    if _truthy(arg("use_sim_time"), "use_sim_time"):
        overrides["use_sim_time"] = True
    managed = _truthy(arg("lifecycle"), "lifecycle")
    node_action, executable = (LifecycleNode, "roca_lifecycle_node") if managed else (Node, "roca_node")
    return [node_action(
        package=PACKAGE,
        executable=executable,
        name="roca_node",
        namespace=arg("namespace"),
        parameters=[arg("params_file")] + ([overrides] if overrides else []),
        remappings=[("image", arg("image_topic")), ("camera_info", arg("camera_info_topic"))],
        ros_arguments=["--log-level", arg("log_level")] if arg("log_level") else [],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="roca",
                              description="Namespace of the node and its outputs (/NAMESPACE/objects, ...)."),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="Input sensor_msgs/Image topic (relative names resolve in the namespace)."),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="Input sensor_msgs/CameraInfo topic of the same camera."),
        DeclareLaunchArgument("params_file", default_value=_share("config", "roca.yaml"),
                              description="Parameter file of roca_node."),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="Model checkpoint; empty keeps the parameter file's value (demo model)."),
        DeclareLaunchArgument("cad_database", default_value="",
                              description="CAD database; empty keeps the parameter file's value (embedded library)."),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N; empty keeps the parameter file's value."),
        DeclareLaunchArgument("image_transport", default_value="",
                              description="raw or compressed (subscribe to IMAGE_TOPIC/compressed, JPEG/PNG); "
                                          "empty keeps the parameter file's value (raw)."),
        DeclareLaunchArgument("depth_topic", default_value="",
                              description="Depth image registered to the colour image (RealSense: "
                                          "/camera/camera/aligned_depth_to_color/image_raw with "
                                          "align_depth.enable:=true); empty keeps the parameter file's value "
                                          "(RGB only)."),
        DeclareLaunchArgument("imu_topic", default_value="",
                              description="sensor_msgs/Imu for the upright prior (see imu_frame_is_camera_optical); "
                                          "empty keeps the parameter file's value (none)."),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="Start the managed node (roca_lifecycle_node), unconfigured."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag playback with --clock) in the node and RViz."),
        DeclareLaunchArgument("log_level", default_value="",
                              description="Log level of the node (debug, info, warn, error); empty: info."),
        DeclareLaunchArgument("use_rviz", default_value="false",
                              description="Also start RViz (in the namespace) with config/roca.rviz."),
        DeclareLaunchArgument("fixed_frame", default_value="camera",
                              description="RViz Fixed Frame: the camera's optical frame (realsense: "
                                          "camera_color_optical_frame) or a world frame with TF."),
        OpaqueFunction(function=_roca_node),
        OpaqueFunction(function=_rviz),
    ])
