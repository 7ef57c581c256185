"""edge_bringup: start the edge graph (`graph.edge_graph`) in one process, without `launch`.

Same arguments as launch/edge.launch.py. The nodes share one MultiThreadedExecutor (the
`ros/executor.py` kind, whose spin thread hands each callback to the pool, not busy-looping); the
lifecycle manager autostarts the TinyGPT node (configure -> activate). Parameter files are
applied the way rcl applies `--params-file`: every top-level key whose node pattern matches the
node's fully qualified name (`/**`, `/**/name`, `/ns/name`, `name`, `*` for one token),
merged in file order, then the explicit arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
import yaml
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter

from tinygpt_ros.ros.executor import HandOffExecutor
from tinygpt_ros.ros.graph import (
    LAUNCH_ARGUMENTS,
    MANAGER_NAME,
    NODE_NAME,
    NodeSpec,
    default_params_file,
    edge_graph,
    parse_bool,
)
from tinygpt_ros.ros.manager import LifecycleManager
from tinygpt_ros.ros.node import TinyGptNode
from tinygpt_ros.ros.spin import exit_with_parent, spin_until_shutdown

_SEVERITY = {
    "debug": LoggingSeverity.DEBUG, "info": LoggingSeverity.INFO, "warn": LoggingSeverity.WARN,
    "error": LoggingSeverity.ERROR, "fatal": LoggingSeverity.FATAL,
}


def fully_qualified(name: str, namespace: str) -> str:
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{name}"


def _pattern(key: str) -> re.Pattern[str]:
    parts = [p for p in key.split("/") if p]
    rx = ""
    for p in parts:
        if p == "**":
            rx += "(?:/[^/]+)*"
        else:
            rx += "/" + re.escape(p).replace(r"\*", "[^/]*")
    return re.compile(rx)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def load_params_file(path: str | Path, node_fqn: str) -> dict[str, Any]:
    """{parameter: value} that a ROS 2 parameter YAML gives the node `node_fqn`."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"params file {path}: cannot read ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"params file {path}: not a mapping of node names")
    found: dict[str, Any] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if not isinstance(value, dict):
                raise ValueError(f"params file {path}: {prefix}/{key} is not a mapping")
            full = f"{prefix}/{str(key).strip('/')}"
            if "ros__parameters" in value:
                params = value["ros__parameters"]
                if not isinstance(params, dict):
                    raise ValueError(f"params file {path}: {full}/ros__parameters is not a mapping")
                if _pattern(full).fullmatch(node_fqn):
                    found.update(_flatten(params))
            else:
                walk(value, full)

    walk(doc, "")
    return found


def spec_parameters(spec: NodeSpec) -> list[Parameter]:
    """The parameter overrides for one node: files (matched by FQN) then dicts, in order."""
    merged: dict[str, Any] = {}
    fqn = fully_qualified(spec.name, spec.namespace)
    for entry in spec.parameters:
        merged.update(load_params_file(entry, fqn) if isinstance(entry, str) else entry)
    return [Parameter(k, value=v) for k, v in merged.items() if v != []]


def bring_up(
    context: Any,
    namespace: str = "",
    params_file: str | None = None,
    model_dir: str | None = None,
    backend: str | None = None,
    image_topic: str = LAUNCH_ARGUMENTS["image_topic"][0],
    events_topic: str = LAUNCH_ARGUMENTS["events_topic"][0],
    use_sim_time: bool = False,
    autostart: bool = True,
    log_level: str = "info",
    engine_factory: Callable[..., Any] | None = None,
    num_threads: int = 4,
) -> tuple[MultiThreadedExecutor, list[Any]]:
    """Create the graph's nodes in `context` and one executor holding them (not spinning yet).
    `params_file=None` uses the default edge.yaml; pass "" for none."""
    if params_file is None:
        params_file = default_params_file()
    specs = edge_graph(
        namespace=namespace, params_file=params_file or None, model_dir=model_dir,
        backend=backend, image_topic=image_topic, events_topic=events_topic,
        use_sim_time=use_sim_time, autostart=autostart, log_level=log_level,
    )
    executor = HandOffExecutor(num_threads=num_threads, context=context)
    nodes: list[Any] = []
    try:
        for spec in specs:
            cli = ["--ros-args"]
            for src, dst in spec.remappings:
                cli += ["-r", f"{src}:={dst}"]
            kwargs = dict(
                context=context, namespace=spec.namespace or None, cli_args=cli,
                parameter_overrides=spec_parameters(spec),
            )
            if spec.executable == NODE_NAME:
                node = TinyGptNode(engine_factory, node_name=spec.name, **kwargs)
            elif spec.executable == MANAGER_NAME:
                node = LifecycleManager(spec.name, **kwargs)
            else:
                raise ValueError(f"no in-process class for executable {spec.executable!r}")
            node.get_logger().set_level(_SEVERITY[log_level])
            nodes.append(node)
            executor.add_node(node)
    except Exception:
        tear_down(executor, nodes)
        raise
    return executor, nodes


class ExecutorThread:
    """Spins an executor in a background thread until `stop()`, which returns only once no
    callback of the executor runs any more.

    Why not `executor.spin()` in a thread, stopped by `executor.shutdown()`: rclpy's
    MultiThreadedExecutor.shutdown destroys the executor's guard condition before it waits for
    the callbacks still running in its thread pool (the base class skips its own wait), so a
    callback that ends during shutdown fails with "cannot use Destroyable because destruction was
    requested", and rclpy prints that at exit as "The following exception was never retrieved".
    Here dispatching stops first, then the running callbacks finish, then shutdown is safe."""

    def __init__(self, executor: Any, name: str = "tinygpt_spin") -> None:
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True, name=name)

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_sec: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_sec)
        pool = getattr(self.executor, "_executor", None)  # MultiThreadedExecutor's callbacks
        if pool is not None:
            pool.shutdown(wait=True)


def tear_down(
    executor: MultiThreadedExecutor, nodes: list[Any],
    spinner: threading.Thread | ExecutorThread | None = None,
) -> None:
    """Stop the executor (and the thread spinning it, if any), then destroy the nodes; the
    TinyGPT node releases its worker and engine. Nodes are destroyed only once no callback can
    run any more, so no callback sees a destroyed entity. With an `ExecutorThread`, dispatching
    and the running callbacks end before the executor shuts down (see there why)."""
    if isinstance(spinner, ExecutorThread):
        spinner.stop()
        spinner = None
    executor.shutdown(timeout_sec=5.0)
    if spinner is not None and spinner is not threading.current_thread():
        spinner.join(timeout=10.0)
    for node in reversed(nodes):
        try:
            executor.remove_node(node)
        except Exception:  # the executor may already be gone
            pass
        node.destroy_node()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge_bringup", description="Start tinygpt_node + lifecycle_manager in one process."
    )
    for name, (default, help_text) in LAUNCH_ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default,
                            help=f"{help_text} (default: {default!r})")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, ros_args = build_parser().parse_known_args(argv)
    exit_with_parent()  # an orphaned graph shuts down as on Ctrl-C (see ros/spin.py)
    rclpy.init(args=[sys.argv[0], *ros_args])
    context = rclpy.get_default_context()
    try:
        executor, nodes = bring_up(
            context, namespace=args.namespace, params_file=args.params_file or None,
            model_dir=args.model_dir or None, backend=args.backend or None,
            image_topic=args.image_topic, events_topic=args.events_topic,
            use_sim_time=parse_bool(args.use_sim_time), autostart=parse_bool(args.autostart),
            log_level=args.log_level,
        )
    except Exception as exc:
        print(f"edge_bringup: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        tear_down(executor, nodes)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
