"""The edge node graph as plain data, shared by `launch/edge.launch.py` and `ros/bringup.py`.

One definition means the launch file (real ROS installs) and the in-process bring-up (tests,
machines without `launch`) cannot drift apart. No launch imports here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "tinygpt_ros"
NODE_NAME = "tinygpt_node"
MANAGER_NAME = "lifecycle_manager"
DEFAULT_IMAGE_TOPIC = "camera/image_raw"  # relative: follows the namespace
DEFAULT_EVENTS_TOPIC = "events"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
# Launch arguments: name -> (default, description). Defaults are strings, as launch wants them;
# params_file's default ("") means default_params_file().
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "namespace": ("", "Namespace for every node of the graph."),
    "params_file": ("", "ROS 2 parameter YAML; empty = <share>/config/edge.yaml."),
    "model_dir": ("", "Model directory (overrides the params file); empty = the node default."),
    "backend": ("", "torch | onnxruntime (overrides the params file); empty = keep."),
    "image_topic": (DEFAULT_IMAGE_TOPIC, "Camera topic (image/compressed -> <topic>/compressed)."),
    "events_topic": (DEFAULT_EVENTS_TOPIC, "Event camera topic (PointCloud2 or EventPacket)."),
    "use_sim_time": ("false", "Use /clock (bag replay)."),
    "autostart": ("true", "Configure and activate the lifecycle nodes on start."),
    "log_level": ("info", "Logging level: " + ", ".join(LOG_LEVELS) + "."),
}


@dataclass
class NodeSpec:
    """One node to start: what launch_ros.actions.Node/LifecycleNode take, as data."""

    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: list[dict[str, Any] | str] = field(default_factory=list)  # files, dicts; in order
    remappings: list[tuple[str, str]] = field(default_factory=list)
    lifecycle: bool = False
    ros_arguments: list[str] = field(default_factory=list)


def default_params_file() -> str:
    """<share>/config/edge.yaml when installed, else the source tree's config/edge.yaml."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = os.path.join(get_package_share_directory(PACKAGE), "config", "edge.yaml")
        if os.path.isfile(path):
            return path
    except (ImportError, LookupError, ValueError):
        pass
    return str(Path(__file__).resolve().parents[2] / "config" / "edge.yaml")


def parse_bool(value: str | bool) -> bool:
    """Launch-style booleans ('true', 'False', '1', ...)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def edge_graph(
    namespace: str = "",
    params_file: str | None = None,
    model_dir: str | None = None,
    backend: str | None = None,
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    events_topic: str = DEFAULT_EVENTS_TOPIC,
    use_sim_time: bool = False,
    autostart: bool = True,
    log_level: str = "info",
) -> list[NodeSpec]:
    """tinygpt_node (lifecycle) and the lifecycle_manager that brings it up.

    Parameters apply in order: the params file (if any), then the explicit arguments that are
    not None/empty, so a launch argument wins over the file."""
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level {log_level!r} must be one of {LOG_LEVELS}")
    if not image_topic or not events_topic:
        raise ValueError("image_topic and events_topic must not be empty")
    namespace = namespace.strip("/")
    files: list[dict[str, Any] | str] = [params_file] if params_file else []
    node_over: dict[str, Any] = {"use_sim_time": bool(use_sim_time)}
    if model_dir:
        node_over["model_dir"] = model_dir
    if backend:
        node_over["backend"] = backend
    ros_args = ["--log-level", log_level]
    node = NodeSpec(
        package=PACKAGE, executable=NODE_NAME, name=NODE_NAME, namespace=namespace,
        parameters=[*files, node_over],
        remappings=[
            ("image", image_topic),
            ("image/compressed", image_topic.rstrip("/") + "/compressed"),
            ("events", events_topic),
        ],
        lifecycle=True, ros_arguments=ros_args,
    )
    manager = NodeSpec(
        package=PACKAGE, executable=MANAGER_NAME, name=MANAGER_NAME, namespace=namespace,
        parameters=[
            *files,
            {"use_sim_time": bool(use_sim_time), "autostart": bool(autostart),
             "node_names": [NODE_NAME]},
        ],
        lifecycle=False, ros_arguments=ros_args,
    )
    return [node, manager]
