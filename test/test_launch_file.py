"""launch/edge.launch.py, the graph it starts, and config/edge.yaml, checked without `launch`.

These run everywhere, also where `launch` / `launch_ros` are not installed: the file is (1)
compiled and its imports checked against the launch_ros API it must use, and (2) executed against
small recording stand-ins for those modules to check the wiring (declared arguments, the nodes
and their parameters). No engine is involved. The real `ros2 launch` runs in
test_real_launch.py when launch and ros2cli are installed.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from tinygpt_ros.ros import params
from tinygpt_ros.ros.graph import LAUNCH_ARGUMENTS, NodeSpec, default_params_file, edge_graph

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "edge.launch.py"
EDGE_YAML = REPO / "config" / "edge.yaml"
DOCUMENTED = {"namespace", "params_file", "model_dir", "backend", "image_topic", "events_topic",
              "use_sim_time", "autostart", "log_level"}


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    entries = [e.value for e in v.elts]
                    return dict(tuple(p.strip() for p in e.split("=", 1)) for e in entries)
    raise AssertionError("no console_scripts in setup.py")


def test_launch_file_compiles_and_uses_launch_ros_api():
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(source)
    compile(source, str(LAUNCH_FILE), "exec")
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    for needed in [("launch.launch_description", "LaunchDescription"),
                   ("launch.actions", "DeclareLaunchArgument"),
                   ("launch.actions", "OpaqueFunction"),
                   ("launch.substitutions", "LaunchConfiguration"),
                   ("launch_ros.actions", "LifecycleNode"),
                   ("launch_ros.actions", "Node"),
                   ("tinygpt_ros.ros.graph", "edge_graph")]:
        assert needed in imported, needed
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs


def test_documented_arguments():
    assert set(LAUNCH_ARGUMENTS) == DOCUMENTED
    assert all(desc for _, desc in LAUNCH_ARGUMENTS.values())


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


def _stub_modules(monkeypatch):
    mods = {name: types.ModuleType(name) for name in
            ("launch", "launch.actions", "launch.launch_description", "launch.substitutions",
             "launch_ros",
             "launch_ros.actions")}
    def rec(name):
        return type(name, (_Recorded,), {})

    mods["launch.launch_description"].LaunchDescription = rec("LaunchDescription")
    mods["launch.actions"].DeclareLaunchArgument = rec("DeclareLaunchArgument")
    mods["launch.actions"].OpaqueFunction = rec("OpaqueFunction")
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch_ros.actions"].LifecycleNode = rec("LifecycleNode")
    mods["launch_ros.actions"].Node = rec("Node")
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _run_launch_file(monkeypatch, overrides: dict[str, str]):
    _stub_modules(monkeypatch)
    namespace: dict = {"__name__": "edge_launch", "__file__": str(LAUNCH_FILE)}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), namespace)
    ld = namespace["generate_launch_description"]()
    entities = ld.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ ==
                "DeclareLaunchArgument"}
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    config = {name: kw["default_value"] for name, kw in declared.items()}
    config.update(overrides)
    context = types.SimpleNamespace(launch_configurations=config)
    nodes = opaque[0].kwargs["function"](context)
    return declared, nodes


def test_launch_file_wiring_with_recording_stubs(monkeypatch, tmp_path):
    declared, nodes = _run_launch_file(monkeypatch, {})
    assert set(declared) == DOCUMENTED
    for name, kw in declared.items():
        assert kw["description"]
        if "choices" in kw:
            assert kw["default_value"] in kw["choices"], name
    assert declared["params_file"]["default_value"] == default_params_file()
    assert Path(declared["params_file"]["default_value"]).is_file()
    kinds = {n.kwargs["executable"]: type(n).__name__ for n in nodes}
    assert kinds == {"tinygpt_node": "LifecycleNode", "lifecycle_manager": "Node"}
    scripts = _console_scripts()
    for n in nodes:
        kw = n.kwargs
        assert kw["package"] == "tinygpt_ros" and kw["executable"] in scripts
        assert kw["namespace"] == "" and kw["ros_arguments"] == ["--log-level", "info"]
        assert kw["parameters"][0] == default_params_file()
    node = next(n for n in nodes if n.kwargs["executable"] == "tinygpt_node").kwargs
    assert ("image", "camera/image_raw") in node["remappings"]
    assert ("image/compressed", "camera/image_raw/compressed") in node["remappings"]
    assert ("events", "events") in node["remappings"]
    assert node["parameters"][-1] == {"use_sim_time": False}

    _, nodes = _run_launch_file(monkeypatch, {
        "namespace": "robot1", "model_dir": str(tmp_path), "backend": "onnxruntime",
        "use_sim_time": "true", "autostart": "false", "params_file": str(EDGE_YAML),
        "image_topic": "/cam/rgb", "log_level": "debug",
    })
    node = next(n for n in nodes if n.kwargs["executable"] == "tinygpt_node").kwargs
    manager = next(n for n in nodes if n.kwargs["executable"] == "lifecycle_manager").kwargs
    assert node["namespace"] == manager["namespace"] == "robot1"
    assert node["parameters"] == [str(EDGE_YAML), {"use_sim_time": True, "model_dir": str(tmp_path),
                                                    "backend": "onnxruntime"}]
    assert ("image/compressed", "/cam/rgb/compressed") in node["remappings"]
    assert manager["parameters"][-1] == {"use_sim_time": True, "autostart": False,
                                         "node_names": ["tinygpt_node"]}
    assert manager["ros_arguments"] == ["--log-level", "debug"]


def test_edge_graph_specs():
    specs = edge_graph()
    assert [s.executable for s in specs] == ["tinygpt_node", "lifecycle_manager"]
    assert all(isinstance(s, NodeSpec) for s in specs)
    assert specs[0].lifecycle and not specs[1].lifecycle
    assert specs[0].parameters == [{"use_sim_time": False}]
    assert specs[1].parameters[-1]["node_names"] == ["tinygpt_node"]
    ns = edge_graph(namespace="/robot1/", params_file="x.yaml", model_dir="/m")
    assert {s.namespace for s in ns} == {"robot1"}
    assert ns[0].parameters == ["x.yaml", {"use_sim_time": False, "model_dir": "/m"}]
    with pytest.raises(ValueError, match="log_level"):
        edge_graph(log_level="loud")


def test_executables_exist():
    scripts = _console_scripts()
    assert scripts["tinygpt_node"] == "tinygpt_ros.ros.node:main"
    assert scripts["lifecycle_manager"] == "tinygpt_ros.ros.manager:main"
    assert scripts["edge_bringup"] == "tinygpt_ros.ros.bringup:main"
    import importlib

    for target in scripts.values():
        module, func = target.split(":")
        if module.startswith("tinygpt_ros.ros"):
            assert callable(getattr(importlib.import_module(module), func))
    installed = REPO / "install" / "lib" / "tinygpt_ros"
    if installed.is_dir():
        for exe in ("tinygpt_node", "lifecycle_manager", "edge_bringup"):
            assert (installed / exe).exists(), exe
    share = REPO / "install" / "share" / "tinygpt_ros"
    if (share / "launch").is_dir():  # colcon install: the files `ros2 launch` finds
        assert (share / "launch" / "edge.launch.py").exists()
        assert (share / "config" / "edge.yaml").exists()


def test_edge_yaml_covers_every_parameter_with_a_comment():
    text = EDGE_YAML.read_text()
    doc = yaml.safe_load(text)
    node = doc["/**/tinygpt_node"]["ros__parameters"]
    manager = doc["/**/lifecycle_manager"]["ros__parameters"]
    assert set(node) == set(params.PARAM_SPECS)
    for name, value in node.items():
        if name == "model_dir" and value == "":
            continue
        params.validate(name, value)
    assert set(manager) == {"node_names", "autostart", "transition_timeout_s"}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s+(\w+):\s*\S", line)
        if m and m.group(1) != "ros__parameters":
            assert lines[i - 1].strip().startswith("#"), f"no comment above {m.group(1)}"
