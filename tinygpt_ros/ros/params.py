"""Parameters of tinygpt_node: one table (`PARAM_SPECS`) for declaration, descriptors, validation
and the yaml file.

The STTF/ANC knobs come from `spec.config.KNOB_SPECS` and are validated with `Knobs.validated`,
so the node refuses exactly what the engine would refuse, with the same words. rclpy checks the
descriptor's type and range first (its own message names the parameter and the range); the
callback returned by `make_validator` adds the checks descriptors cannot express (choices, NaN,
provider names).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from tinygpt_ros.deploy import power
from tinygpt_ros.ros import conversions
from tinygpt_ros.runtime.threads import DEFAULT_BLAS_THREADS, DEFAULT_INTRA_OP_THREADS
from tinygpt_ros.spec.config import KNOB_SPECS, Knobs

PACKAGE = "tinygpt_ros"
NEXT_FRAME = "next frame"
NEXT_CONFIGURE = "next configure"
CAPTION_PUBLISH_MODES = ("every_frame", "on_change")

# Rough energy per GFLOP for an edge GPU at batch 1 (about 10 W at about 100 GFLOP/s sustained on
# a Jetson Orin Nano class module). Only an estimate until a power sensor reader is plugged in.
DEFAULT_J_PER_GFLOP = 0.1


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type  # bool, int, float, str or list (of str)
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    applies: str = NEXT_FRAME  # when a change made while running takes effect

    @property
    def is_knob(self) -> bool:
        return self.name in KNOB_SPECS


def _knob_specs() -> list[ParamSpec]:
    defaults = Knobs()
    return [
        ParamSpec(
            name, spec.kind, getattr(defaults, name), spec.description,
            None if spec.kind in (bool, str) else spec.low,
            None if spec.kind in (bool, str) else spec.high,
            choices=spec.choices,
        )
        for name, spec in KNOB_SPECS.items()
    ]


def _ros_specs() -> list[ParamSpec]:
    return [
        ParamSpec(
            "model_dir", str, "",
            "Model directory (model.pt / ONNX + manifest.json). Empty = <share>/models/tinygpt, "
            "or the source tree's models/tinygpt when not installed. Read-only: set it at launch.",
            read_only=True, applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "backend", str, "onnxruntime",
            "Inference engine: onnxruntime (deployment default, no torch needed; the model dir "
            "must hold the `tinygpt-ros export` graphs) or torch (the reference).",
            choices=("torch", "onnxruntime"), applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "providers", list, ["CPUExecutionProvider"],
            "onnxruntime execution providers in order of preference (e.g. "
            "TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider); "
            "ignored by the torch backend.",
            applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "precision", str, "fp32", "Inference precision.",
            choices=("fp32", "fp16"), applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "beam_size", int, 1,
            "Caption decoding of the TinyGPT models: 1 = greedy (the shipped figures), more = "
            "beam search of that width (each decoding step runs once per beam; the diagnostics' "
            "FLOPs count every beam). A pretrained (transformers) model decodes its own way.",
            1, 8, applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "intra_op_threads", int, DEFAULT_INTRA_OP_THREADS,
            "Threads of the inference engine's intra-op pool (onnxruntime session option "
            "intra_op_num_threads, torch.set_num_threads). 0 = the library default (one per "
            "core). The default was measured on the node at camera rates (docs/benchmarks.md).",
            0, 256, applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "blas_threads", int, DEFAULT_BLAS_THREADS,
            "Limit of the process's BLAS, OpenMP and OpenCV thread pools (numpy's matrix "
            "products in the STTF controller, image resizing), applied with threadpoolctl: no "
            "OMP_NUM_THREADS needed. 0 = the libraries' defaults (one per core).",
            0, 256, applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "image_transport", str, "raw",
            "Camera input: 'raw' subscribes to image (sensor_msgs/Image), 'compressed' to "
            "image/compressed (sensor_msgs/CompressedImage, jpeg or png).",
            choices=("raw", "compressed"), applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "events_msg_type", str, "auto",
            "Event input type on topic events: 'pointcloud2' (fields x, y, t, p), "
            "'event_packet' (event_camera_msgs/EventPacket, encodings mono, evt3, libcaer, "
            "libcaer_cmp) or 'auto' "
            "(EventPacket when event_camera_msgs is installed, else PointCloud2).",
            choices=("auto", "pointcloud2", "event_packet"), applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "events_time_reference", str, "relative",
            "'relative': PointCloud2 t is microseconds since header.stamp (EventPacket dt: ns "
            "since header.stamp); 'absolute': t is microseconds on the header's clock "
            "(EventPacket: dt is added to time_base).",
            choices=("relative", "absolute"),
        ),
        ParamSpec(
            "event_sensor_width", int, 0,
            "Event sensor width in pixels. 0 = from the EventPacket's width (PointCloud2: the "
            "model's 128x128 event grid, no mapping). An event outside the sensor is a bad "
            "message (counted in diagnostics).",
            0, 65535,
        ),
        ParamSpec(
            "event_sensor_height", int, 0,
            "Event sensor height in pixels. 0 = from the EventPacket's height (PointCloud2: the "
            "model's event grid).",
            0, 65535,
        ),
        ParamSpec(
            "event_sensor_mapping", str, "scale",
            "How the sensor maps onto the model's 128x128 event grid. 'scale': each axis scaled "
            "(the whole field of view; a 16:9 sensor is squeezed horizontally); 'crop': the "
            "centred square of side min(width, height), scaled (aspect kept, the sides dropped; "
            "events there are not used).",
            choices=("scale", "crop"),
        ),
        ParamSpec(
            "qos_reliability", str, "reliable",
            "Reliability of the input subscriptions. reliable (default): a 640x480 rgb8 frame "
            "(921 KB) over best_effort is lost whole when one fragment is (measured: most frames "
            "at 30 Hz on one machine); a best_effort publisher cannot match a reliable "
            "subscription (reported as incompatible_qos). best_effort suits small or compressed "
            "messages and lossy links where a late frame is worthless.",
            choices=("best_effort", "reliable"), applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "qos_depth", int, 5, "History depth of the input subscriptions.",
            1, 1000, applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "budget_ms", float, 0.0,
            "Per-frame time budget (engine latency + ROS conversion/publish); frames over it are "
            "reported at WARN level in /diagnostics. 0 = no budget.",
            0.0, 60000.0,
        ),
        ParamSpec(
            "budget_gflops", float, 0.0,
            "Per-frame compute budget in GFLOPs; frames over it are reported at WARN level. "
            "0 = no budget.",
            0.0, 1.0e6,
        ),
        ParamSpec(
            "budget_mode", str, "off",
            "Closed-loop compute budget: 'latency' holds engine ms per frame at "
            "budget_target_ms, 'flops' GFLOPs per frame at budget_target_gflops, 'power' mW "
            "(energy per frame x frame rate; INA3221 rails when readable, else the FLOPs "
            "estimate) at budget_target_mw, by moving the STTF/ANC knobs inside their set "
            "values (never past them); 'gpu_share' the share of wall time the engine keeps "
            "the GPU busy at budget_target_gpu_pct (CUDA events or NVML; refused, old value "
            "kept, where the engine runs on no GPU); 'off' = the knobs as set. budget_ms / "
            "budget_gflops stay WARN thresholds.",
            choices=("off", "latency", "flops", "power", "gpu_share"),
        ),
        ParamSpec(
            "budget_target_ms", float, 50.0,
            "budget_mode 'latency': per-frame engine latency the controller holds (ms).",
            0.01, 60000.0,
        ),
        ParamSpec(
            "budget_target_gflops", float, 1.0,
            "budget_mode 'flops': per-frame GFLOPs the controller holds.", 1e-6, 1.0e6,
        ),
        ParamSpec(
            "budget_target_mw", float, 5000.0,
            "budget_mode 'power': mean power the controller holds (mW).", 0.001, 1.0e6,
        ),
        ParamSpec(
            "budget_target_gpu_pct", float, 50.0,
            "budget_mode 'gpu_share': share of wall time (%) the engine may keep the GPU busy "
            "(GPU busy ms per frame / frame period).", 0.1, 100.0,
        ),
        ParamSpec(
            "energy_j_per_gflop", float, DEFAULT_J_PER_GFLOP,
            "Joules per GFLOP used for the energy estimate in /diagnostics (energy_source "
            "'estimate') when no INA3221 power rail is readable; a rough edge-GPU figure.",
            0.0, 100.0,
        ),
        ParamSpec(
            "power_iio_glob", str, power.IIO_GLOB,
            "INA3221 rails, older JetPack (iio, in_power*_input in mW); energy per frame is "
            "measured from them when present.", applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "power_hwmon_glob", str, power.HWMON_GLOB,
            "INA3221 rails, newer JetPack (hwmon, in*_input mV x curr*_input mA).",
            applies=NEXT_CONFIGURE,
        ),
        ParamSpec(
            "caption_marker", bool, True,
            "Also publish each caption as a visualization_msgs/Marker (TEXT_VIEW_FACING) on "
            "caption_marker, stamped with the source image's header, for RViz.",
        ),
        ParamSpec(
            "caption_publish", str, "every_frame",
            "When the caption (and its marker) go out: 'every_frame', one per camera frame, a "
            "reused caption repeated; 'on_change', only when the text differs from the last one "
            "published since activation (for consumers that act on each message, such as "
            "speech). The per-frame diagnostics say which frames published "
            "(caption_published).",
            choices=CAPTION_PUBLISH_MODES,
        ),
        ParamSpec(
            "frame_diagnostics", bool, True,
            "Publish a status on /diagnostics for every frame (true), or only the 1 Hz summary "
            "and a status for each bad message (false: one publish fewer per frame; the summary "
            "still reports the camera frames' ROS overhead, ros_overhead_ms_p50/p95 and "
            "ros_overhead_pct_p50).",
        ),
    ]


def _limit_specs() -> list[ParamSpec]:
    """Input limits (conversions.InputLimits): a message over one is refused before anything is
    allocated for it (ERROR diagnostic, error_kind 'limit')."""
    return [
        ParamSpec(
            "max_image_pixels", int, conversions.DEFAULT_MAX_IMAGE_PIXELS,
            "Largest image accepted, in pixels (width*height), raw or compressed; a compressed "
            "image's size is read from its JPEG/PNG header before decoding, so a decompression "
            "bomb is refused without being decoded. Default: 3840x2160.",
            1, 1 << 30,
        ),
        ParamSpec(
            "max_message_bytes", int, conversions.DEFAULT_MAX_MESSAGE_BYTES,
            "Largest payload accepted (Image/CompressedImage/PointCloud2 data, EventPacket "
            "events), in bytes. Default: 64 MiB.",
            1, (1 << 31) - 1,
        ),
        ParamSpec(
            "max_events_per_message", int, conversions.DEFAULT_MAX_EVENTS,
            "Most events accepted in one PointCloud2 (width*height) or EventPacket.",
            1, 1_000_000_000,
        ),
    ]


PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s for s in _knob_specs() + _ros_specs() + _limit_specs()
}
KNOB_NAMES = tuple(KNOB_SPECS)


def default_model_dir() -> str:
    """<share>/models/tinygpt when installed and present, else the source tree's models dir."""
    candidates = model_dir_candidates()
    for path in candidates:
        if os.path.isdir(path):
            return path
    return candidates[0]


def model_dir_candidates() -> list[str]:
    found = []
    try:
        from ament_index_python.packages import get_package_share_directory

        found.append(os.path.join(get_package_share_directory(PACKAGE), "models", "tinygpt"))
    except (ImportError, LookupError, ValueError):
        pass
    found.append(str(Path(__file__).resolve().parents[2] / "models" / "tinygpt"))
    return found


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """ParameterDescriptor with type, range, read-only flag and a description saying when a
    change takes effect."""
    text = spec.description
    if not spec.read_only:
        text += f" Changes take effect on the {spec.applies}."
    d = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.kind is bool:
        d.type = ParameterType.PARAMETER_BOOL
    elif spec.kind is int:
        d.type = ParameterType.PARAMETER_INTEGER
        if spec.low is not None and spec.high is not None:
            d.integer_range = [
                IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)
            ]
    elif spec.kind is float:
        d.type = ParameterType.PARAMETER_DOUBLE
        if spec.low is not None and spec.high is not None:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    elif spec.kind is list:
        d.type = ParameterType.PARAMETER_STRING_ARRAY
    else:
        d.type = ParameterType.PARAMETER_STRING
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    return d


def validate(name: str, value: Any) -> Any:
    """Return the value to use for parameter `name`, or raise ValueError saying why not."""
    spec = PARAM_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter {name!r}")
    if spec.is_knob:
        return Knobs.validated(name, value)
    if spec.choices is not None:
        if value not in spec.choices:
            raise ValueError(f"{name}={value!r} is not one of {list(spec.choices)}")
        return value
    if spec.kind is list:
        items = list(value) if isinstance(value, list | tuple) else None
        if not items or not all(isinstance(v, str) and v for v in items):
            raise ValueError(f"{name} must be a non-empty list of names, got {value!r}")
        bad = [v for v in items if not v.endswith("ExecutionProvider")]
        if bad:
            raise ValueError(f"{name}: {bad} are not onnxruntime providers (*ExecutionProvider)")
        return items
    if spec.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    elif spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    elif spec.kind is str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        raise ValueError(f"{name}={value} is out of range [{spec.low}, {spec.high}]")
    return value


_TYPE_WORDS = {
    bool: "a boolean (true or false)",
    int: "an integer",
    float: "a number (double; an integer is converted)",
    str: "a string",
    list: "a list of strings",
}
_MSG_TYPE_WORDS = {
    ParameterType.PARAMETER_NOT_SET: "no value",
    ParameterType.PARAMETER_BOOL: "a boolean",
    ParameterType.PARAMETER_INTEGER: "an integer",
    ParameterType.PARAMETER_DOUBLE: "a double",
    ParameterType.PARAMETER_STRING: "a string",
    ParameterType.PARAMETER_BYTE_ARRAY: "a byte array",
    ParameterType.PARAMETER_BOOL_ARRAY: "a list of booleans",
    ParameterType.PARAMETER_INTEGER_ARRAY: "a list of integers",
    ParameterType.PARAMETER_DOUBLE_ARRAY: "a list of doubles",
    ParameterType.PARAMETER_STRING_ARRAY: "a list of strings",
}


def wrong_type_reason(name: str, type_id: int) -> str | None:
    """Why a value of ROS parameter type `type_id` cannot be set on parameter `name`, in words;
    None when the type fits (an integer fits a double parameter: `integers_as_doubles` converts
    it). rclpy's own refusal ("expected '3' got '2'") names neither."""
    spec = PARAM_SPECS.get(name)
    if spec is None:
        return None
    wanted = descriptor(spec).type
    if type_id == wanted or (
        wanted == ParameterType.PARAMETER_DOUBLE and type_id == ParameterType.PARAMETER_INTEGER
    ):
        return None
    got = _MSG_TYPE_WORDS.get(type_id, f"type {type_id}")
    return f"{name}: wrong type: expects {_TYPE_WORDS[spec.kind]}, got {got}"


def integers_as_doubles(parameters: list[Any]) -> list[Any]:
    """An integer given for a double parameter (`ros2 param set
    /tinygpt_node routing_temperature 1`) becomes that double, so the descriptor's range and
    our validation then apply to it as to any double."""
    out = []
    for p in parameters:
        spec = PARAM_SPECS.get(p.name)
        if spec is not None and spec.kind is float and p.type_ == Parameter.Type.INTEGER:
            p = Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
        out.append(p)
    return out


def declare_all(node: Any, model_dir_default: str | None = None) -> None:
    """Declare every parameter of PARAM_SPECS on `node` (overrides from launch/yaml apply)."""
    for spec in PARAM_SPECS.values():
        default = spec.default
        if spec.name == "model_dir":
            default = model_dir_default if model_dir_default is not None else default_model_dir()
        try:
            node.declare_parameter(spec.name, default, descriptor(spec))
        except InvalidParameterTypeException:
            if spec.kind is not float:
                raise
            _declare_integer_override(node, spec, default)


def _declare_integer_override(node: Any, spec: ParamSpec, default: float) -> None:
    """`routing_temperature: 1` in a params file: rclpy refuses an integer override for a double
    at declaration (before any callback), so declare with dynamic typing, then store the value
    as the double it means (range and validation apply as to any set)."""
    d = descriptor(spec)
    d.dynamic_typing = True
    value = node.declare_parameter(spec.name, default, d).value
    result = node.set_parameters([Parameter(spec.name, Parameter.Type.DOUBLE, float(value))])[0]
    if not result.successful:
        raise InvalidParameterValueException(spec.name, value, result.reason)


def type_refusal(parameters: list[Any]) -> SetParametersResult | None:
    """A refusal naming the first parameter given a value of the wrong type, else None."""
    for p in parameters:
        reason = wrong_type_reason(p.name, p.type_.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return None


def make_validator(
    names: Sequence[str] | None = None,
) -> Callable[[list[Any]], SetParametersResult]:
    """An on-set-parameters callback refusing any invalid value with the reason (old value kept).
    Parameters not in PARAM_SPECS (use_sim_time, ...) are left to rclpy."""
    checked = set(PARAM_SPECS if names is None else names)

    def on_set(params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name not in checked:
                continue
            try:
                validate(p.name, p.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    return on_set


def read_all(node: Any) -> dict[str, Any]:
    """Current values of every PARAM_SPECS parameter (lists as plain lists)."""
    out: dict[str, Any] = {}
    for name in PARAM_SPECS:
        value = node.get_parameter(name).value
        out[name] = list(value) if isinstance(value, list | tuple) else value
    return out
