"""Replay one bag through one engine per configuration, the way the node would see it.

Why: users judge the package on their own recordings. This deserializes each message with rclpy
and converts it with the node's own functions (`ros.conversions`), then steps every
configuration's engine on it in a single pass over the bag. Damage never stops the replay: a
message that does not deserialize, convert or process is skipped and counted as an issue.
"""

from __future__ import annotations

import time
from typing import Any

from tinygpt_ros.evaluation.configs import is_budget_setting
from tinygpt_ros.evaluation.issues import Issues
from tinygpt_ros.evaluation.progress import progress_bar
from tinygpt_ros.evaluation.results import BagJob, BagResult, FrameRow
from tinygpt_ros.evaluation.source import BagSource
from tinygpt_ros.ops.event_codecs import Evt3Decoder
from tinygpt_ros.runtime.threads import (
    DEFAULT_BLAS_THREADS,
    DEFAULT_INTRA_OP_THREADS,
    apply_thread_limits,
)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
EVENT_TYPES = ("sensor_msgs/msg/PointCloud2", "event_camera_msgs/msg/EventPacket")

def converter(msgtype: str) -> tuple[type, Any] | None:
    """(rclpy message class, numpy conversion) for a supported input type, else None. A camera
    frame converts to (RGB, pixel_scale) as the node decodes it, an event window to events."""
    from tinygpt_ros.ros import conversions as conv
    from tinygpt_ros.ros.bag_player import message_class

    evt3 = Evt3Decoder()  # one EVT 3.0 stream state per topic: converter() runs once per topic

    def event_packet(msg: Any) -> Any:
        # the node's defaults: sensor size from the packet, scaled onto the model's grid
        return conv.events_on_grid(msg, True, "relative", conv.NO_LIMITS_GIVEN,
                                   conv.EventGeometry(), evt3).events

    table = {
        "sensor_msgs/msg/Image": conv.camera_frame,
        "sensor_msgs/msg/CompressedImage": conv.camera_frame,
        "sensor_msgs/msg/PointCloud2": conv.pointcloud2_to_events,
        "event_camera_msgs/msg/EventPacket": event_packet,
    }
    fn = table.get(msgtype)
    if fn is None:
        return None
    try:
        return message_class(msgtype), fn
    except (ImportError, AttributeError, ValueError):
        return None


def _resolve_topics(source: BagSource, job: BagJob, issues: Issues) -> dict[str, str]:
    used: dict[str, str] = {}
    have = sorted(source.topics)
    for role, topic, allowed in (("image", job.image_topic, IMAGE_TYPES),
                                 ("events", job.events_topic, EVENT_TYPES)):
        if not topic:
            continue
        if topic not in source.topics:
            what = "captions" if role == "image" else "gestures"
            issues.add("topic_missing", f"{role} topic {topic!r} is not in the bag (it has "
                       f"{have}): no {what} from this bag", "warning")
            continue
        msgtype = source.topics[topic][0]
        if msgtype not in allowed or converter(msgtype) is None:
            issues.add("topic_type", f"{role} topic {topic!r} has type {msgtype}, not one of "
                       f"{list(allowed)} (or its message package is not installed)", "error")
            continue
        used[role] = topic
    return used


def evaluate_bag(job: BagJob) -> BagResult:
    """Stream one bag through one engine per configuration (a single pass over the bag)."""
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.ros.conversions import ConversionError, stamp_to_ns

    t_start = time.perf_counter()
    # The node's thread limits (runtime/threads.py), set by the process itself, not by
    # OMP_NUM_THREADS: the figures are then what the robot gets. --threads widens intra-op.
    apply_thread_limits(DEFAULT_BLAS_THREADS, job.threads or DEFAULT_INTRA_OP_THREADS)
    if job.backend == "torch":  # the onnxruntime backend runs without torch
        import torch

        torch.manual_seed(0)
    issues = Issues(job.name)
    source = BagSource(job.path, issues)
    used = _resolve_topics(source, job, issues) if source.readable else {}
    rows: dict[str, list[FrameRow]] = {name: [] for name in job.configs}
    result = BagResult(job.path, job.name, dict(source.topics), used, 0, rows, issues.items,
                       0.0, False)
    if not used:
        if source.readable:
            issues.add("nothing_to_evaluate", "none of the configured topics can be evaluated",
                       "error")
        result.seconds = time.perf_counter() - t_start
        return result
    engines = {}
    for name, knobs in job.configs.items():
        engine = load_engine(job.model_dir, backend=job.backend,
                             threads=job.threads or DEFAULT_INTRA_OP_THREADS)
        for k, v in knobs.items():
            if not is_budget_setting(k):
                engine.set_knob(k, v)
        engine.budget.configure_from(knobs)
        engines[name] = engine
    role_of = {topic: role for role, topic in used.items()}
    converters = {topic: converter(source.topics[topic][0]) for topic in used.values()}
    total = sum(source.topics[t][1] for t in used.values())
    if job.max_frames is not None and "image" in used:
        total = min(total, round(total * job.max_frames / max(source.topics[used["image"]][1], 1)))
    bar = progress_bar(total, job.name, enabled=job.progress)
    images = 0
    index = -1
    for msg in source.messages(set(used.values())):
        role = role_of[msg.topic]
        if role == "image":
            if job.max_frames is not None and images >= job.max_frames:
                break
            images += 1
        index += 1
        result.messages_read += 1
        bar.update()
        cls, convert = converters[msg.topic]
        t0 = time.perf_counter()
        where = f"{msg.topic} @ {msg.timestamp_ns}"
        try:
            ros_msg = deserialize(msg.rawdata, cls)
        except Exception as exc:
            issues.add("deserialize", f"messages that failed to deserialize on {msg.topic} "
                       "(skipped)", example=f"{where}: {exc}", aggregate=True)
            continue
        try:
            data = convert(ros_msg)
        except ConversionError as exc:
            issues.add(f"conversion_{exc.kind}", f"messages on {msg.topic} that could not be "
                       f"converted ({exc.kind}; skipped)", example=f"{where}: {exc}",
                       aggregate=True)
            continue
        conversion_ms = (time.perf_counter() - t0) * 1e3
        stamp_ns = stamp_to_ns(ros_msg.header.stamp) or msg.timestamp_ns
        for name, engine in engines.items():
            try:
                if role == "image":
                    res = engine.process_frame(data[0], stamp_ns // 1000, data[1])
                else:
                    res = engine.process_events(data, stamp_ns // 1000)
            except ValueError as exc:
                issues.add("engine_input", "messages the engine refused (skipped)",
                           example=f"{where} [{name}]: {exc}", aggregate=True)
                continue
            except Exception as exc:  # like the node: one bad step must not end the run
                issues.add("engine_error", "messages on which the engine failed (skipped)",
                           "error", example=f"{where} [{name}]: {exc!r}", aggregate=True)
                continue
            rows[name].append(FrameRow(
                index, res.record.modality, stamp_ns, msg.timestamp_ns, res.record,
                res.caption, res.gesture, float(res.gesture_confidence), conversion_ms))
    bar.close()
    for engine in engines.values():
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    result.ok = any(rows.values())
    if not result.ok:
        issues.add("nothing_to_evaluate", "no message of the bag could be evaluated", "error")
    result.seconds = time.perf_counter() - t_start
    return result


def deserialize(raw: bytes, cls: type) -> Any:
    from rclpy.serialization import deserialize_message

    return deserialize_message(raw, cls)
