"""Start the TinyGPT edge graph: tinygpt_node (lifecycle) and the lifecycle_manager that
configures and activates it.

    ros2 launch tinygpt_ros edge.launch.py namespace:=robot1 backend:=onnxruntime \
        model_dir:=/opt/models/tinygpt image_topic:=/camera/color/image_raw use_sim_time:=true

Arguments: namespace, params_file (default <share>/config/edge.yaml), model_dir, backend,
image_topic, events_topic, use_sim_time, autostart, log_level (`ros2 launch -s` lists them).
The nodes, their parameters and remappings come from tinygpt_ros.ros.graph.edge_graph, the same
definition the in-process `edge_bringup` uses, so this file only maps launch arguments onto it.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from tinygpt_ros.ros.graph import (
    LAUNCH_ARGUMENTS,
    LOG_LEVELS,
    default_params_file,
    edge_graph,
    parse_bool,
)

CHOICES = {
    "backend": ["", "torch", "onnxruntime"],
    "log_level": list(LOG_LEVELS),
    "use_sim_time": ["true", "false", "True", "False"],
    "autostart": ["true", "false", "True", "False"],
}


def _start_graph(context, *args, **kwargs):
    """Resolve the arguments (OpaqueFunction: plain strings here) and build the node actions."""

    def arg(name):
        return LaunchConfiguration(name).perform(context)

    specs = edge_graph(
        namespace=arg("namespace"),
        params_file=arg("params_file") or None,
        model_dir=arg("model_dir") or None,
        backend=arg("backend") or None,
        image_topic=arg("image_topic"),
        events_topic=arg("events_topic"),
        use_sim_time=parse_bool(arg("use_sim_time")),
        autostart=parse_bool(arg("autostart")),
        log_level=arg("log_level"),
    )
    actions = []
    for spec in specs:
        common = dict(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=spec.parameters,
            remappings=spec.remappings,
            ros_arguments=spec.ros_arguments,
            output="screen",
            emulate_tty=True,
        )
        actions.append(LifecycleNode(**common) if spec.lifecycle else Node(**common))
    return actions


def generate_launch_description():
    declared = []
    for name, (default, description) in LAUNCH_ARGUMENTS.items():
        if name == "params_file":
            default = default_params_file()
        extra = {"choices": CHOICES[name]} if name in CHOICES else {}
        declared.append(
            DeclareLaunchArgument(name, default_value=default, description=description, **extra)
        )
    return LaunchDescription([*declared, OpaqueFunction(function=_start_graph)])
