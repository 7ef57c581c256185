"""Compute-budget diagnostics: per-frame and 1 Hz summary status builders.

Kept free of node state so the formats are testable and stable: consumers (dashboards, the
evaluation scripts, `ros2 topic echo /diagnostics`) parse these key names.

Per frame (`<node>: frame`): tokens_in, tokens_recomputed, tokens_fused, branch, flops_total,
flops_encoder, flops_dense, flops_ratio, latency_ms_<stage> (every stage of spec.types.STAGES),
latency_ms_total, caption_reused, decoder_passes, dropped_frames, errors, energy_mj,
energy_source, ros_overhead_ms (conversion + publishing the outputs + diagnostics_ms, the
previous per-frame diagnostics' build and publish), plus modality, frame_index, full_refresh,
conversion_ms, diagnostics_ms, caption_published (whether the caption went out: see the
node's caption_publish), the node's input_age_ms (source stamp to its subscription
callback, on its clock) and queue_ms (callback to the worker), for camera frames the
ego-motion compensation (motion_compensation, motion_dx, motion_dy, motion_scale,
motion_rotation_deg, exposure_gain, exposure_offset, reanchored), and for event windows
gesture / gesture_confidence. Level WARN when over budget_ms (engine latency + ROS overhead)
or budget_gflops; ERROR for a message that could not be used (values error_kind,
errors_<kind>). A node with `frame_diagnostics` false sends no per-frame status (only
the error ones); its summary still carries the camera frames' ROS overhead.

The builders return `diagnostics_wire.Status` (plain values, not message objects): the node
publishes them through `diagnostics_wire.DiagnosticsPublisher`, which encodes them straight to
bytes; `Status.to_msg` gives the message where one is needed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus

from tinygpt_ros.ros.diagnostics_wire import Status
from tinygpt_ros.spec.config import BRANCH_NAMES
from tinygpt_ros.spec.types import STAGES, FrameResult

# levels as received messages carry them (one-byte bytes), for consumers of /diagnostics
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
_OK, _WARN, _ERROR = OK[0], WARN[0], ERROR[0]  # the same levels as a Status's int
ENERGY_SOURCE = "estimate"


def fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def formatted(pairs: Iterable[tuple[str, object]]) -> list[tuple[str, str]]:
    return [(k, fmt(v)) for k, v in pairs]


def energy_mj(flops: float, j_per_gflop: float) -> float:
    """Energy estimate in millijoules from analytical FLOPs."""
    return float(flops) / 1e9 * float(j_per_gflop) * 1e3


@dataclass
class Budget:
    budget_ms: float = 0.0  # 0 = none
    budget_gflops: float = 0.0  # 0 = none
    j_per_gflop: float = 0.1


def frame_status(
    name: str,
    result: FrameResult,
    *,
    budget: Budget,
    conversion_ms: float,
    ros_overhead_ms: float,
    dropped_frames: int,
    errors: int,
    hardware_id: str = "",
    energy: tuple[float, str] | None = None,
    diagnostics_ms: float = 0.0,
) -> Status:
    """The per-frame status for one engine step. `energy` = (millijoules, source) measured by a
    power monitor; None = the FLOPs estimate."""
    rec = result.record
    total = rec.total_flops
    dense = float(rec.dense_flops)
    ratio = total / dense if dense > 0 else 1.0
    latency_total = rec.total_latency_ms
    pairs: list[tuple[str, object]] = [
        ("modality", rec.modality),
        ("frame_index", rec.frame_index),
        ("tokens_in", rec.tokens_in),
        ("tokens_recomputed", rec.tokens_recomputed),
        ("tokens_fused", rec.tokens_fused),
        ("branch", rec.branch),
        ("full_refresh", bool(rec.full_refresh)),
        ("flops_total", float(total)),
        ("flops_encoder", float(rec.encoder_flops)),
        ("flops_dense", dense),
        ("flops_ratio", float(ratio)),
    ]
    pairs += [(f"latency_ms_{s}", float(rec.latency_ms.get(s, 0.0))) for s in STAGES]
    pairs += [
        ("latency_ms_total", float(latency_total)),
        ("caption_reused", bool(rec.caption_reused)),
        ("decoder_passes", int(rec.decoder_passes)),
        ("dropped_frames", int(dropped_frames)),
        ("errors", int(errors)),
        ("energy_mj", energy[0] if energy else energy_mj(total, budget.j_per_gflop)),
        ("energy_source", energy[1] if energy else ENERGY_SOURCE),
        ("conversion_ms", float(conversion_ms)),
        ("ros_overhead_ms", float(ros_overhead_ms)),
        ("diagnostics_ms", float(diagnostics_ms)),
    ]
    if rec.modality == "frame":
        pairs += [
            ("motion_compensation", rec.motion_compensation),
            ("motion_dx", float(rec.motion_dx)),
            ("motion_dy", float(rec.motion_dy)),
            ("motion_scale", float(rec.motion_scale)),
            ("motion_rotation_deg", float(rec.motion_rotation_deg)),
            ("exposure_gain", float(rec.exposure_gain)),
            ("exposure_offset", float(rec.exposure_offset)),
            ("reanchored", bool(rec.reanchored)),
        ]
    if rec.modality == "events" or result.gesture is not None:
        pairs += [
            ("gesture", result.gesture or ""),
            ("gesture_confidence", float(result.gesture_confidence)),
        ]
    if result.budget is not None:
        pairs += list(result.budget.items())
    over = []
    elapsed = latency_total + ros_overhead_ms
    if budget.budget_ms > 0 and elapsed > budget.budget_ms:
        over.append(f"{elapsed:.1f} ms > budget {budget.budget_ms:g} ms")
    if budget.budget_gflops > 0 and total / 1e9 > budget.budget_gflops:
        over.append(f"{total / 1e9:.3g} GFLOPs > budget {budget.budget_gflops:g} GFLOPs")
    if result.budget is not None and result.budget.get("budget_unreachable"):
        b = result.budget
        over.append(f"budget target {b['budget_target']:g} {b['budget_unit']} unreachable: "
                    f"{b['budget_measured']:.3g} at the cheapest setting the knobs allow")
    if over:
        level, message = _WARN, "over budget: " + "; ".join(over)
    else:
        level = _OK
        message = f"{rec.branch}, {rec.tokens_recomputed}/{rec.tokens_in} tokens recomputed"
    return Status(level, f"{name}: frame", message, hardware_id, formatted(pairs))


def error_status(
    name: str,
    kind: str,
    message: str,
    *,
    errors_by_kind: dict[str, int],
    dropped_frames: int,
    topic: str = "",
    hardware_id: str = "",
    details: Iterable[tuple[str, object]] = (),
) -> Status:
    """ERROR status for a message the node could not use (it was skipped). `details`: extra
    pairs about this error (for error_kind 'limit': limit, limit_value, value)."""
    pairs: list[tuple[str, object]] = [
        ("error_kind", kind),
        ("topic", topic),
        *details,
        ("errors", sum(errors_by_kind.values())),
        ("dropped_frames", int(dropped_frames)),
    ]
    pairs += [(f"errors_{k}", v) for k, v in sorted(errors_by_kind.items())]
    return Status(_ERROR, f"{name}: frame", message, hardware_id, formatted(pairs))


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """KeyValue list -> dict (for consumers and tests)."""
    return {kv.key: kv.value for kv in status.values}


class FrameStats:
    """Thread-safe running statistics behind the 1 Hz summary. Bounded: a fixed-size window of
    recent frames for means and percentiles, plain counters for totals.

    `now` gives the time in seconds that rates are measured in: the node passes its ROS clock, so
    with use_sim_time a bag's /clock drives them (a bag played at 2x still reports its recorded
    fps). A clock that is not running yet (0) or jumps back starts the measurement afresh."""

    def __init__(self, window: int = 256, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, float, str, float]] = deque(maxlen=window)
        # budget controller: True/False per frame held under a budget (None = no budget)
        self._in_budget: deque[bool | None] = deque(maxlen=window)
        # (ROS overhead ms, its share of engine + overhead) of the camera frames since the last
        # summary: the ROS budget is set for camera frames, and an event window costs more
        self._overhead: deque[tuple[float, float]] = deque(maxlen=window)
        self.frames = 0
        self.energy_mj_total = 0.0
        self.energy_source = ENERGY_SOURCE
        self.errors: Counter[str] = Counter()
        self.ignored_inactive = 0
        self._last_summary_t = now()
        self._last_summary_frames = 0
        self._last_summary_errors = 0

    def add_frame(self, result: FrameResult, energy: float,
                  energy_source: str = ENERGY_SOURCE, ros_overhead_ms: float = 0.0) -> None:
        rec = result.record
        spent = rec.total_latency_ms + ros_overhead_ms
        share = ros_overhead_ms / spent if spent > 0 else 0.0
        pct = 100.0 * rec.tokens_recomputed / rec.tokens_in if rec.tokens_in else 0.0
        ratio = rec.total_flops / rec.dense_flops if rec.dense_flops > 0 else 1.0
        with self._lock:
            self.frames += 1
            self.energy_mj_total += energy
            self.energy_source = energy_source
            self._recent.append((pct, ratio, rec.branch, rec.total_latency_ms))
            self._in_budget.append(
                None if result.budget is None else bool(result.budget.get("budget_in_budget")))
            if rec.modality == "frame":
                self._overhead.append((ros_overhead_ms, share))

    def add_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def add_ignored(self) -> None:
        with self._lock:
            self.ignored_inactive += 1

    def error_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.errors)

    @property
    def error_total(self) -> int:
        with self._lock:
            return sum(self.errors.values())

    def summary_status(
        self, name: str, *, dropped: int, budget: Budget, hardware_id: str = "",
        mailbox_depth: int = 0,
    ) -> Status:
        """`<name>: summary` over the frames since the previous call (fps, the ROS overhead)
        and the window (the rest)."""
        now = self._now()
        with self._lock:
            elapsed = now - self._last_summary_t
            valid = self._last_summary_t > 0 and elapsed > 0
            fps = (self.frames - self._last_summary_frames) / elapsed if valid else 0.0
            new_errors = sum(self.errors.values()) - self._last_summary_errors
            self._last_summary_t, self._last_summary_frames = now, self.frames
            self._last_summary_errors = sum(self.errors.values())
            recent = list(self._recent)
            held = [b for b in self._in_budget if b is not None]
            frames, energy, source = self.frames, self.energy_mj_total, self.energy_source
            errors = dict(self.errors)
            ignored = self.ignored_inactive
            overhead = list(self._overhead)
            self._overhead.clear()
        branches = Counter(r[2] for r in recent)
        if recent:
            arr = np.array([(r[0], r[1], r[3]) for r in recent], dtype=np.float64)
            pct_mean, ratio_mean = float(arr[:, 0].mean()), float(arr[:, 1].mean())
            p50, p95 = (float(v) for v in np.percentile(arr[:, 2], [50, 95]))
        else:
            pct_mean = ratio_mean = p50 = p95 = 0.0
        if overhead:
            ros = np.array(overhead, dtype=np.float64)
            ros_p50, ros_p95 = (float(v) for v in np.percentile(ros[:, 0], [50, 95]))
            ros_share = 100.0 * float(np.median(ros[:, 1]))
        else:
            ros_p50 = ros_p95 = ros_share = 0.0
        pairs: list[tuple[str, object]] = [
            ("frames", frames),
            ("fps", float(fps)),
            ("window_frames", len(recent)),
            ("tokens_recomputed_pct_mean", pct_mean),
            ("branch_histogram", " ".join(f"{b}:{branches.get(b, 0)}" for b in BRANCH_NAMES)),
        ]
        pairs += [(f"branch_{b}", branches.get(b, 0)) for b in BRANCH_NAMES]
        pairs += [
            ("flops_ratio_mean", ratio_mean),
            ("latency_ms_p50", p50),
            ("latency_ms_p95", p95),
            ("dropped_frames", int(dropped)),
            ("mailbox_depth", int(mailbox_depth)),
            ("ignored_inactive", ignored),
            ("errors", sum(errors.values())),
        ]
        pairs += [(f"errors_{k}", v) for k, v in sorted(errors.items())]
        pairs += [("energy_mj_total", energy), ("energy_source", source)]
        pairs += [
            ("budget_frames", len(held)),  # frames of the window run under a budget
            ("budget_in_pct", 100.0 * sum(held) / len(held) if held else 0.0),
            # over the camera frames since the previous summary (fps counts every frame)
            ("ros_overhead_frames", len(overhead)),
            ("ros_overhead_ms_p50", ros_p50),
            ("ros_overhead_ms_p95", ros_p95),
            ("ros_overhead_pct_p50", ros_share),
        ]
        if new_errors > 0:
            level, message = _ERROR, f"{new_errors} bad message(s) since the last summary"
        elif budget.budget_ms > 0 and p95 > budget.budget_ms:
            level, message = _WARN, f"latency p95 {p95:.1f} ms > budget {budget.budget_ms:g} ms"
        else:
            level, message = _OK, f"{fps:.1f} fps, {pct_mean:.0f}% tokens recomputed"
        return Status(level, f"{name}: summary", message, hardware_id, formatted(pairs))
