"""Parameters through the real rcl_interfaces services, as `ros2 param` uses them.

Engine-dependent (fixtures `engine_factory` / `model_dir` from ros_fixtures): all tests except
test_param_table_matches_core_knobs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from tinygpt_ros.ros import params
from tinygpt_ros.ros.conversions import rgb_to_image
from tinygpt_ros.spec.config import KNOB_SPECS, Knobs

pytest_plugins = ["ros_fixtures"]  # fixtures: engine_factory, model_dir, tinygpt, lifecycle
_RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    if isinstance(v, list):
        return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


class ParamClient:
    def __init__(self, ros, target: str = "tinygpt_node") -> None:
        self.ros = ros
        n = ros.make_node("param_client")
        self.set_cli = n.create_client(SetParameters, f"{target}/set_parameters")
        self.get_cli = n.create_client(GetParameters, f"{target}/get_parameters")
        self.describe_cli = n.create_client(DescribeParameters, f"{target}/describe_parameters")

    def set(self, name: str, value):
        req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=_value(value))])
        return self.ros.call(self.set_cli, req).results[0]

    def get(self, name: str):
        v = self.ros.call(self.get_cli, GetParameters.Request(names=[name])).values[0]
        return {
            ParameterType.PARAMETER_BOOL: v.bool_value,
            ParameterType.PARAMETER_INTEGER: v.integer_value,
            ParameterType.PARAMETER_DOUBLE: v.double_value,
            ParameterType.PARAMETER_STRING: v.string_value,
            ParameterType.PARAMETER_STRING_ARRAY: list(v.string_array_value),
        }[v.type]

    def describe(self, names: list[str]):
        return self.ros.call(self.describe_cli, DescribeParameters.Request(names=names)).descriptors


def test_param_table_matches_core_knobs():
    for name, spec in KNOB_SPECS.items():
        ps = params.PARAM_SPECS[name]
        assert ps.kind is spec.kind
        if spec.kind is str:
            assert ps.choices == spec.choices and ps.choices
        elif spec.kind is not bool:
            assert (ps.low, ps.high) == (spec.low, spec.high)
    for name in ("image_transport", "qos_reliability", "qos_depth", "backend", "providers",
                 "precision", "budget_ms", "budget_gflops", "energy_j_per_gflop", "model_dir",
                 "events_time_reference"):
        assert name in params.PARAM_SPECS
    with pytest.raises(ValueError, match="fusion_threshold"):
        params.validate("fusion_threshold", math.nan)


def test_descriptors_carry_ranges_and_read_only(ros, tinygpt):
    tinygpt()
    pc = ParamClient(ros)
    names = ["fusion_threshold", "max_active_tokens", "model_dir", "image_transport", "providers"]
    d = {x.name: x for x in pc.describe(names)}
    ft = d["fusion_threshold"].floating_point_range[0]
    assert (ft.from_value, ft.to_value) == (0.0, 100.0)
    mat = d["max_active_tokens"].integer_range[0]
    assert (mat.from_value, mat.to_value) == (0, 196)
    assert d["model_dir"].read_only
    assert "raw" in d["image_transport"].additional_constraints
    assert d["providers"].type == ParameterType.PARAMETER_STRING_ARRAY
    assert "next configure" in d["image_transport"].description
    assert all(x.description for x in d.values())


def test_valid_knob_reaches_engine_on_next_frame(ros, lifecycle, tinygpt):
    node = tinygpt(qos_reliability="reliable")
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    io = ros.make_node("io")
    pub = io.create_publisher(Image, "image", _RELIABLE)
    captions: list[str] = []
    io.create_subscription(String, "caption", lambda m: captions.append(m.data), _RELIABLE)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
    pc = ParamClient(ros)

    changes = {"fusion_threshold": 2.5, "max_active_tokens": 50, "sttf_enabled": False,
               "routing_temperature": 0.5, "refresh_interval": 0,
               "motion_compensation": "translation", "max_compensated_motion": 0.2}
    for name, value in changes.items():
        result = pc.set(name, value)
        assert result.successful, result.reason
        assert pc.get(name) == value
    engine = node.engine
    assert engine.knobs()["fusion_threshold"] != 2.5  # not applied mid-frame ...
    pub.publish(rgb_to_image(np.full((16, 16, 3), 90, np.uint8), Header(frame_id="cam")))
    assert ros.spin_until(lambda: len(captions) >= 1)
    knobs = engine.knobs()  # ... but before the next frame
    for name, value in changes.items():
        assert knobs[name] == value


@pytest.mark.parametrize(
    ("name", "bad", "words"),
    [
        ("fusion_threshold", 150.0, "range"),
        ("max_active_tokens", 500, "range"),
        ("routing_hysteresis", -0.5, "range"),
        ("routing_temperature", 0.0, "range"),
        ("max_fused_tokens", 0, "range"),
        ("fusion_threshold", "high", "type"),
        ("sttf_enabled", 1, "type"),
        ("image_transport", "h264", "one of"),
        ("backend", "tensorflow", "one of"),
        ("precision", "int4", "one of"),
        ("providers", ["CUDA"], "ExecutionProvider"),
        ("budget_ms", -1.0, "range"),
        ("qos_depth", 0, "range"),
        ("motion_compensation", "homography", "one of"),
        ("max_compensated_motion", 0.9, "range"),
        ("event_sensor_mapping", "fisheye", "one of"),
        ("event_sensor_width", -1, "range"),
        ("event_sensor_height", 70000, "range"),
    ],
)
def test_invalid_values_refused_old_value_kept(ros, tinygpt, name, bad, words):
    tinygpt()
    pc = ParamClient(ros)
    old = pc.get(name)
    result = pc.set(name, bad)
    assert not result.successful
    assert name in result.reason or words in result.reason
    assert words in result.reason
    assert pc.get(name) == old


def test_nan_refused_with_core_message(ros, tinygpt):
    tinygpt()
    pc = ParamClient(ros)
    result = pc.set("caption_reuse_threshold", math.nan)
    assert not result.successful and "caption_reuse_threshold" in result.reason
    assert pc.get("caption_reuse_threshold") == Knobs().caption_reuse_threshold


def test_model_dir_is_read_only(ros, tinygpt, model_dir):
    tinygpt()
    pc = ParamClient(ros)
    result = pc.set("model_dir", "/tmp/elsewhere")
    assert not result.successful
    assert "read-only" in result.reason
    assert pc.get("model_dir") == model_dir


def test_configure_time_params_apply_on_next_configure(ros, lifecycle, tinygpt):
    node = tinygpt()
    lc = lifecycle()
    assert lc.configure()
    assert any(s.topic_name == "/image" for s in node.subscriptions)
    pc = ParamClient(ros)
    assert pc.set("image_transport", "compressed").successful
    assert any(s.topic_name == "/image" for s in node.subscriptions)  # unchanged while configured
    assert lc.cleanup() and lc.configure()
    assert any(s.topic_name == "/image/compressed" for s in node.subscriptions)
    assert not any(s.topic_name == "/image" for s in node.subscriptions)


def test_beam_size_reaches_the_engine_at_configure(ros, lifecycle, tinygpt):
    """beam_size is read at configure (the engine is built with it); out of its range it is
    refused and the old value kept."""
    node = tinygpt(beam_size=3)
    assert lifecycle().configure()
    assert node._engine.kernels.beam_size == 3
    pc = ParamClient(ros)
    for bad in (0, 9):
        assert not pc.set("beam_size", bad).successful
    assert node.get_parameter("beam_size").value == 3


def test_invalid_override_fails_at_construction(ros, engine_factory, model_dir):
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    from tinygpt_ros.ros.node import TinyGptNode

    bad = [Parameter("model_dir", value=model_dir), Parameter("backend", value="caffe")]
    with pytest.raises(InvalidParameterValueException):
        TinyGptNode(engine_factory, context=ros.context, parameter_overrides=bad)


def test_integer_for_a_double_is_converted_and_range_checked(ros, tinygpt):
    """`ros2 param set /tinygpt_node routing_temperature 1`: users type integers for floats."""
    node = tinygpt()
    pc = ParamClient(ros)
    result = pc.set("routing_temperature", 2)
    assert result.successful, result.reason
    assert pc.get("routing_temperature") == 2.0
    value = node.get_parameter("routing_temperature")
    assert isinstance(value.value, float)
    refused = pc.set("routing_temperature", 1000)
    assert not refused.successful and "range" in refused.reason
    assert pc.get("routing_temperature") == 2.0
    assert pc.set("budget_ms", 20).successful and pc.get("budget_ms") == 20.0


@pytest.mark.parametrize(
    ("name", "bad", "expects"),
    [
        ("routing_temperature", "1", "a number"),
        ("budget_ms", [], "a number"),
        ("qos_depth", 2.5, "an integer"),
        ("sttf_enabled", "yes", "a boolean"),
        ("backend", 3, "a string"),
        ("providers", "CPUExecutionProvider", "a list of strings"),
    ],
)
def test_wrong_type_refused_in_words(ros, tinygpt, name, bad, expects):
    tinygpt()
    pc = ParamClient(ros)
    old = pc.get(name)
    result = pc.set(name, bad)
    assert not result.successful
    assert name in result.reason and expects in result.reason and "type" in result.reason
    assert pc.get(name) == old


def test_integer_for_a_double_in_a_params_file(ros, tinygpt):
    """`routing_temperature: 1` in a params file (an override at declaration) is the double 1.0,
    and later wrong types are still refused in words."""
    node = tinygpt(routing_temperature=1, budget_ms=20)
    assert node.get_parameter("routing_temperature").value == 1.0
    assert isinstance(node.get_parameter("budget_ms").value, float)
    pc = ParamClient(ros)
    result = pc.set("routing_temperature", "2")
    assert not result.successful and "routing_temperature" in result.reason
    assert pc.set("routing_temperature", 3).successful and pc.get("routing_temperature") == 3.0
