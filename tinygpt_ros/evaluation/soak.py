"""`tinygpt-ros soak`: reliability figures for the node graph, driven from another process.

Five parts, each against the real graph (`python -m tinygpt_ros.ros.bringup` in a subprocess)
through topics and the services `ros2 lifecycle` / `ros2 param` use:

- fuzz: messages in lockstep (one out, wait for the node's per-message status), a share of them
  valid and the rest malformed (`fuzz_messages`), first on raw Image + PointCloud2, then on
  CompressedImage + PointCloud2. Target: no crash, every bad message an ERROR status counted by
  kind in the node's summary, every valid one processed (or a mailbox drop).
- soak: camera (640x480 rgb8) and event windows at fixed rates for a duration; RSS, threads and
  open fds of the graph process and the node's mailbox depth over time. Target: RSS growth after
  warm-up under 5%, threads and fds flat, mailbox depth never above 1.
- lifecycle: full cycles (deactivate, cleanup, configure, activate) with the traffic flowing;
  threads, fds, RSS and input subscriptions after each, a caption after each activate.
- params: random set_parameters calls on every parameter (in and out of range, NaN, inf, wrong
  types, lists); each must be applied or refused with a reason, and a refused call must leave
  the value (read back with get_parameters) unchanged.
- faults: a model directory with a missing ONNX graph, a file with the wrong sha256, a truncated
  model.pt, an unreadable directory: configure must fail with a log line naming the file, the
  node must stay unconfigured, and configure must succeed once the fault is repaired.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from builtin_interfaces.msg import Time
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from tinygpt_ros.evaluation import fuzz_messages as fm
from tinygpt_ros.evaluation.proc_stats import ProcSample, growth_pct, sample
from tinygpt_ros.evaluation.soak_graph import (
    EVENTS_TOPIC,
    IMAGE_TOPIC,
    Driver,
    GraphProcess,
    event_packet_type,
)
from tinygpt_ros.ros.conversions import events_to_pointcloud2, rgb_to_image, stamp_to_ns
from tinygpt_ros.ros.diagnostics import ERROR
from tinygpt_ros.ros.graph import default_params_file
from tinygpt_ros.ros.params import PARAM_SPECS

log = logging.getLogger(__name__)
ERROR_LEVEL = int.from_bytes(ERROR, "little") if isinstance(ERROR, bytes) else int(ERROR)
PARTS = ("fuzz", "soak", "lifecycle", "params", "faults")
RSS_GROWTH_TARGET_PCT = 5.0


@dataclass
class SoakConfig:
    model_dir: str
    backend: str = "onnxruntime"
    parts: tuple[str, ...] = PARTS
    fuzz_messages: int = 10_000
    fuzz_valid_fraction: float = 1 / 3
    soak_s: float = 1800.0
    camera_hz: float = 30.0
    events_hz: float = 20.0
    sample_period_s: float = 10.0
    lifecycle_cycles: int = 100
    param_calls: int = 1000
    seed: int = 0
    work_dir: str | None = None  # logs and the fault-injection model copy; a temp dir if None


@dataclass
class Target:
    what: str
    met: bool
    detail: str


@dataclass
class PartResult:
    name: str
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)

    def check(self, what: str, met: bool, detail: str) -> None:
        self.targets.append(Target(what, bool(met), detail))

    @property
    def ok(self) -> bool:
        return all(t.met for t in self.targets)


def _params_file(work: Path, backend: str) -> str:
    """edge.yaml with reliable inputs (lockstep fuzz must not lose messages in DDS)."""
    tree = yaml.safe_load(Path(default_params_file()).read_text())
    for key, section in tree.items():
        if "tinygpt" in key and "ros__parameters" in section:
            section["ros__parameters"].update(
                backend=backend, qos_reliability="reliable", events_msg_type="pointcloud2",
                image_transport="raw")
    path = work / "soak_params.yaml"
    path.write_text(yaml.safe_dump(tree))
    path.chmod(0o644)
    return str(path)


def _header(i: int, frame_id: str) -> Header:
    """A unique stamp per message: the node's status for it carries the same stamp."""
    return Header(stamp=Time(sec=1_000_000 + i // 1000, nanosec=(i % 1000) * 1_000_000),
                  frame_id=frame_id)


def _reconfigure(driver: Driver, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        ok, reason = driver.set_parameter(Parameter(name, value=value).to_parameter_msg())
        if not ok:
            raise RuntimeError(f"soak: cannot set {name}={value!r}: {reason}")
    for step in ("deactivate", "cleanup", "configure", "activate"):
        if not driver.transition(step):
            raise RuntimeError(f"soak: {step} failed while reconfiguring with {changes}")


# ------------------------------------------------------------------------------------- fuzz


def _fuzz_phase(driver: Driver, image_kind: str, n: int, valid_fraction: float,
                rng: np.random.Generator, first_index: int, res: PartResult,
                tally: Counter[str], kinds: Counter[str], violations: list[str],
                event_kind: str = "pointcloud2") -> None:
    packet_type = event_packet_type() if event_kind == "event_packet" else None
    pubs = {k: driver.publisher(k) for k in (image_kind, event_kind)}
    for pub in pubs.values():
        if not driver.wait_subscribed(pub):
            raise RuntimeError(f"soak fuzz: the node does not subscribe to {pub.topic_name}")
    pools = {k: [c for seed in range(3) for c in fm.malformed_cases(
        k, np.random.default_rng(seed), _header(0, "fuzz"), seed, packet_type)]
        for k in pubs}
    counted_before = _node_counts(driver, driver.next_summary())
    phase: Counter[str] = Counter()
    for j in range(n):
        i = first_index + j
        kind = image_kind if j % 2 == 0 else event_kind
        header = _header(i, "fuzz_camera" if kind == image_kind else "fuzz_events")
        if rng.random() < valid_fraction:
            case = fm.valid_case(kind, rng, header, i, packet_type)
        else:
            pool = pools[kind]
            case = pool[int(rng.integers(len(pool)))]
            case.msg.header = header
        pubs[kind].publish(case.msg)
        status = driver.status_for(stamp_to_ns(header.stamp), timeout=30.0)
        if status is None:
            outcome = "lost"
        elif status[0] == ERROR_LEVEL:
            outcome = "error"
            kinds[status[1].get("error_kind", "?")] += 1
        else:
            outcome = "processed"
        phase[outcome] += 1
        tally[f"{case.expect}:{outcome}"] += 1
        expected = {"valid": ("processed",), "bad": ("error",),
                    "either": ("processed", "error")}[case.expect]
        if outcome not in expected:
            violations.append(f"{case.name}: {outcome}"
                              + (f" ({status[2]})" if status is not None else ""))
    # The node's own counters (summary, 1 Hz) must account for every message of this phase.
    final = driver.next_summary()
    counted = _node_counts(driver, final)
    for key, ours in (("frames", phase["processed"]), ("errors", phase["error"])):
        theirs = counted[key] - counted_before[key]
        res.check(f"{image_kind}+{event_kind}: node summary counts every {key[:-1]}",
                  theirs == ours, f"node {theirs}, driver saw {ours}")
    res.figures.setdefault("dropped_by_mailbox", 0)
    res.figures["dropped_by_mailbox"] += counted["dropped"] - counted_before["dropped"]


def _node_counts(driver: Driver, summary: dict[str, str] | None = None) -> dict[str, int]:
    """frames, errors, dropped from the node's summary (cumulative since its configure)."""
    s = driver.summary() if summary is None else summary
    keys = {"frames": "frames", "errors": "errors", "dropped": "dropped_frames"}
    return {k: int(float(s.get(v, 0) or 0)) for k, v in keys.items()}


def run_fuzz(driver: Driver, graph: GraphProcess, cfg: SoakConfig) -> PartResult:
    res = PartResult("fuzz")
    rng = np.random.default_rng(cfg.seed)
    tally: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    violations: list[str] = []
    packets = event_packet_type() is not None
    # raw + PointCloud2, compressed + PointCloud2, and raw + EventPacket where it is installed
    phases = [("image", "pointcloud2"), ("compressed", "pointcloud2")]
    if packets:
        phases.append(("image", "event_packet"))
    sizes = [cfg.fuzz_messages // len(phases)] * len(phases)
    sizes[-1] += cfg.fuzz_messages - sum(sizes)
    t0 = time.monotonic()
    first = 0
    # Node summaries restart at each configure: one phase per configuration.
    for p, ((image_kind, event_kind), n) in enumerate(zip(phases, sizes, strict=True)):
        if p:
            _reconfigure(driver, {"image_transport": "raw" if image_kind == "image"
                                  else "compressed", "events_msg_type": event_kind})
        _fuzz_phase(driver, image_kind, n, cfg.fuzz_valid_fraction, rng, first, res, tally,
                    kinds, violations, event_kind)
        first += n
    _reconfigure(driver, {"image_transport": "raw", "events_msg_type": "pointcloud2"})
    res.seconds = time.monotonic() - t0
    sent = sum(tally.values())
    valid = sum(v for k, v in tally.items() if k.startswith("valid:"))
    res.figures.update(
        messages=sent, valid=valid, malformed=sent - valid,
        outcomes=dict(sorted(tally.items())), errors_by_kind=dict(sorted(kinds.items())),
        violations=violations[:20], violation_count=len(violations),
        event_packet=(f"fuzzed: {sizes[-1]} messages with EventPacket events" if packets
                      else "not fuzzed: event_camera_msgs is not installed here"),
    )
    res.check("no crash", graph.alive() and driver.state() == "active",
              f"graph process {'alive' if graph.alive() else 'DEAD'}")
    res.check("every message answered", tally["valid:lost"] + tally["bad:lost"]
              + tally["either:lost"] == 0,
              f"{sum(v for k, v in tally.items() if k.endswith(':lost'))} without a status")
    res.check("every bad message an ERROR counted by kind, every valid one processed",
              not violations, f"{len(violations)} unexpected outcomes")
    return res


# -------------------------------------------------------------------------------- traffic


class Traffic:
    """Camera frames and event windows at fixed rates from a thread (what a robot's drivers
    publish). Messages are prepared once; only the stamps change."""

    def __init__(self, driver: Driver, camera_hz: float, events_hz: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = [rgb_to_image(fm.camera_frame(i), _header(i, "camera")) for i in range(30)]
        self.clouds = []
        for i in range(20):
            h = _header(i, "events")
            self.clouds.append(events_to_pointcloud2(fm.event_window(rng, h), h))
        self.image_pub = driver.publisher("image")
        self.events_pub = driver.publisher("pointcloud2")
        self.periods = (1.0 / camera_hz, 1.0 / events_hz)
        self.sent = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="soak_traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        start = time.monotonic()
        due = [start, start]
        n = [0, 0]
        while not self._stop.is_set():
            now = time.monotonic()
            k = 0 if due[0] <= due[1] else 1
            if due[k] > now:
                self._stop.wait(due[k] - now)
                continue
            stamp = Time(sec=int(time.time()), nanosec=time.time_ns() % 1_000_000_000)
            if k == 0:
                msg, pub, what = self.images[n[0] % len(self.images)], self.image_pub, "camera"
            else:  # t is relative to the stamp: the window moves with it
                msg, pub, what = self.clouds[n[1] % len(self.clouds)], self.events_pub, "events"
            msg.header.stamp = stamp
            try:
                pub.publish(msg)
                self.sent[what] += 1
            except _rclpy.RCLError:
                # Fast DDS refuses a reliable publish when the writer's history is full of
                # samples the (overloaded) reader has not acknowledged: a camera driver loses
                # that frame too; count it and keep the rate.
                self.sent[f"{what}_publish_refused"] += 1
            n[k] += 1
            due[k] += self.periods[k]
            if due[k] < now - 1.0:  # fell behind by a second: do not burst to catch up
                due[k] = now


# ------------------------------------------------------------------------------------- soak


def run_soak(driver: Driver, graph: GraphProcess, cfg: SoakConfig) -> PartResult:
    res = PartResult("soak")
    traffic = Traffic(driver, cfg.camera_hz, cfg.events_hz, cfg.seed)
    for pub in (traffic.image_pub, traffic.events_pub):
        driver.wait_subscribed(pub)
    before = _node_counts(driver, driver.next_summary())
    captions0 = driver.seen.captions
    samples: list[ProcSample] = []
    depths: list[int] = []
    t0 = time.monotonic()
    traffic.start()
    try:
        while time.monotonic() - t0 < cfg.soak_s:
            time.sleep(min(cfg.sample_period_s, max(0.0, cfg.soak_s - (time.monotonic() - t0))))
            if not graph.alive():
                break
            samples.append(sample(graph.pid, time.monotonic() - t0))
            depths.append(int(float(driver.summary().get("mailbox_depth", 0) or 0)))
            res.series.append(samples[-1].as_dict() | {"mailbox_depth": depths[-1]})
    finally:
        traffic.stop()
    res.seconds = time.monotonic() - t0
    final = driver.next_summary()
    after = _node_counts(driver, final)
    warm = samples[max(1, len(samples) // 5):] or samples
    rss = [s.rss_mib for s in samples]
    threads = [s.threads for s in warm]
    fds = [s.fds for s in warm]
    frames = after["frames"] - before["frames"]
    dropped = after["dropped"] - before["dropped"]
    sent = traffic.sent["camera"] + traffic.sent["events"]
    res.figures.update(
        duration_s=round(res.seconds, 1), sent_camera=traffic.sent["camera"],
        sent_events=traffic.sent["events"],
        publish_refused_by_dds=traffic.sent["camera_publish_refused"]
        + traffic.sent["events_publish_refused"],
        camera_hz_achieved=round(traffic.sent["camera"] / res.seconds, 2),
        events_hz_achieved=round(traffic.sent["events"] / res.seconds, 2),
        processed=frames, dropped_by_mailbox=dropped, errors=after["errors"] - before["errors"],
        captions=driver.seen.captions - captions0,
        rss_mib_first=round(warm[0].rss_mib, 1) if warm else None,
        rss_mib_last=round(rss[-1], 1) if rss else None,
        rss_growth_after_warmup_pct=round(growth_pct(rss), 2),
        threads_range=[min(threads, default=0), max(threads, default=0)],
        fds_range=[min(fds, default=0), max(fds, default=0)],
        mailbox_depth_max=max(depths, default=0), samples=len(samples),
        # Neither processed nor a mailbox drop: replaced in the subscription's DDS history
        # (qos_depth) before the executor handed it to the node, which cannot count those.
        not_delivered_to_node=sent - frames - dropped - (after["errors"] - before["errors"]),
        latency_ms_p50_p95=[final.get("latency_ms_p50"), final.get("latency_ms_p95")],
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    res.check("no crash", graph.alive(), "graph process alive" if graph.alive() else "DEAD")
    res.check(f"RSS growth after warm-up < {RSS_GROWTH_TARGET_PCT}%",
              growth_pct(rss) < RSS_GROWTH_TARGET_PCT, f"{growth_pct(rss):.2f}%")
    res.check("threads flat", len(set(threads)) <= 1, f"{res.figures['threads_range']}")
    res.check("fds flat", len(set(fds)) <= 1, f"{res.figures['fds_range']}")
    res.check("mailbox depth never above 1", max(depths, default=0) <= 1,
              f"max {max(depths, default=0)}")
    return res


# -------------------------------------------------------------------------------- lifecycle


def run_lifecycle(driver: Driver, graph: GraphProcess, cfg: SoakConfig) -> PartResult:
    res = PartResult("lifecycle")
    traffic = Traffic(driver, cfg.camera_hz, cfg.events_hz, cfg.seed + 1)
    failures: list[str] = []
    no_caption = 0
    t0 = time.monotonic()
    traffic.start()
    try:
        for c in range(cfg.lifecycle_cycles):
            for step in ("deactivate", "cleanup", "configure", "activate"):
                if not driver.transition(step):
                    failures.append(f"cycle {c}: {step} failed in state {driver.state()}")
                    _back_to_active(driver)
                    break
            else:
                before = driver.seen.captions
                if not driver.wait_for(lambda b=before: driver.seen.captions > b, 30.0):
                    no_caption += 1
            if not graph.alive():
                failures.append(f"cycle {c}: graph process died")
                break
            s = sample(graph.pid, time.monotonic() - t0)
            row = s.as_dict() | {"cycle": c + 1,
                                 "image_subscriptions": driver.subscriptions_on(IMAGE_TOPIC),
                                 "events_subscriptions": driver.subscriptions_on(EVENTS_TOPIC)}
            res.series.append(row)
    finally:
        traffic.stop()
    res.seconds = time.monotonic() - t0
    rows = res.series
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    rss_growth = (100.0 * (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"]
                  if rows else 0.0)
    subs = sorted({(r["image_subscriptions"], r["events_subscriptions"]) for r in rows})
    res.figures.update(
        cycles=len(rows), failures=failures[:10], cycles_without_caption=no_caption,
        threads_first_last=[first.get("threads"), last.get("threads")],
        fds_first_last=[first.get("fds"), last.get("fds")],
        rss_mib_first_last=[round(first.get("rss_mib", 0), 1), round(last.get("rss_mib", 0), 1)],
        rss_growth_pct=round(rss_growth, 2),
        rss_growth_mib_per_cycle=round((last.get("rss_mib", 0) - first.get("rss_mib", 0))
                                       / max(1, len(rows) - 1), 3),
        subscriptions_seen=subs, traffic_sent=dict(traffic.sent),
    )
    res.check("every transition succeeded", not failures, f"{len(failures)} failed")
    res.check("a caption after each activate", no_caption == 0,
              f"{no_caption} of {len(rows)} cycles without one")
    res.check("threads do not grow", rows and last["threads"] <= first["threads"],
              f"{first.get('threads')} -> {last.get('threads')}")
    res.check("fds do not grow", rows and last["fds"] <= first["fds"],
              f"{first.get('fds')} -> {last.get('fds')}")
    res.check("subscriptions do not grow", subs == [(1, 1)], f"{subs}")
    res.check(f"RSS growth < {RSS_GROWTH_TARGET_PCT}%", rss_growth < RSS_GROWTH_TARGET_PCT,
              f"{rss_growth:.2f}% over {len(rows)} cycles (first cycle as baseline)")
    return res


def _back_to_active(driver: Driver) -> None:
    """After a refused transition, walk the node back to active so the next cycle starts from
    where it should (one failure is counted once, not in every later cycle)."""
    path = {"unconfigured": "configure", "inactive": "activate"}
    for _ in range(3):
        step = path.get(driver.state())
        if step is None or not driver.transition(step):
            return


# ------------------------------------------------------------------------------- parameters


def _random_value(spec: Any, rng: np.random.Generator) -> tuple[str, Any]:
    """(category, value) for parameter `spec`: valid, out of range, NaN, inf, wrong types,
    lists."""
    lo = spec.low if spec.low is not None else 0.0
    hi = spec.high if spec.high is not None else 1.0
    common = [("string", "fast"), ("bool", bool(rng.integers(2))), ("int_list", [1, 2, 3]),
              ("double_list", [0.5, float("nan")]), ("string_list", ["a", "b"]),
              ("bool_list", [True, False])]
    if spec.kind is float:
        options = [("valid", float(rng.uniform(lo, hi))), ("valid_int", int(rng.uniform(lo, hi))),
                   ("above_range", float(hi) * 2 + 1), ("below_range", float(lo) - 1),
                   ("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf")),
                   ("int_above_range", int(hi) * 2 + 1)]
    elif spec.kind is int:
        options = [("valid", int(rng.integers(int(lo), int(hi) + 1))),
                   ("above_range", int(hi) + 1 + int(rng.integers(1000))),
                   ("below_range", int(lo) - 1), ("double", 2.5), ("nan", float("nan"))]
    elif spec.kind is bool:
        options = [("valid", bool(rng.integers(2))), ("int", 1)]
        common = [c for c in common if c[0] != "bool"]
    elif spec.kind is list:
        options = [("valid", ["CPUExecutionProvider"]),
                   ("valid_order", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
                   ("unknown_provider", ["CUDA"]), ("empty_name", [""])]
        common = [c for c in common if c[0] != "string_list"]
    elif spec.choices:
        options = [("valid", str(rng.choice(spec.choices))), ("not_a_choice", "bogus")]
        common = [c for c in common if c[0] != "string"] + [("int", 3)]
    else:
        options = [("valid", f"/tmp/soak_{int(rng.integers(1000))}/*"), ("int", 3),
                   ("double", 1.5)]
        common = [c for c in common if c[0] != "string"]
    pick = (options + common)[int(rng.integers(len(options) + len(common)))]
    return pick


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def run_params(driver: Driver, graph: GraphProcess, cfg: SoakConfig) -> PartResult:
    res = PartResult("params")
    rng = np.random.default_rng(cfg.seed + 2)
    names = list(PARAM_SPECS)
    initial = {n: driver.get_parameter(n) for n in names}
    outcomes: Counter[str] = Counter()
    violations: list[str] = []
    stalls = 0
    image = driver.publisher("image")
    t0 = time.monotonic()
    for i in range(cfg.param_calls):
        name = names[int(rng.integers(len(names)))]
        category, value = _random_value(PARAM_SPECS[name], rng)
        before = driver.get_parameter(name)
        ok, reason = driver.set_parameter(Parameter(name, value=value).to_parameter_msg())
        after = driver.get_parameter(name)
        outcomes[f"{'applied' if ok else 'refused'}:{category}"] += 1
        want = float(value) if (ok and PARAM_SPECS[name].kind is float) else value
        if ok and not _same(after, want):
            violations.append(f"{name}={value!r} applied but reads back {after!r}")
        if not ok and not reason.strip():
            violations.append(f"{name}={value!r} refused without a reason")
        if not ok and not _same(after, before):
            violations.append(f"{name}={value!r} refused but changed {before!r} -> {after!r}")
        if i % 100 == 99:  # the node still runs what it ran: a frame gives a status
            header = _header(500_000 + i, "params")
            image.publish(rgb_to_image(fm.camera_frame(i), header))
            if driver.status_for(stamp_to_ns(header.stamp), timeout=30.0) is None:
                stalls += 1
    res.seconds = time.monotonic() - t0
    for name, value in initial.items():  # put back what the other parts expect
        if not _same(driver.get_parameter(name), value) and not PARAM_SPECS[name].read_only:
            driver.set_parameter(Parameter(name, value=value).to_parameter_msg())
    applied = sum(v for k, v in outcomes.items() if k.startswith("applied:"))
    res.figures.update(calls=sum(outcomes.values()), applied=applied,
                       refused=sum(outcomes.values()) - applied,
                       outcomes=dict(sorted(outcomes.items())), violations=violations[:20],
                       frames_without_status=stalls)
    res.check("no crash", graph.alive() and driver.state() == "active",
              "graph alive and active" if graph.alive() else "DEAD")
    res.check("each call applied or refused with a reason; a refusal changes nothing",
              not violations, f"{len(violations)} violations")
    res.check("frames keep being processed between calls", stalls == 0,
              f"{stalls} test frames without a status")
    wrong_applied = [k for k in outcomes if k.startswith("applied:") and
                     k.split(":", 1)[1] not in ("valid", "valid_int", "valid_order")]
    res.check("only valid values applied", not wrong_applied, f"{wrong_applied}")
    return res


# ----------------------------------------------------------------------------------- faults


@dataclass
class _Fault:
    name: str
    file: str  # relative to the model dir ("" = the directory itself)
    backend: str
    apply: Callable[[Path], None]
    repair: Callable[[Path], None]


def _faults(saved: dict[str, bytes]) -> list[_Fault]:
    onnx_missing = "onnx/fp32/encoder_b1.onnx"
    onnx_flip = "onnx/fp32/router.onnx"

    def remove(rel: str) -> Callable[[Path], None]:
        def do(d: Path) -> None:
            saved[rel] = (d / rel).read_bytes()
            (d / rel).unlink()
        return do

    def restore(rel: str) -> Callable[[Path], None]:
        def do(d: Path) -> None:
            (d / rel).write_bytes(saved[rel])
            (d / rel).chmod(0o644)
        return do

    def flip(rel: str) -> Callable[[Path], None]:
        def do(d: Path) -> None:
            data = (d / rel).read_bytes()
            saved[rel] = data
            mid = len(data) // 2
            (d / rel).write_bytes(data[:mid] + bytes([data[mid] ^ 0x55]) + data[mid + 1:])
        return do

    def truncate(rel: str) -> Callable[[Path], None]:
        def do(d: Path) -> None:
            data = (d / rel).read_bytes()
            saved[rel] = data
            (d / rel).write_bytes(data[: len(data) // 2])
        return do

    def lock(d: Path) -> None:
        d.chmod(0)

    def unlock(d: Path) -> None:
        d.chmod(0o755)

    return [
        _Fault("missing ONNX graph", onnx_missing, "onnxruntime", remove(onnx_missing),
               restore(onnx_missing)),
        _Fault("wrong sha256 (one byte changed, same size)", onnx_flip, "onnxruntime",
               flip(onnx_flip), restore(onnx_flip)),
        _Fault("truncated model.pt", "model.pt", "torch", truncate("model.pt"),
               restore("model.pt")),
        _Fault("unreadable model directory", "", "onnxruntime", lock, unlock),
    ]


def run_faults(cfg: SoakConfig, work: Path, domain: int, params_file: str) -> PartResult:
    """A graph of its own (model_dir is read-only): not autostarted, configured by hand."""
    res = PartResult("faults")
    model = work / "fault_model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(cfg.model_dir, model)
    graph = GraphProcess(domain, params_file, str(model), work / "faults_graph.log",
                         autostart=False, obey_file_modes=True)
    driver = Driver(domain, name="tinygpt_soak_faults")
    saved: dict[str, bytes] = {}
    rows = []
    t0 = time.monotonic()
    try:
        if not driver.wait_state("unconfigured", 600.0):
            res.check("the fault graph comes up unconfigured", False, graph.log_tail())
            return res
        for fault in _faults(saved):
            row: dict[str, Any] = {"fault": fault.name, "backend": fault.backend}
            driver.set_parameter(Parameter("backend", value=fault.backend).to_parameter_msg())
            fault.apply(model)
            since = time.monotonic_ns()
            row["configure_refused"] = not driver.transition("configure", timeout=120.0)
            row["state_after"] = driver.state()
            target = str(model / fault.file) if fault.file else str(model)
            driver.wait_for(lambda s=since: any("configure failed" in t
                                                for t in driver.logs_since(s)), 5.0)
            lines = [t for t in driver.logs_since(since) if "configure failed" in t]
            row["message"] = lines[0] if lines else ""
            row["names_file"] = bool(lines) and target in lines[0]
            fault.repair(model)
            row["configure_after_repair"] = driver.transition("configure", timeout=120.0)
            if row["configure_after_repair"]:
                driver.transition("cleanup")
            rows.append(row)
    finally:
        driver.close()
        graph.stop()
        for p in [model, *model.rglob("*")] if model.exists() else []:
            if p.is_dir():
                p.chmod(0o755)
    res.seconds = time.monotonic() - t0
    res.series = rows
    res.figures["graph_user"] = (f"uid {os.geteuid()}"
                                 + (" without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH"
                                    if os.geteuid() == 0 else ""))
    for row in rows:
        res.check(f"{row['fault']}: configure fails naming the file, node stays unconfigured, "
                  "configure succeeds after repair",
                  row["configure_refused"] and row["state_after"] == "unconfigured"
                  and row["names_file"] and row["configure_after_repair"],
                  row["message"][:300] or "no 'configure failed' log line")
    return res


# -------------------------------------------------------------------------------------- run


def run_soak_suite(cfg: SoakConfig, domain: int, out: Callable[[str], None] = print,
                   on_part: Callable[[list[PartResult]], None] | None = None
                   ) -> list[PartResult]:
    """Run the selected parts; one graph process for fuzz, soak, lifecycle and params (in the
    order given), another for faults. `on_part(results so far)` runs after each part (the CLI
    saves soak.json there, so a later failure keeps the earlier figures)."""
    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="tinygpt_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    params_file = _params_file(work, cfg.backend)
    results: list[PartResult] = []
    graph_parts = [p for p in cfg.parts if p != "faults"]
    if graph_parts:
        graph = GraphProcess(domain, params_file, cfg.model_dir, work / "graph.log")
        driver = Driver(domain)
        try:
            if not driver.wait_state("active", 600.0):
                raise RuntimeError(f"soak: the graph did not become active:\n{graph.log_tail()}")
            if not driver.wait_manager("active", 60.0):
                raise RuntimeError("soak: the lifecycle manager did not finish its start-up:\n"
                                   f"{graph.log_tail()}")
            runners = {"fuzz": run_fuzz, "soak": run_soak, "lifecycle": run_lifecycle,
                       "params": run_params}
            for part in graph_parts:
                out(f"[soak] {part} ...")
                res = runners[part](driver, graph, cfg)
                results.append(res)
                out(format_part(res))
                if on_part is not None:
                    on_part(results)
                if not graph.alive():
                    out(f"[soak] the graph process died:\n{graph.log_tail()}")
                    break
        finally:
            driver.close()
            code = graph.stop()
            out(f"[soak] graph stopped with exit code {code} (log {graph.log_path})")
    if "faults" in cfg.parts:
        out("[soak] faults ...")
        res = run_faults(cfg, work, domain, params_file)
        results.append(res)
        out(format_part(res))
        if on_part is not None:
            on_part(results)
    return results


def format_part(res: PartResult) -> str:
    lines = [f"== {res.name}: {'all targets met' if res.ok else 'TARGET MISSED'} "
             f"({res.seconds:.1f} s)"]
    for k, v in res.figures.items():
        lines.append(f"  {k}: {v}")
    for t in res.targets:
        lines.append(f"  [{'ok' if t.met else 'MISSED'}] {t.what}: {t.detail}")
    if res.name == "faults":
        for row in res.series:
            lines.append(f"  - {row['fault']} ({row['backend']}): refused="
                         f"{row['configure_refused']}, state {row['state_after']}, "
                         f"after repair {row['configure_after_repair']}")
    return "\n".join(lines)


def as_json(results: list[PartResult], cfg: SoakConfig) -> dict[str, Any]:
    return {
        "config": {k: v for k, v in vars(cfg).items()},
        "parts": [{"name": r.name, "seconds": r.seconds, "ok": r.ok, "figures": r.figures,
                   "targets": [vars(t) for t in r.targets], "series": r.series}
                  for r in results],
    }
