"""What ``ros2 launch PACKAGE FILE ARGS`` does, for an environment without launch installed.

``launch``, ``launch_ros`` and ``ros2launch`` are not available as wheels, so the tests repeat
the three steps they take, as their sources (ros2launch / launch_ros 0.28) do them:

1. :func:`find_launch_file`: walk ``share/PACKAGE`` of the ament index with ``os.walk``
   (which does not enter directory symlinks); exactly one file of that name must be found.
2. :func:`launch_nodes`: run the file's ``generate_launch_description()`` against recording
   stand-ins of the launch / launch_ros classes it imports, with launch arguments resolved as
   launch resolves them (command line over ``default_value``), ``OpaqueFunction``s called and
   ``IfCondition``s evaluated. ament_index_python is the real one.
3. :func:`command_line`: the command launch_ros builds for a ``Node``:
   ``<prefix>/lib/PACKAGE/EXECUTABLE [--ros-args ROS_ARGUMENTS] --ros-args -r __node:=NAME -r __ns:=/NS
   --params-file FILE... -r FROM:=TO...`` where a dict of parameters becomes a temporary YAML
   file ``{/NS/NAME: {ros__parameters: {...}}}``.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml


class LaunchError(RuntimeError):
    """Where ros2 launch or launch_ros would fail (messages as theirs)."""


def find_launch_file(package: str, file_name: str) -> Path:
    """ros2launch's get_share_file_path_from_package: os.walk of the share directory."""
    from ament_index_python.packages import get_package_share_directory

    share = get_package_share_directory(package)
    found = [Path(root) / name for root, _, files in os.walk(share) for name in files if name == file_name]
    if not found:
        raise LaunchError(f"file '{file_name}' was not found in the share directory of package '{package}' "
                          f"which is at '{share}'")
    if len(found) > 1:
        raise LaunchError(f"more than one file '{file_name}' in the share directory of '{package}': {found}")
    return found[0]


def find_executable(package: str, executable: str) -> Path:
    """launch_ros' ExecutableInPackage: <prefix>/lib/<package>/<executable>."""
    from ament_index_python.packages import get_package_prefix

    prefix = get_package_prefix(package)
    libexec = Path(prefix) / "lib" / package
    if not libexec.is_dir():
        raise LaunchError(f"package '{package}' found at '{prefix}', but libexec directory '{libexec}' "
                          "does not exist")
    path = libexec / executable
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LaunchError(f"executable '{executable}' not found on the libexec directory '{libexec}'")
    return path


# ------------------------------------------------------------------ recording stand-ins


class _Context:
    def __init__(self, configurations: dict[str, str]) -> None:
        self.launch_configurations = configurations


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: _Context) -> str:
        if self.name not in context.launch_configurations:
            raise LaunchError(f"launch configuration '{self.name}' does not exist")
        return context.launch_configurations[self.name]


def _perform(value: Any, context: _Context) -> Any:
    if isinstance(value, LaunchConfiguration):
        return value.perform(context)
    return value


class IfCondition:
    def __init__(self, predicate: Any) -> None:
        self.predicate = predicate

    def evaluate(self, context: _Context) -> bool:
        text = str(_perform(self.predicate, context)).lower()
        if text not in ("true", "false", "1", "0"):
            raise LaunchError(f"Unknown condition value '{text}' (launch accepts true, false, 1, 0)")
        return text in ("true", "1")


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: Optional[str] = None, description: str = "", **_: Any) -> None:
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, function: Callable, args: Optional[list] = None, kwargs: Optional[dict] = None) -> None:
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}


class LaunchDescription:
    def __init__(self, entities: Optional[list] = None) -> None:
        self.entities = list(entities or [])


@dataclass
class NodeAction:
    """A launch_ros Node (or LifecycleNode) as the launch file describes it."""

    package: str
    executable: str
    name: Optional[str] = None
    namespace: Optional[str] = None
    parameters: list = field(default_factory=list)
    remappings: list = field(default_factory=list)
    arguments: list = field(default_factory=list)
    condition: Optional[IfCondition] = None
    lifecycle: bool = False
    options: dict = field(default_factory=dict)


def _node_factory(lifecycle: bool):
    def make(package: str, executable: str, name: Optional[str] = None, namespace: Optional[str] = None,
             parameters: Optional[list] = None, remappings: Optional[list] = None,
             arguments: Optional[list] = None, condition: Optional[IfCondition] = None, **options: Any):
        if lifecycle and (name is None or namespace is None):
            raise LaunchError("LifecycleNode needs a name and a namespace")
        return NodeAction(package, executable, name, namespace, list(parameters or []), list(remappings or []),
                          list(arguments or []), condition, lifecycle, options)
    return make


def _stand_in_modules() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    modules["launch"].LaunchDescription = LaunchDescription
    modules["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    modules["launch.actions"].OpaqueFunction = OpaqueFunction
    modules["launch.conditions"].IfCondition = IfCondition
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch_ros.actions"].Node = _node_factory(lifecycle=False)
    modules["launch_ros.actions"].LifecycleNode = _node_factory(lifecycle=True)
    return modules


def _load_launch_description(path: Path) -> LaunchDescription:
    stand_ins = _stand_in_modules()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location(f"launch_file_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def launch_nodes(path: Path, launch_arguments: dict[str, str]) -> list[NodeAction]:
    """The nodes ``ros2 launch`` would start for ``name:=value`` arguments, in order."""
    description = _load_launch_description(path)
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    unknown = set(launch_arguments) - {d.name for d in declared}
    if unknown:
        raise LaunchError(f"unknown launch arguments {sorted(unknown)}")
    configurations = dict(launch_arguments)
    for argument in declared:
        if argument.name not in configurations:
            if argument.default_value is None:
                raise LaunchError(f"required launch argument '{argument.name}' was not provided")
            configurations[argument.name] = argument.default_value
    context = _Context(configurations)

    def expand(entities: list) -> list[NodeAction]:
        out: list[NodeAction] = []
        for entity in entities:
            if isinstance(entity, OpaqueFunction):
                out += expand(list(entity.function(context, *entity.args, **entity.kwargs) or []))
            elif isinstance(entity, NodeAction):
                if entity.condition is None or entity.condition.evaluate(context):
                    out.append(_performed(entity, context))
        return out

    return expand(description.entities)


def _performed(node: NodeAction, context: _Context) -> NodeAction:
    return NodeAction(
        package=_perform(node.package, context), executable=_perform(node.executable, context),
        name=_perform(node.name, context), namespace=_perform(node.namespace, context),
        parameters=[p if isinstance(p, dict) else _perform(p, context) for p in node.parameters],
        remappings=[(_perform(a, context), _perform(b, context)) for a, b in node.remappings],
        arguments=[_perform(a, context) for a in node.arguments], lifecycle=node.lifecycle, options=node.options)


def command_line(node: NodeAction, params_dir: Path) -> list[str]:
    """The command launch_ros runs for ``node`` (dict parameters written to ``params_dir``)."""
    command = [str(find_executable(node.package, node.executable))] + [str(a) for a in node.arguments]
    ros_arguments = [str(a) for a in node.options.get("ros_arguments") or []]
    if ros_arguments:  # launch_ros: a --ros-args block of its own before the generated one
        command += ["--ros-args"] + ros_arguments
    command.append("--ros-args")
    if node.name is not None:
        command += ["-r", f"__node:={node.name}"]
    namespace = None
    if node.namespace is not None:
        namespace = node.namespace if node.namespace.startswith("/") else "/" + node.namespace
        command += ["-r", f"__ns:={namespace}"]
    full_name = f"{(namespace or '').rstrip('/')}/{node.name}" if node.name and namespace else "/**"
    for i, parameters in enumerate(node.parameters):
        if isinstance(parameters, dict):
            path = params_dir / f"launch_params_{i}.yaml"
            path.write_text(yaml.dump({full_name: {"ros__parameters": parameters}}, default_flow_style=False))
            command += ["--params-file", str(path)]
        elif Path(parameters).is_file():  # launch_ros warns about and skips a missing file
            command += ["--params-file", str(parameters)]
    for source, target in node.remappings:
        command += ["-r", f"{source}:={target}"]
    return command
