"""Start roca_node (and optionally RViz) with the package's parameter file.

    ros2 launch roca_ros roca.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info use_rviz:=true

checkpoint, cad_database and device override the parameter file only when given (an empty
argument leaves the file's value), so an edited params_file is not silently overruled.
lifecycle:=true starts the managed variant (roca_lifecycle_node), unconfigured: drive it with
``ros2 lifecycle set /roca/roca_node configure`` (then ``activate``).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "roca_ros"


def _share(*parts):
    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def _roca_node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {name: arg(name) for name in ("checkpoint", "cad_database", "device", "image_transport")
                 if arg(name)}
    managed = arg("lifecycle").lower() in ("true", "1", "yes")
    node_action, executable = (LifecycleNode, "roca_lifecycle_node") if managed else (Node, "roca_node")
    return [node_action(
        package=PACKAGE,
        executable=executable,
        name="roca_node",
        namespace=arg("namespace"),
        parameters=[arg("params_file")] + ([overrides] if overrides else []),
        remappings=[("image", arg("image_topic")), ("camera_info", arg("camera_info_topic"))],
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
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="Start the managed node (roca_lifecycle_node), unconfigured."),
        DeclareLaunchArgument("use_rviz", default_value="false",
                              description="Also start RViz with config/roca.rviz."),
        OpaqueFunction(function=_roca_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", _share("config", "roca.rviz")],
            condition=IfCondition(LaunchConfiguration("use_rviz")),
            output="screen",
        ),
    ])
