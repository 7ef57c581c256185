"""What one bag's replay produces: the job a worker gets and the result it sends back.

Why a module of its own: the replay, the worker pools (local processes, Ray), the scoring and the
live comparison all exchange these plain, picklable records and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinygpt_ros.evaluation.issues import Issue
from tinygpt_ros.spec.types import ComputeRecord


@dataclass
class FrameRow:
    """One engine step of one configuration."""

    index: int  # message index in the evaluated stream (both topics, bag order)
    modality: str  # frame | events
    stamp_ns: int  # header stamp (the bag's log time when the header has none)
    bag_ns: int
    record: ComputeRecord
    caption: str | None = None
    gesture: str | None = None
    confidence: float = 0.0
    conversion_ms: float = 0.0  # deserialize + convert, shared by the configs


@dataclass
class BagJob:
    """Everything a worker needs to replay one bag (picklable, paths as strings)."""

    path: str
    name: str
    model_dir: str
    backend: str
    configs: dict[str, dict[str, Any]]  # full knob dicts
    image_topic: str
    events_topic: str
    max_frames: int | None = None
    threads: int | None = None
    progress: bool = True


@dataclass
class BagResult:
    path: str
    name: str
    topics: dict[str, tuple[str, int]]
    used_topics: dict[str, str]  # role (image, events) -> topic
    messages_read: int  # messages of the used topics read from the bag (the evaluated prefix)
    rows: dict[str, list[FrameRow]]
    issues: list[Issue]
    seconds: float
    ok: bool  # contributed any engine output
