"""tinygpt_node: the lifecycle node that captions camera frames and classifies event windows.

Threading: subscription callbacks only drop the message into a depth-1 mailbox per input (they
never convert or block); one worker thread takes the newest message, converts it (conversion
errors are counted there), applies pending knob changes to the engine between frames, runs the
engine and publishes. Decoding in the worker means a frame that is replaced before the worker
gets to it costs nothing, which matters when the camera is faster than the model.

Lifecycle: configure loads and warms up the engine and creates publishers, subscriptions, the
summary timer and the worker; activate/deactivate only gate processing and publishing (lifecycle
publishers; messages arriving while inactive are ignored and counted); cleanup and shutdown
release everything and give the freed heap back to the system (`memory.release_free_memory`;
the node also tunes glibc's allocator once, `memory.tune_allocator`), so transitions can repeat
without leaking threads, subscriptions or memory. While active the node switches the allocator
to its streaming policy (`memory.streaming_allocator`: frame-sized buffers reused from the
heap, trimmed once a second by the summary timer) and back on deactivate and teardown.

Input limits (max_image_pixels, max_message_bytes, max_events_per_message) are checked by the
conversions from header fields and payload lengths before anything is allocated to decode it;
a message over one is skipped with an ERROR diagnostic (error_kind 'limit', naming the limit and
the value) and the next message is processed normally.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import UnsupportedEventTypeError
from rclpy.exceptions import InvalidHandle
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import Marker

from tinygpt_ros.deploy.power import PowerMonitor
from tinygpt_ros.ops.event_codecs import Evt3Decoder
from tinygpt_ros.ros import compat, log_bridge, overlay, params
from tinygpt_ros.ros import conversions as conv
from tinygpt_ros.ros import diagnostics as diag
from tinygpt_ros.ros.diagnostics_wire import DiagnosticsPublisher
from tinygpt_ros.ros.executor import HandOffExecutor
from tinygpt_ros.ros.mailbox import LatestMailbox
from tinygpt_ros.ros.markers import caption_marker
from tinygpt_ros.ros.memory import (
    release_free_memory,
    streaming_allocator,
    trim_free_memory,
    tune_allocator,
)
from tinygpt_ros.ros.spin import spin_node_main
from tinygpt_ros.ros.transport import TransportMonitor
from tinygpt_ros.runtime.budget import TARGET_PARAMS
from tinygpt_ros.runtime.threads import apply_thread_limits
from tinygpt_ros.spec.config import IMAGE_SIZE
from tinygpt_ros.spec.types import Engine, FrameResult

EngineFactory = Callable[..., Engine]
RUNTIME_PARAMS = (
    "budget_ms", "budget_gflops", "energy_j_per_gflop", "events_time_reference",
    "caption_marker", "caption_publish", "frame_diagnostics", "budget_mode", "budget_target_ms",
    "budget_target_gflops", "budget_target_mw", "budget_target_gpu_pct", "event_sensor_width",
    "event_sensor_height", "event_sensor_mapping", *conv.LIMIT_NAMES,
)

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


def event_packet_type() -> type | None:
    """event_camera_msgs/EventPacket when that package is installed (optional dependency)."""
    try:
        from event_camera_msgs.msg import EventPacket  # type: ignore[import-not-found]
    except ImportError:
        return None
    return EventPacket


def _default_engine_factory() -> EngineFactory:
    from tinygpt_ros.deploy.factory import load_engine

    return load_engine


@dataclass
class _Pending:
    msg: Any
    recv_us: int  # wall clock at the subscription callback
    recv_clock_ns: int  # the node's clock (ROS time: sim time under use_sim_time) at the callback


@dataclass
class _Input:
    kind: str  # image | compressed | pointcloud2 | event_packet
    topic: str
    mailbox: LatestMailbox[_Pending]
    subscription: Any = None
    evt3: Evt3Decoder = field(default_factory=Evt3Decoder)  # EVT 3.0 state of this topic


class TinyGptNode(LifecycleNode):
    """Lifecycle node wrapping an `Engine`. `engine_factory(model_dir, backend=..., **options)`
    defaults to `tinygpt_ros.deploy.factory.load_engine` (imported on configure)."""

    def __init__(
        self,
        engine_factory: EngineFactory | None = None,
        *,
        node_name: str = "tinygpt_node",
        **node_kwargs: Any,
    ) -> None:
        tune_allocator()  # process-wide, before this node's threads allocate (ros/memory.py)
        super().__init__(node_name, **node_kwargs)
        self._engine_factory = engine_factory
        self._lock = threading.Lock()  # pending knobs and runtime settings
        self._proc_lock = threading.Lock()  # held while one message is processed
        self._active = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pending_knobs: dict[str, Any] = {}
        self._runtime: dict[str, Any] = {}
        self._engine: Engine | None = None
        self._power: PowerMonitor | None = None
        self._inputs: list[_Input] = []
        self._pubs: dict[str, Any] = {}
        self._diagnostics: DiagnosticsPublisher | None = None  # over _pubs["diagnostics"]
        self._timer: Any = None
        self._worker: threading.Thread | None = None
        self._hardware_id = ""
        self._io_group = MutuallyExclusiveCallbackGroup()
        self.stats = diag.FrameStats()
        self.last_error = ""  # why the last configure failed (also logged)
        self.token_maps_built = 0
        self._log_handler = log_bridge.install(self.get_logger())
        self._transport = TransportMonitor(self.get_logger().warning, self.get_logger().error,
                                           "")
        self._thread_limits = (0, 0)  # (blas_threads, intra_op_threads) of the last configure
        self._threads = ""  # what the libraries reported after applying them
        self.overlays_built = 0
        self.markers_built = 0
        self._diagnostics_ms = 0.0  # building and publishing the last per-frame diagnostics
        self._caption: str | None = None  # the last caption published since activation

        validate = params.make_validator()
        compat.add_parameter_callbacks(
            self, lambda plist: self._check_budget_mode(plist) or validate(plist),
            self._on_parameters_set)
        self._budget_refused: tuple[str, float] | None = None  # logged once per setting
        params.declare_all(self)
        with self._lock:
            self._pending_knobs.clear()
            self._runtime = {n: self.get_parameter(n).value for n in RUNTIME_PARAMS}

    # ---------------------------------------------------------------------------- parameters

    def set_parameters_atomically(self, parameter_list: list[Any]) -> Any:
        """What the set_parameters services call: an integer for a double parameter becomes that
        double (users type `1` for `1.0`), and a wrong type is refused in words naming the
        parameter and the type it expects, before rclpy's terse type check. Converting here
        rather than in a pre-set callback works on every distro (Humble has none)."""
        parameter_list = params.integers_as_doubles(parameter_list)
        refusal = params.type_refusal(parameter_list)
        if refusal is not None:
            return refusal
        return super().set_parameters_atomically(parameter_list)

    def set_parameters(self, parameter_list: list[Any]) -> list[Any]:
        return [params.type_refusal([p]) or super(TinyGptNode, self).set_parameters([p])[0]
                for p in params.integers_as_doubles(parameter_list)]

    def _on_parameters_set(self, changed: list[Any]) -> None:
        """Validated changes: knobs go to the engine before the next frame, budgets and the event
        time reference apply to the next frame, the rest on the next configure."""
        later = []
        with self._lock:
            for p in changed:
                if p.name in params.KNOB_NAMES:
                    self._pending_knobs[p.name] = p.value
                elif p.name in RUNTIME_PARAMS:
                    self._runtime[p.name] = p.value
                elif p.name in params.PARAM_SPECS:
                    later.append(p.name)
        if later and self._engine is not None:
            self.get_logger().info(f"{', '.join(later)} changed: takes effect on next configure")

    def _apply_pending_knobs(self, engine: Engine) -> None:
        with self._lock:
            pending, self._pending_knobs = self._pending_knobs, {}
        for name, value in pending.items():
            try:
                engine.set_knob(name, value)
            except ValueError as exc:  # validated already; the engine disagreeing is a bug
                self.stats.add_error("knob")
                self.get_logger().error(f"engine refused {name}={value!r}: {exc}")

    def _check_budget_mode(self, plist: list[Any]) -> SetParametersResult | None:
        """Refuse budget_mode gpu_share while the configured engine measures no GPU time (no
        GPU, or no way to read it); the old value stays. Without an engine yet (unconfigured,
        or the launch file's value) it is accepted and checked at configure (_apply_budget)."""
        engine = self._engine
        controller = getattr(engine, "budget", None)
        for p in plist:
            if (p.name == "budget_mode" and p.value == "gpu_share" and controller is not None
                    and controller.gpu_timing is None):
                return SetParametersResult(successful=False, reason=(
                    f"budget_mode gpu_share unavailable: {controller.gpu_refusal}"))
        return None

    def _apply_budget(self, engine: Engine, runtime: dict[str, Any]) -> None:
        """Hand the budget parameters to the engine's controller before the frame. A setting
        the engine refuses (gpu_share on an engine without GPU timing, set before configure)
        falls back explicitly: the controller keeps its previous setting (off after a
        configure), the error is logged once and counted in diagnostics."""
        controller = getattr(engine, "budget", None)
        if controller is None:
            return
        mode = runtime["budget_mode"]
        target = runtime[TARGET_PARAMS[mode]] if mode in TARGET_PARAMS else 0.0
        controller.j_per_gflop = runtime["energy_j_per_gflop"]
        if (controller.mode, controller.target) != (mode, target):
            try:
                controller.configure(mode, target)
                self._budget_refused = None
            except ValueError as exc:
                if self._budget_refused != (mode, target):
                    self._budget_refused = (mode, target)
                    self.stats.add_error("budget")
                    self.get_logger().error(
                        f"budget controller refused {mode}/{target}, running with budget_mode "
                        f"{controller.mode}: {exc}")

    # ----------------------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception as exc:  # never stay half-configured
            self._fail(f"unexpected error: {exc!r}")
            self._teardown()
            return FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._proc_lock:
            if self._engine is not None:
                self._engine.reset()  # frames before the pause are no valid reference
            self._caption = None  # on_change: the first caption after activation goes out
        ret = super().on_activate(state)  # enables the lifecycle publishers
        streaming_allocator(True)  # frame buffers reused from the heap (ros/memory.py)
        self._active.set()
        self.get_logger().info("active: processing input")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        with self._proc_lock:  # wait for the frame in flight; nothing publishes after this
            for inp in self._inputs:
                inp.mailbox.clear()
        streaming_allocator(False)  # before a cleanup frees what configure mapped
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return SUCCESS  # back to unconfigured, may configure again

    def destroy_node(self) -> None:
        self._teardown()
        log_bridge.remove(self._log_handler)
        super().destroy_node()

    @property
    def is_active(self) -> bool:
        """True between on_activate and on_deactivate: messages are processed and published."""
        return self._active.is_set()

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def dropped_frames(self) -> int:
        return sum(inp.mailbox.dropped for inp in self._inputs)

    # ----------------------------------------------------------------------------- configure

    def _fail(self, reason: str) -> None:
        self.last_error = reason
        self.get_logger().error(f"configure failed: {reason}")

    def _configure(self) -> TransitionCallbackReturn:
        values = params.read_all(self)
        model_dir = values["model_dir"] or params.default_model_dir()
        backend = values["backend"]
        options: dict[str, Any] = {"precision": values["precision"],
                                   "beam_size": int(values["beam_size"])}
        if backend == "onnxruntime":
            options["providers"] = list(values["providers"])
            options["threads"] = int(values["intra_op_threads"]) or None  # 0: ort default
            options["logger"] = self.get_logger().warning  # provider fallback, TensorRT builds
        try:
            factory = self._engine_factory or _default_engine_factory()
        except ImportError as exc:
            self._fail(f"no engine implementation available ({exc})")
            return FAILURE
        try:
            engine = factory(model_dir, backend=backend, **options)
        except (RuntimeError, OSError, ValueError, TypeError) as exc:
            looked = model_dir
            if not values["model_dir"]:
                looked = " then ".join(params.model_dir_candidates())
            self._fail(
                f"cannot load the {backend} model: {exc} (looked in {looked}; set the read-only "
                "parameter model_dir at launch to point at a model directory)"
            )
            return FAILURE
        # Before the warm-up: from here on no pool may run wider than the parameters say.
        self._thread_limits = (int(values["blas_threads"]), int(values["intra_op_threads"]))
        self._apply_thread_limits()
        try:
            for name in params.KNOB_NAMES:
                engine.set_knob(name, values[name])
            engine.process_frame(np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), 0)  # warm-up
            engine.reset()
        except Exception as exc:
            self._fail(f"engine warm-up with model {model_dir} failed: {exc!r}")
            _close(engine)
            return FAILURE

        self._transport = TransportMonitor(self.get_logger().warning, self.get_logger().error,
                                           values["qos_reliability"])
        events_kind = values["events_msg_type"]
        packet_type = event_packet_type()
        if events_kind == "auto":
            events_kind = "event_packet" if packet_type is not None else "pointcloud2"
        if events_kind == "event_packet" and packet_type is None:
            self._fail("events_msg_type is event_packet but event_camera_msgs is not installed")
            _close(engine)
            return FAILURE

        with self._lock:
            self._pending_knobs.clear()  # all applied above
            self._runtime = {n: values[n] for n in RUNTIME_PARAMS}
        self._engine = engine
        self._hardware_id = f"{backend}:{values['precision']}"
        self._power = PowerMonitor(iio_glob=values["power_iio_glob"],
                                   hwmon_glob=values["power_hwmon_glob"],
                                   j_per_gflop=values["energy_j_per_gflop"])
        self._power.start()
        self.stats = diag.FrameStats(now=self._clock_s)
        self.token_maps_built = 0
        self.overlays_built = 0
        self.markers_built = 0
        self._diagnostics_ms = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        # A fresh group per configure: rclpy groups keep (weak) references to every entity ever
        # added, so reusing one across cycles would grow without bound.
        self._io_group = MutuallyExclusiveCallbackGroup()
        group = {"callback_group": self._io_group}
        self._pubs = {
            "caption": self.create_lifecycle_publisher(String, "caption", 10, **group),
            "gesture": self.create_lifecycle_publisher(String, "gesture", 10, **group),
            "token_map": self.create_lifecycle_publisher(Image, "debug/token_map", 1, **group),
            "marker": self.create_lifecycle_publisher(Marker, "caption_marker", 10, **group),
            "overlay": self.create_lifecycle_publisher(Image, "debug/overlay", 1, **group),
            "diagnostics": self.create_lifecycle_publisher(
                DiagnosticArray, "/diagnostics", 10, **group
            ),
        }
        self._diagnostics = DiagnosticsPublisher(self._pubs["diagnostics"])
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(values["qos_depth"]),
            reliability=(
                ReliabilityPolicy.RELIABLE
                if values["qos_reliability"] == "reliable"
                else ReliabilityPolicy.BEST_EFFORT
            ),
            durability=DurabilityPolicy.VOLATILE,
        )
        if values["image_transport"] == "compressed":
            self._add_input("compressed", CompressedImage, "image/compressed", qos)
        else:
            self._add_input("image", Image, "image", qos)
        if events_kind == "event_packet":
            self._add_input("event_packet", packet_type, "events", qos)
        else:
            self._add_input("pointcloud2", PointCloud2, "events", qos)
        self._timer = self.create_timer(1.0, self._publish_summary, callback_group=self._io_group)
        self._worker = threading.Thread(
            target=self._run_worker, name=f"{self.get_name()}_worker", daemon=True
        )
        self._worker.start()
        self.last_error = ""
        self.get_logger().info(
            f"configured: model {model_dir} ({self._hardware_id}), inputs "
            f"{[i.subscription.topic_name for i in self._inputs]}"
        )
        return SUCCESS

    def _apply_thread_limits(self) -> None:
        """Cap the BLAS/OpenMP/OpenCV pools and torch's intra-op pool (see runtime/threads.py);
        called on configure and again in the worker thread (an OpenMP limit is per thread).
        What the libraries report afterwards is logged and published in the 1 Hz summary."""
        blas, intra = self._thread_limits
        summary = apply_thread_limits(blas, intra).summary()
        engine_threads = getattr(self._engine, "intra_op_threads", None)
        if engine_threads is not None:
            summary += f" onnxruntime {engine_threads}"
        if summary != self._threads:
            self.get_logger().info(f"thread limits: {summary}")
        self._threads = summary

    def _add_input(self, kind: str, msg_type: Any, topic: str, qos: QoSProfile) -> None:
        inp = _Input(kind, topic, LatestMailbox(self._wake))

        def subscribe(with_lost: bool) -> Any:
            events = self._transport.callbacks(lambda: inp.subscription.topic_name, with_lost)
            return self.create_subscription(
                msg_type, topic, lambda msg, inp=inp: self._on_message(inp, msg), qos,
                callback_group=self._io_group, event_callbacks=events,
            )

        try:
            inp.subscription = subscribe(with_lost=True)
        except UnsupportedEventTypeError:  # this rmw cannot report lost messages
            self.get_logger().warning(f"{topic}: the middleware does not report lost messages; "
                                      "transport_lost stays 0")
            inp.subscription = subscribe(with_lost=False)
        self._inputs.append(inp)

    def _teardown(self) -> None:
        """Release everything configure created. Idempotent; safe from any state."""
        self._active.clear()
        streaming_allocator(False)  # a shutdown or error may come straight from active
        self._stop.set()
        self._wake.set()
        for inp in self._inputs:
            inp.mailbox.close()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=30.0)
            if worker.is_alive():
                self.get_logger().error("worker thread did not stop within 30 s")
        for inp in self._inputs:
            if inp.subscription is not None:
                self.destroy_subscription(inp.subscription)
        self._inputs = []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self._diagnostics = None
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        with self._proc_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            _close(engine)
            del engine
        if self._power is not None:
            self._power.stop()
            self._power = None
        release_free_memory()  # the engine's freed heap back to the system (see ros/memory.py)

    # ----------------------------------------------------------------------------- data path

    def _on_message(self, inp: _Input, msg: Any) -> None:
        """Subscription callback: O(1), never blocks, never converts."""
        if not self._active.is_set():
            self.stats.add_ignored()
            return
        inp.mailbox.put(_Pending(msg, time.time_ns() // 1000, self.get_clock().now().nanoseconds))

    def _run_worker(self) -> None:
        self._apply_thread_limits()
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            for inp in list(self._inputs):
                item = inp.mailbox.take()
                if item is None:
                    continue
                with self._proc_lock:
                    if self._stop.is_set() or self._engine is None:
                        return
                    if not self._active.is_set():
                        self.stats.add_ignored()
                        continue
                    try:
                        self._process(inp, item, self._engine)
                    except Exception as exc:  # keep the worker alive whatever happens
                        self.stats.add_error("internal")
                        self.get_logger().error(f"processing {inp.topic} failed: {exc!r}")

    def _process(self, inp: _Input, item: _Pending, engine: Engine) -> None:
        t0 = time.perf_counter()
        queue_ms = (time.time_ns() // 1000 - item.recv_us) / 1e3  # in the mailbox
        msg = item.msg
        with self._lock:
            runtime = dict(self._runtime)
        limits = conv.InputLimits(**{n: runtime[n] for n in conv.LIMIT_NAMES})
        batch: conv.EventBatch | None = None
        pixel_scale = 1  # camera pixels per pixel of `data` (a large jpeg is decoded smaller)
        try:
            if inp.kind in ("image", "compressed"):
                data, pixel_scale = conv.camera_frame(msg, limits)
            else:
                geometry = conv.EventGeometry(
                    runtime["event_sensor_width"], runtime["event_sensor_height"],
                    runtime["event_sensor_mapping"])
                batch = conv.events_on_grid(
                    msg, inp.kind == "event_packet", runtime["events_time_reference"], limits,
                    geometry, inp.evt3)
                data = batch.events
        except conv.ConversionError as exc:
            self._report_error(inp, msg.header, exc.kind, str(exc), exc.details)
            return
        conversion_ms = (time.perf_counter() - t0) * 1e3
        stamp_us = conv.stamp_to_us(msg.header.stamp) or item.recv_us
        self._apply_pending_knobs(engine)
        self._apply_budget(engine, runtime)
        power = self._power
        t_power = power.mark() if power is not None else 0.0
        try:
            if inp.kind in ("image", "compressed"):
                result = engine.process_frame(data, stamp_us, pixel_scale)
            else:
                result = engine.process_events(data, stamp_us)
        except ValueError as exc:
            self._report_error(inp, msg.header, "engine_input", f"engine refused input: {exc}")
            return
        except Exception as exc:
            self._report_error(inp, msg.header, "engine", f"engine failed: {exc!r}")
            return
        energy = None
        if power is not None:
            power.j_per_gflop = runtime["energy_j_per_gflop"]
            joules, source = power.energy_for(t_power, power.mark(), result.record.total_flops)
            energy = (joules * 1e3, source)
            controller = getattr(engine, "budget", None)
            if controller is not None and source != diag.ENERGY_SOURCE:
                controller.note_energy(result.record.modality, energy[0])
        t1 = time.perf_counter()
        caption_published = self._publish_outputs(
            result, msg.header, runtime["caption_marker"],
            on_change=runtime["caption_publish"] == "on_change")
        self._publish_overlay(inp.kind, data, result, msg.header)
        # A frame's own diagnostics cannot carry their cost, so each carries the last one's: at a
        # camera rate consecutive frames cost alike, and no publish goes uncounted.
        diagnostics_ms = self._diagnostics_ms
        ros_overhead_ms = conversion_ms + (time.perf_counter() - t1) * 1e3 + diagnostics_ms
        budget = diag.Budget(
            runtime["budget_ms"], runtime["budget_gflops"], runtime["energy_j_per_gflop"]
        )
        if energy is None:
            energy = (diag.energy_mj(result.record.total_flops, budget.j_per_gflop),
                      diag.ENERGY_SOURCE)
        self.stats.add_frame(result, energy[0], energy[1], ros_overhead_ms)
        if not runtime["frame_diagnostics"]:
            self._diagnostics_ms = 0.0
            return
        t_diag = time.perf_counter()
        status = diag.frame_status(
            self.get_name(), result, budget=budget, conversion_ms=conversion_ms,
            ros_overhead_ms=ros_overhead_ms, diagnostics_ms=diagnostics_ms,
            dropped_frames=self.dropped_frames, errors=self.stats.error_total,
            hardware_id=self._hardware_id, energy=energy,
        )
        extra = [*self._transport.diagnostics(), *_latency_parts(queue_ms, item, msg.header)]
        if result.caption is not None:
            extra.append(("caption_published", caption_published))
        if inp.kind == "compressed":
            extra.append(("decode_scale", pixel_scale))
        if batch is not None:
            extra += [("events_in", batch.events_in), ("events_used", batch.events_used),
                      ("event_sensor", f"{batch.sensor[0]}x{batch.sensor[1]}")]
        status.values += diag.formatted(extra)
        self._diagnostics.publish(msg.header, [status])
        self._diagnostics_ms = (time.perf_counter() - t_diag) * 1e3

    def _publish_outputs(self, result: FrameResult, header: Header, marker: bool,
                         on_change: bool = False) -> bool:
        """The caption goes out on every camera frame, or with `on_change` only when its text
        differs from the last one published since activation: a still scene's reused caption
        repeated at the camera's rate is noise to a consumer that acts on each message (speech,
        a planner), and each publish is ROS overhead. The marker follows the caption; the
        gesture goes out on every event window. The marker, the token map and the overlay are
        built and sent only while someone subscribes: each costs a message build and a publish
        to every other process (0.25 ms for the marker, measured in the node under
        `bench-node`'s 30 Hz camera), which with nobody listening is pure ROS overhead. Returns
        whether a caption went out."""
        published = False
        if result.caption is not None and not (on_change and result.caption == self._caption):
            self._pubs["caption"].publish(String(data=result.caption))
            self._caption = result.caption
            published = True
            marker_pub = self._pubs["marker"]
            if marker and marker_pub.get_subscription_count() > 0:
                self.markers_built += 1
                marker_pub.publish(caption_marker(result.caption, header))
        if result.gesture is not None:
            self._pubs["gesture"].publish(String(data=result.gesture))
        token_pub = self._pubs["token_map"]
        if result.token_mask is not None and token_pub.get_subscription_count() > 0:
            self.token_maps_built += 1
            token_pub.publish(conv.token_mask_to_image(result.token_mask, _copy_header(header)))
        return published

    def _publish_overlay(self, kind: str, data: np.ndarray, result: FrameResult,
                         header: Header) -> None:
        """debug/overlay (rgb8, source header): drawn only while someone subscribes."""
        pub = self._pubs["overlay"]
        if pub.get_subscription_count() == 0:
            return
        if kind in ("image", "compressed"):
            picture = overlay.render_frame(data, result)
        else:
            picture = overlay.render_events(data, result)
        self.overlays_built += 1
        pub.publish(conv.rgb_to_image(picture, _copy_header(header)))

    def _report_error(self, inp: _Input, header: Header, kind: str, message: str,
                      details: tuple[tuple[str, object], ...] = ()) -> None:
        self.stats.add_error(kind)
        self.get_logger().error(
            f"{inp.subscription.topic_name}: skipped a message: {message}",
            throttle_duration_sec=1.0,
        )
        status = diag.error_status(
            self.get_name(), kind, message, errors_by_kind=self.stats.error_counts(),
            dropped_frames=self.dropped_frames, topic=inp.subscription.topic_name,
            hardware_id=self._hardware_id, details=details,
        )
        self._diagnostics.publish(header, [status])

    def _clock_s(self) -> float:
        """The node's ROS time in seconds: simulated time (/clock) when use_sim_time is set."""
        return self.get_clock().now().nanoseconds / 1e9

    def _publish_summary(self) -> None:
        # One read: a cleanup on another executor thread may reset it meanwhile.
        out = self._diagnostics
        if not self._active.is_set() or out is None:
            return
        with self._lock:
            budget = diag.Budget(
                self._runtime["budget_ms"], self._runtime["budget_gflops"],
                self._runtime["energy_j_per_gflop"],
            )
        status = self.stats.summary_status(
            self.get_name(), dropped=self.dropped_frames, budget=budget,
            hardware_id=self._hardware_id,
            mailbox_depth=max((len(inp.mailbox) for inp in self._inputs), default=0),
        )
        status.values += diag.formatted([("threads", self._threads),
                                         ("diagnostics_encoding", out.encoding),
                                         *self._transport.diagnostics()])
        header = Header(stamp=self.get_clock().now().to_msg())
        try:
            out.publish(header, [status])
        except InvalidHandle:  # destroyed by a cleanup after the read above
            pass
        trim_free_memory()  # the streaming policy keeps freed buffers: not past a second


def _latency_parts(queue_ms: float, item: _Pending, header: Header) -> list[tuple[str, float]]:
    """Where a frame's time went before the engine: `input_age_ms`, the source stamp to the
    node's subscription callback on the node's clock (the camera's capture and the middleware's
    delivery; on one machine with wall-clock stamps, the transport; left out for an unstamped
    message), and `queue_ms`, the callback to the worker taking the message (waiting behind
    the previous frame)."""
    stamp_ns = conv.stamp_to_ns(header.stamp)
    age = [("input_age_ms", (item.recv_clock_ns - stamp_ns) / 1e6)] if stamp_ns else []
    return [*age, ("queue_ms", queue_ms)]


def _copy_header(header: Header) -> Header:
    return Header(stamp=header.stamp, frame_id=header.frame_id)


def _close(engine: Any) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        close()


def main(args: list[str] | None = None) -> None:
    """`ros2 run tinygpt_ros tinygpt_node`: one lifecycle node, unconfigured until a manager
    (or `ros2 lifecycle set`) drives it."""
    spin_node_main(TinyGptNode, lambda: HandOffExecutor(num_threads=2), args)


if __name__ == "__main__":
    main()
