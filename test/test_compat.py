"""Humble fallbacks (`tinygpt_ros.ros.compat`) with the newer rclpy API hidden: the node still
validates, refuses and applies parameters, and runs its lifecycle."""

from __future__ import annotations

import os

import pytest
from humble_api import hidden_newer_api
from rclpy.parameter import Parameter

from tinygpt_ros.ros import compat

pytest_plugins = ["ros_fixtures"]


def test_post_set_callback_is_used_where_it_exists(ros):
    node = ros.make_node("compat_new")
    applied = []
    kind = compat.add_parameter_callbacks(
        node, lambda ps: _ok(), lambda ps: applied.extend(p.name for p in ps))
    assert kind == ("on_set" if os.environ.get("TINYGPT_ROS_EMULATE_HUMBLE") == "1"
                    else "post_set")


def _ok():
    from rcl_interfaces.msg import SetParametersResult

    return SetParametersResult(successful=True)


def test_fallback_applies_only_accepted_values(ros):
    from rcl_interfaces.msg import SetParametersResult

    with hidden_newer_api():
        from rclpy.node import Node

        assert not hasattr(Node, "add_post_set_parameters_callback")
        node = ros.make_node("compat_humble")
        node.declare_parameter("gain", 1.0)
        applied: list[tuple[str, float]] = []

        def validate(ps):
            bad = [p.name for p in ps if p.value < 0]
            return SetParametersResult(successful=not bad, reason=f"{bad} must be >= 0")

        assert compat.add_parameter_callbacks(
            node, validate, lambda ps: applied.extend((p.name, p.value) for p in ps)) == "on_set"
        assert node.set_parameters([Parameter("gain", value=2.5)])[0].successful
        refused = node.set_parameters([Parameter("gain", value=-1.0)])[0]
        assert not refused.successful and "must be >= 0" in refused.reason
        assert node.get_parameter("gain").value == 2.5
        assert applied == [("gain", 2.5)]


def test_node_parameters_and_cleanup_without_the_newer_api(ros, tinygpt, lifecycle):
    """The whole node on the fallbacks (the Humble-emulation leg of scripts/test.sh runs the
    full node parameter and lifecycle tests this way too)."""
    with hidden_newer_api():
        node = tinygpt()
        lc = lifecycle()
        assert lc.configure()
        assert node.set_parameters([Parameter("fusion_threshold", value=0.8)])[0].successful
        bad = node.set_parameters([Parameter("fusion_threshold", value=-3.0)])[0]
        assert not bad.successful and node.get_parameter("fusion_threshold").value == 0.8
        assert lc.activate() and lc.deactivate() and lc.cleanup()
        assert lc.state() == "unconfigured"
        assert lc.configure() and lc.cleanup()


@pytest.mark.parametrize("supported", [True, False])
def test_localhost_discovery_sets_the_variable_the_distro_reads(monkeypatch, supported):
    monkeypatch.setattr(compat, "discovery_range_supported", lambda: supported)
    env: dict[str, str] = {}
    compat.localhost_discovery(env)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert ("ROS_LOCALHOST_ONLY" in env) is (not supported)
    user = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    compat.localhost_discovery(user)
    assert user["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def test_package_source_is_python_3_10_syntax():
    """Humble runs Python 3.10: no syntax newer than that anywhere in the package."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for path in [*(root / "tinygpt_ros").rglob("*.py"), *(root / "launch").glob("*.py")]:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
