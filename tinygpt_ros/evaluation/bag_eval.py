"""`tinygpt-ros eval`: replay rosbag2 bags through the engine the node runs and score them.

Users judge the package on their own recordings, so this reads real bags (mcap or sqlite3, via
`bags.reader`), deserializes with rclpy and converts with the node's own functions
(`ros.conversions`), then streams every message through one engine per configuration in a
single pass over the bag. Outputs are matched to the references by header stamp:

- caption span [start_ns, end_ns): the hypothesis is the caption shown at the last image in it;
- gesture span: majority of the per-window predictions after the first `GESTURE_WARMUP` windows
  of the span (ties: the class reached first).

All configurations of all bags are scored together (`metrics.caption_scores_many`), so CIDEr-D's
reference statistics are the same for every configuration. Damage never stops the run: an
unreadable bag, a truncated mcap (its complete records are salvaged), a missing topic, a message
that does not deserialize or convert, references outside the bag: each becomes an issue listed in
the report, and everything valid is still evaluated. Bags run in parallel worker processes
(`--workers`, spawn). `--live` additionally plays each bag into the real node graph and lists
every difference from the offline output (see `live.py`).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinygpt_ros.bags.reader import BagMessage, bag_topics, iter_bag
from tinygpt_ros.evaluation.quality import CAPTION_CONFIGS, ComputeSummary
from tinygpt_ros.spec.config import KNOB_SPECS, Knobs
from tinygpt_ros.spec.types import ComputeRecord

GESTURE_WARMUP = 2  # windows at the start of a gesture span that do not vote
DEFAULT_BASE = "sttf+anc"  # sweeps without an explicit base apply on top of this config
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
EVENT_TYPES = ("sensor_msgs/msg/PointCloud2", "event_camera_msgs/msg/EventPacket")
_MAX_EXAMPLES = 5


# ------------------------------------------------------------------------------------ issues


@dataclass
class Issue:
    """One kind of damage in one bag, aggregated: how often, and the first few examples."""

    bag: str
    kind: str
    severity: str  # "warning" (evaluation went on) | "error" (that bag/topic contributed nothing)
    message: str
    count: int = 1
    examples: list[str] = field(default_factory=list)


class Issues:
    def __init__(self, bag: str) -> None:
        self.bag = bag
        self.items: list[Issue] = []
        self._index: dict[tuple[str, str], Issue] = {}

    def add(self, kind: str, message: str, severity: str = "warning",
            example: str | None = None, aggregate: bool = False) -> None:
        """Record an issue; `aggregate` folds repeats of `kind` into one entry with a count."""
        if aggregate and (kind, severity) in self._index:
            item = self._index[(kind, severity)]
            item.count += 1
            if example is not None and len(item.examples) < _MAX_EXAMPLES:
                item.examples.append(example)
            return
        item = Issue(self.bag, kind, severity, message,
                     examples=[example] if example is not None else [])
        self.items.append(item)
        if aggregate:
            self._index[(kind, severity)] = item


# ------------------------------------------------------------------------------------ configs


def _parse_value(knob: str, raw: str) -> Any:
    spec = KNOB_SPECS.get(knob)
    if spec is None:
        raise ValueError(f"configs: unknown knob {knob!r}; known: {', '.join(KNOB_SPECS)}")
    text = raw.strip()
    if spec.kind is bool:
        low = text.lower()
        if low not in ("true", "false", "1", "0", "on", "off"):
            raise ValueError(f"configs: {knob} takes true/false, got {raw!r}")
        value: Any = low in ("true", "1", "on")
    elif spec.kind is str:
        value = text
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"configs: {knob} needs numbers, got {raw!r}") from None
    try:
        return Knobs.validated(knob, value)
    except ValueError as exc:
        raise ValueError(f"configs: {exc}") from None


def parse_configs(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Config specs -> {name: knob overrides}.

    A spec is a named config of `quality.CAPTION_CONFIGS` (dense, sttf, anc, sttf+anc) or a sweep
    `[base:]knob=v1,v2,...` that yields one config per value on top of `base` (default sttf+anc),
    named `knob=v` (or `base:knob=v`)."""
    if isinstance(specs, str) or not specs:
        raise ValueError("configs: give at least one config name or sweep")
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        spec = spec.strip()
        if "=" not in spec:
            if spec not in CAPTION_CONFIGS:
                raise ValueError(f"configs: unknown config {spec!r}; use one of "
                                 f"{list(CAPTION_CONFIGS)} or a sweep like "
                                 "fusion_threshold=0.2,0.5")
            out[spec] = dict(CAPTION_CONFIGS[spec])
            continue
        head, _, values = spec.partition("=")
        base, _, knob = head.rpartition(":")
        base = base or DEFAULT_BASE
        if base not in CAPTION_CONFIGS:
            raise ValueError(f"configs: unknown base config {base!r} in {spec!r}; use one of "
                             f"{list(CAPTION_CONFIGS)}")
        raws = [v for v in values.split(",") if v.strip()]
        if not raws:
            raise ValueError(f"configs: sweep {spec!r} has no values")
        for raw in raws:
            value = _parse_value(knob.strip(), raw)
            prefix = "" if base == DEFAULT_BASE else f"{base}:"
            out[f"{prefix}{knob.strip()}={raw.strip()}"] = {**CAPTION_CONFIGS[base],
                                                           knob.strip(): value}
    return out


def full_knobs(overrides: dict[str, Any]) -> dict[str, Any]:
    """Every knob: the node's defaults (config/edge.yaml == core.config.Knobs) + overrides."""
    knobs = Knobs()
    for name, value in overrides.items():
        knobs.set(name, value)
    return knobs.as_dict()


# ------------------------------------------------------------------------------------ refs


@dataclass
class CaptionSpan:
    start_ns: int
    end_ns: int
    captions: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # kind, motion, ... passed through


@dataclass
class GestureSpan:
    start_ns: int
    end_ns: int
    label: str


@dataclass
class Refs:
    path: str
    captions: list[CaptionSpan]
    gestures: list[GestureSpan]


def _span_bounds(item: Any, where: str) -> tuple[int, int]:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object with start_ns, end_ns")
    for key in ("start_ns", "end_ns"):
        v = item.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{where}.{key} must be an integer (nanoseconds), got {v!r}")
    if item["end_ns"] <= item["start_ns"]:
        raise ValueError(f"{where}.end_ns ({item['end_ns']}) must be > start_ns "
                         f"({item['start_ns']})")
    return int(item["start_ns"]), int(item["end_ns"])


def parse_refs(doc: Any, path: str = "refs") -> Refs:
    """Validate the references JSON (the sample bag's refs.json schema, `bags/sample.py`):
    {"captions": [{start_ns, end_ns, captions: [str, ...]}], "gestures": [{start_ns, end_ns,
    label}]}; both lists optional. Errors name the offending field."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a JSON object with 'captions' and/or 'gestures'")
    caps, gests = doc.get("captions", []), doc.get("gestures", [])
    if not isinstance(caps, list) or not isinstance(gests, list):
        raise ValueError(f"{path}: 'captions' and 'gestures' must be lists")
    spans = []
    for i, item in enumerate(caps):
        where = f"{path}: captions[{i}]"
        start, end = _span_bounds(item, where)
        texts = item.get("captions")
        if (not isinstance(texts, list) or not texts
                or not all(isinstance(t, str) and t.strip() for t in texts)):
            raise ValueError(f"{where}.captions must be a non-empty list of non-empty strings")
        extra = {k: item[k] for k in ("kind", "motion") if k in item}
        spans.append(CaptionSpan(start, end, list(texts), extra))
    gspans = []
    for i, item in enumerate(gests):
        where = f"{path}: gestures[{i}]"
        start, end = _span_bounds(item, where)
        label = item.get("label")
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}.label must be a non-empty string")
        gspans.append(GestureSpan(start, end, label))
    return Refs(path, spans, gspans)


def load_refs(path: str | Path) -> Refs:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"refs: {str(p)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"refs: {str(p)!r} is not readable JSON ({exc})") from None
    return parse_refs(doc, str(p))


def default_refs_path(bag: str | Path) -> Path:
    """refs.json inside the bag directory (next to the file for a bare .mcap/.db3)."""
    p = Path(bag)
    return (p if p.is_dir() else p.parent) / "refs.json"


# ------------------------------------------------------------------------------------ matching


def span_hypotheses(
    stamps: Sequence[int], captions: Sequence[str | None], spans: Sequence[CaptionSpan]
) -> list[str | None]:
    """Per span: the caption shown at the last image (largest stamp, later in the bag on ties)
    with start_ns <= stamp < end_ns; None when the bag has no image in the span."""
    out: list[str | None] = []
    for span in spans:
        best = None
        for i, stamp in enumerate(stamps):
            if span.start_ns <= stamp < span.end_ns and (best is None or stamp >= stamps[best]):
                best = i
        out.append(None if best is None else (captions[best] or ""))
    return out


def span_gestures(
    stamps: Sequence[int], predictions: Sequence[str | None], spans: Sequence[GestureSpan],
    warmup: int = GESTURE_WARMUP,
) -> list[tuple[str | None, int]]:
    """Per span: (majority of the predictions of its windows after the first `warmup`, number of
    windows in the span). Windows are ordered by stamp; a tie goes to the class reached first;
    None when fewer than warmup + 1 windows fall in the span."""
    out = []
    for span in spans:
        inside = sorted((s, i) for i, s in enumerate(stamps) if span.start_ns <= s < span.end_ns)
        votes = Counter(predictions[i] for _, i in inside[warmup:] if predictions[i])
        out.append((votes.most_common(1)[0][0] if votes else None, len(inside)))
    return out


# ------------------------------------------------------------------------------------ bags


_MCAP_MAGIC = b"\x89MCAP0\r\n"


def _mcap_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".mcap" else []
    if path.is_dir():
        return sorted(path.glob("*.mcap"))
    return []


def _string(buf: bytes, off: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, off)
    return buf[off + 4:off + 4 + n].decode("utf-8"), off + 4 + n


class McapSalvage:
    """Read the complete records of an mcap file whose summary/footer is missing or damaged
    (a recording cut off by a crash or power loss), which `rosbags` refuses to open.

    Records are read in file order up to the first incomplete one; a chunk that fails to
    decompress or to pass its CRC is skipped. Messages are yielded chunk by chunk, sorted by log
    time inside each chunk (recorders write chunks in time order)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.truncated_at: int | None = None  # byte offset of the first incomplete record
        self.bad_chunks: list[str] = []

    @staticmethod
    def _records(buf: bytes) -> Iterator[tuple[int, bytes]]:
        off = 0
        while off + 9 <= len(buf):
            op = buf[off]
            (n,) = struct.unpack_from("<Q", buf, off + 1)
            if off + 9 + n > len(buf):
                return
            yield op, buf[off + 9:off + 9 + n]
            off += 9 + n

    def _file_records(self, f: Any) -> Iterator[tuple[int, bytes]]:
        if f.read(8) != _MCAP_MAGIC:
            raise ValueError(f"{self.path}: not an mcap file (bad magic)")
        while True:
            pos = f.tell()
            head = f.read(9)
            if not head:
                return
            if len(head) < 9:
                self.truncated_at = pos
                return
            op = head[0]
            (n,) = struct.unpack_from("<Q", head, 1)
            body = f.read(n)
            if len(body) < n:
                self.truncated_at = pos
                return
            if op == 0x0F:  # DataEnd: the summary section follows, nothing new in it
                return
            yield op, body

    def _decompress(self, body: bytes) -> bytes | None:
        from binascii import crc32

        usize, crc = struct.unpack_from("<QI", body, 16)
        compression, off = _string(body, 28)
        (csize,) = struct.unpack_from("<Q", body, off)
        data = body[off + 8:off + 8 + csize]
        try:
            if compression == "zstd":
                try:
                    from compression import zstd  # type: ignore[import-not-found]
                except ImportError:
                    from backports import zstd  # type: ignore[import-not-found,no-redef]
                raw = zstd.decompress(data)
            elif compression == "lz4":
                from lz4.frame import decompress as lz4_decompress

                raw = lz4_decompress(data)
            elif compression == "":
                raw = data
            else:
                self.bad_chunks.append(f"unsupported chunk compression {compression!r}")
                return None
        except Exception as exc:
            self.bad_chunks.append(f"chunk does not decompress ({exc})")
            return None
        if len(raw) != usize or (crc and crc32(raw) != crc):
            self.bad_chunks.append("chunk size/CRC mismatch")
            return None
        return raw

    def scan(self, wanted: set[str] | None = None, with_data: bool = True
             ) -> Iterator[tuple[str, str, int, bytes | None]]:
        """(topic, msgtype, log_time_ns, raw or None) of every readable message."""
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}

        def meta(op: int, body: bytes) -> None:
            if op == 0x03:
                sid = struct.unpack_from("<H", body, 0)[0]
                schemas[sid] = _string(body, 2)[0]
            elif op == 0x04:
                cid, sid = struct.unpack_from("<HH", body, 0)
                topic, _ = _string(body, 4)
                channels[cid] = (topic, schemas.get(sid, ""))

        def message(body: bytes) -> tuple[str, str, int, bytes | None] | None:
            cid, _, log_time = struct.unpack_from("<HIQ", body, 0)
            topic, msgtype = channels.get(cid, ("", ""))
            if not topic or (wanted is not None and topic not in wanted):
                return None
            return topic, msgtype, int(log_time), (body[22:] if with_data else None)

        with open(self.path, "rb") as f:
            for op, body in self._file_records(f):
                if op in (0x03, 0x04):
                    meta(op, body)
                elif op == 0x05:
                    m = message(body)
                    if m is not None:
                        yield m
                elif op == 0x06:
                    raw = self._decompress(body)
                    if raw is None:
                        continue
                    batch = []
                    for op2, body2 in self._records(raw):
                        if op2 in (0x03, 0x04):
                            meta(op2, body2)
                        elif op2 == 0x05:
                            m = message(body2)
                            if m is not None:
                                batch.append(m)
                    batch.sort(key=lambda m: m[2])
                    yield from batch


class BagSource:
    """The messages of one bag: through `bags.reader` when the bag is intact, through
    `McapSalvage` when an mcap's end is missing. Problems go to `issues`."""

    def __init__(self, path: str | Path, issues: Issues) -> None:
        self.path = Path(path)
        self.issues = issues
        self.salvage: list[McapSalvage] = []
        self.topics: dict[str, tuple[str, int]] = {}
        self.readable = False
        try:
            self.topics = bag_topics(self.path)
            self.readable = True
            return
        except ValueError as exc:
            error = str(exc)
        files = _mcap_files(self.path)
        if not files:
            issues.add("bag_unreadable", error, "error")
            return
        try:
            counts: dict[str, list[Any]] = {}
            for f in files:
                s = McapSalvage(f)
                for topic, msgtype, _, _ in s.scan(with_data=False):
                    counts.setdefault(topic, [msgtype, 0])[1] += 1
                self.salvage.append(s)
        except (OSError, ValueError, struct.error) as exc:
            issues.add("bag_unreadable", f"{error}; salvage failed too: {exc}", "error")
            return
        if not counts:
            issues.add("bag_unreadable", f"{error}; no complete message could be salvaged",
                       "error")
            return
        self.topics = {t: (m, n) for t, (m, n) in counts.items()}
        self.readable = True
        where = ", ".join(f"{s.path.name} byte {s.truncated_at}" for s in self.salvage
                          if s.truncated_at is not None) or "footer/summary damaged"
        bad = sum(len(s.bad_chunks) for s in self.salvage)
        issues.add("bag_truncated",
                   f"bag is truncated or its index is damaged ({error}); salvaged "
                   f"{sum(n for _, n in counts.values())} complete message(s) up to {where}"
                   + (f"; skipped {bad} damaged chunk(s)" if bad else ""))

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        if not self.readable or not topics:
            return
        if self.salvage:
            for s in self.salvage:
                for topic, msgtype, stamp, raw in s.scan(topics):
                    yield BagMessage(topic, msgtype, stamp, raw or b"")
            return
        n = 0
        try:
            for msg in iter_bag(self.path, sorted(topics)):
                n += 1
                yield msg
        except ValueError as exc:
            self.issues.add("bag_corrupt", f"reading stopped after {n} message(s): {exc}")


# ------------------------------------------------------------------------------------ one bag


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


class Progress:
    """A plain stderr progress bar (no dependencies): redraws one line on a terminal, prints a
    line per 10 % otherwise (log files, worker processes)."""

    def __init__(self, total: int, label: str, stream: Any = None, enabled: bool = True) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._decile = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.2 or self.done >= self.total:
                self._last = now
                self.stream.write("\r" + self._line(now))
                self.stream.flush()
        else:
            decile = min(10, 10 * self.done // self.total)
            if decile > self._decile:
                self._decile = decile
                self.stream.write(self._line(now) + "\n")
                self.stream.flush()

    def _line(self, now: float) -> str:
        frac = min(1.0, self.done / self.total)
        width = 28
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = self.done / max(now - self.t0, 1e-6)
        eta = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
        return (f"[eval] {self.label} [{bar}] {self.done}/{self.total} msgs "
                f"{100 * frac:3.0f}% {rate:5.1f} msg/s eta {eta:4.0f}s")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _converter(msgtype: str) -> tuple[type, Any] | None:
    """(rclpy message class, numpy conversion) for a supported input type, else None."""
    from tinygpt_ros.ros import conversions as conv
    from tinygpt_ros.ros.bag_player import message_class

    table = {
        "sensor_msgs/msg/Image": conv.image_to_rgb,
        "sensor_msgs/msg/CompressedImage": conv.compressed_to_rgb,
        "sensor_msgs/msg/PointCloud2": conv.pointcloud2_to_events,
        "event_camera_msgs/msg/EventPacket": conv.event_packet_to_events,
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
        if msgtype not in allowed or _converter(msgtype) is None:
            issues.add("topic_type", f"{role} topic {topic!r} has type {msgtype}, not one of "
                       f"{list(allowed)} (or its message package is not installed)", "error")
            continue
        used[role] = topic
    return used


def evaluate_bag(job: BagJob) -> BagResult:
    """Stream one bag through one engine per configuration (a single pass over the bag)."""
    import torch

    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.ros.conversions import ConversionError, stamp_to_ns

    t_start = time.perf_counter()
    if job.threads:
        torch.set_num_threads(job.threads)
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
        engine = load_engine(job.model_dir, backend=job.backend)
        for k, v in knobs.items():
            engine.set_knob(k, v)
        engines[name] = engine
    role_of = {topic: role for role, topic in used.items()}
    converters = {topic: _converter(source.topics[topic][0]) for topic in used.values()}
    total = sum(source.topics[t][1] for t in used.values())
    if job.max_frames is not None and "image" in used:
        total = min(total, round(total * job.max_frames / max(source.topics[used["image"]][1], 1)))
    bar = Progress(total, job.name, enabled=job.progress)
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
            ros_msg = _deserialize(msg.rawdata, cls)
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
                    res = engine.process_frame(data, stamp_ns // 1000)
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


def _deserialize(raw: bytes, cls: type) -> Any:
    from rclpy.serialization import deserialize_message

    return deserialize_message(raw, cls)


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# ------------------------------------------------------------------------------------ merge


def _span_extra(span: CaptionSpan) -> dict[str, Any]:
    return dict(span.extra)


def score_results(
    results: Sequence[BagResult], refs_of: dict[str, Refs | None], configs: Sequence[str],
    issues: list[Issue],
) -> dict[str, Any]:
    """Match every bag's outputs to its references and score all configurations together.

    `refs_of` maps bag name -> Refs (one Refs object may be shared by several bags: a span is
    then credited to the bag that has images in it)."""
    from tinygpt_ros.evaluation.metrics import caption_scores_many

    groups: dict[int, tuple[Refs, list[BagResult]]] = {}
    for r in results:
        refs = refs_of.get(r.name)
        if refs is not None:
            groups.setdefault(id(refs), (refs, []))[1].append(r)
    ref_map: dict[str, list[str]] = {}
    hyps: dict[str, dict[str, str]] = {c: {} for c in configs}
    spans_out: list[dict[str, Any]] = []
    gest_out: list[dict[str, Any]] = []
    g_correct: dict[str, int] = {c: 0 for c in configs}
    g_scored = 0
    n_caption_spans = n_gesture_spans = 0
    for gi, (refs, bags) in enumerate(groups.values()):
        label = refs.path
        n_caption_spans += len(refs.captions)
        n_gesture_spans += len(refs.gestures)
        per_bag = {}
        for r in bags:
            per_cfg = {}
            for c in configs:
                frames = [row for row in r.rows[c] if row.modality == "frame"]
                windows = [row for row in r.rows[c] if row.modality == "events"]
                per_cfg[c] = (
                    span_hypotheses([f.stamp_ns for f in frames], [f.caption for f in frames],
                                    refs.captions),
                    span_gestures([w.stamp_ns for w in windows], [w.gesture for w in windows],
                                  refs.gestures),
                )
            per_bag[r.name] = per_cfg
        missing_caps, missing_gest, short_gest = [], [], []
        for si, span in enumerate(refs.captions):
            owners = [b for b in per_bag if per_bag[b][configs[0]][0][si] is not None]
            if not owners:
                missing_caps.append(f"captions[{si}] [{span.start_ns}, {span.end_ns})")
                continue
            if len(owners) > 1:
                issues.append(Issue(owners[0], "ref_span_ambiguous",
                                    "warning", f"{label} captions[{si}] has images in several "
                                    f"bags {owners}; scored on {owners[0]}"))
            owner = owners[0]
            sid = f"{gi}:{si}"
            ref_map[sid] = list(span.captions)
            entry = {"id": sid, "bag": owner, "refs": label, "span": si,
                     "start_ns": span.start_ns, "end_ns": span.end_ns,
                     "reference": span.captions[0], **_span_extra(span), "hypotheses": {}}
            for c in configs:
                h = per_bag[owner][c][0][si] or ""
                hyps[c][sid] = h
                entry["hypotheses"][c] = h
            spans_out.append(entry)
        for si, span in enumerate(refs.gestures):
            owners = [b for b in per_bag if per_bag[b][configs[0]][1][si][1] > 0]
            if not owners:
                missing_gest.append(f"gestures[{si}] [{span.start_ns}, {span.end_ns})")
                continue
            owner = owners[0]
            n_windows = per_bag[owner][configs[0]][1][si][1]
            if n_windows <= GESTURE_WARMUP:
                short_gest.append(f"gestures[{si}] ({n_windows} window(s))")
            g_scored += 1
            entry = {"bag": owner, "refs": label, "span": si, "start_ns": span.start_ns,
                     "end_ns": span.end_ns, "label": span.label, "windows": n_windows,
                     "predictions": {}}
            for c in configs:
                pred = per_bag[owner][c][1][si][0]
                entry["predictions"][c] = pred
                g_correct[c] += int(pred == span.label)
            gest_out.append(entry)
        bag_names = ", ".join(b.name for b in bags)
        if missing_caps:
            issues.append(Issue(bag_names, "ref_span_not_in_bag", "warning",
                                f"{label}: caption span(s) with no image in the "
                                "evaluated part of the bag (not scored)", len(missing_caps),
                                missing_caps[:_MAX_EXAMPLES]))
        if missing_gest:
            issues.append(Issue(bag_names, "ref_span_not_in_bag", "warning",
                                f"{label}: gesture span(s) with no event window in "
                                "the evaluated part of the bag (not scored)", len(missing_gest),
                                missing_gest[:_MAX_EXAMPLES]))
        if short_gest:
            issues.append(Issue(bag_names, "gesture_span_short", "warning",
                                f"gesture span(s) with <= {GESTURE_WARMUP} windows: no vote, "
                                "counted as wrong", len(short_gest), short_gest[:_MAX_EXAMPLES]))
    captions = caption_scores_many(hyps, ref_map) if ref_map else None
    gestures = None
    if g_scored:
        gestures = {c: {"accuracy": g_correct[c] / g_scored, "correct": g_correct[c],
                        "spans": g_scored} for c in configs}
    return {
        "references": {"caption_spans": n_caption_spans, "caption_spans_scored": len(ref_map),
                       "gesture_spans": n_gesture_spans, "gesture_spans_scored": g_scored},
        "captions": captions, "gestures": gestures, "spans": spans_out,
        "gesture_spans": gest_out,
    }


def compute_summaries(results: Sequence[BagResult], configs: Sequence[str]) -> dict[str, Any]:
    """quality.ComputeSummary per configuration and modality over all bags."""
    out: dict[str, Any] = {}
    for c in configs:
        per: dict[str, Any] = {}
        for modality in ("frame", "events"):
            recs = [row.record for r in results for row in r.rows[c] if row.modality == modality]
            if recs:
                s = ComputeSummary.of(recs)
                d = asdict(s)
                d["flops_ratio"] = s.total_gflops / s.dense_gflops if s.dense_gflops else None
                conv = [row.conversion_ms for r in results for row in r.rows[c]
                        if row.modality == modality]
                d["conversion_ms_mean"] = sum(conv) / len(conv)
                per[modality] = d
        out[c] = per
    return out


def frame_columns(result: BagResult, config: str) -> dict[str, list[Any]]:
    """Per-frame records of one bag and configuration, column-wise (compact JSON)."""
    cols: dict[str, list[Any]] = {k: [] for k in (
        "index", "modality", "stamp_ns", "tokens_recomputed", "tokens_fused", "branch",
        "flops_total", "flops_encoder", "flops_dense", "latency_ms", "conversion_ms",
        "caption_reused", "full_refresh", "output")}
    for row in result.rows[config]:
        rec = row.record
        cols["index"].append(row.index)
        cols["modality"].append(row.modality)
        cols["stamp_ns"].append(row.stamp_ns)
        cols["tokens_recomputed"].append(rec.tokens_recomputed)
        cols["tokens_fused"].append(rec.tokens_fused)
        cols["branch"].append(rec.branch)
        cols["flops_total"].append(rec.total_flops)
        cols["flops_encoder"].append(rec.encoder_flops)
        cols["flops_dense"].append(float(rec.dense_flops))
        cols["latency_ms"].append(round(rec.total_latency_ms, 4))
        cols["conversion_ms"].append(round(row.conversion_ms, 4))
        cols["caption_reused"].append(bool(rec.caption_reused))
        cols["full_refresh"].append(bool(rec.full_refresh))
        cols["output"].append(row.caption if row.modality == "frame" else row.gesture)
    return cols


# ------------------------------------------------------------------------------------ driver


def model_identity(model_dir: str | Path, backend: str) -> dict[str, Any]:
    """Model directory, sha256 of its weights (from the manifest) and architecture."""
    from tinygpt_ros.model.weights import MODEL_FILE, load_manifest

    info: dict[str, Any] = {"dir": str(model_dir), "backend": backend}
    try:
        manifest = load_manifest(model_dir)
    except Exception as exc:  # the engine load reports it properly; keep the report going
        info["error"] = str(exc)
        return info
    info["sha256"] = manifest.get("files", {}).get(MODEL_FILE, {}).get("sha256")
    info["config"] = manifest.get("config")
    info["command"] = manifest.get("command")
    training = manifest.get("training")
    info["preset"] = training.get("preset") if isinstance(training, dict) else None
    return info


def machine_info() -> dict[str, Any]:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}


def _unique_names(paths: Sequence[str]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = Path(p).name if Path(p).is_dir() else Path(p).stem
        name, k = base or "bag", 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def run_eval(
    bags: Sequence[str | Path],
    model_dir: str | Path,
    out_dir: str | Path,
    refs: str | Path | None = None,
    configs: Sequence[str] = ("dense", "sttf", "anc", "sttf+anc"),
    backend: str = "torch",
    image_topic: str = "/camera/image_raw",
    events_topic: str = "/events",
    overwrite: bool = False,
    workers: int = 1,
    live: bool = False,
    max_frames: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Evaluate `bags`, write report.json / report.md / plots into `out_dir`; returns the report.

    Raises FileExistsError before any work when `out_dir` holds a report and not `overwrite`,
    ValueError for bad arguments (configs, refs file, workers)."""
    from tinygpt_ros.evaluation import report as rep

    if not bags:
        raise ValueError("bags: give at least one bag")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")
    rep.check_out_dir(out_dir, overwrite)
    from tinygpt_ros.model.weights import load_manifest

    load_manifest(model_dir)  # ModelLoadError (names the file) before any work
    cfg_knobs = {name: full_knobs(k) for name, k in parse_configs(list(configs)).items()}
    names = _unique_names([str(b) for b in bags])
    shared = load_refs(refs) if refs is not None else None
    refs_of: dict[str, Refs | None] = {}
    pre_issues: list[Issue] = []
    for bag, name in zip(bags, names, strict=True):
        if shared is not None:
            refs_of[name] = shared
            continue
        path = default_refs_path(bag)
        if not Path(bag).exists():
            refs_of[name] = None  # the bag itself is reported as unreadable
            continue
        if not path.exists():
            refs_of[name] = None
            pre_issues.append(Issue(name, "no_refs", "warning", f"no references ({path} does "
                                    "not exist; pass --refs): compute only"))
            continue
        try:
            refs_of[name] = load_refs(path)
        except ValueError as exc:
            refs_of[name] = None
            pre_issues.append(Issue(name, "refs_invalid", "error", str(exc)))
    jobs = [BagJob(str(b), n, str(model_dir), backend, cfg_knobs, image_topic, events_topic,
                   max_frames, threads, progress) for b, n in zip(bags, names, strict=True)]
    t0 = time.perf_counter()
    results: list[BagResult]
    if workers == 1 or len(jobs) == 1:
        results = [evaluate_bag(j) for j in jobs]
    else:
        import multiprocessing

        per_worker = threads or max(1, (os.cpu_count() or 1) // min(workers, len(jobs)))
        for j in jobs:
            j.threads = per_worker
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                                 initializer=_worker_init) as pool:
            results = list(pool.map(evaluate_bag, jobs))
    eval_s = time.perf_counter() - t0
    issues = list(pre_issues)
    for r in results:
        issues.extend(r.issues)
    cfg_names = list(cfg_knobs)
    scored = score_results(results, refs_of, cfg_names, issues)
    report: dict[str, Any] = {
        "format": "tinygpt_ros eval report v1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "model": model_identity(model_dir, backend),
        "machine": machine_info(),
        "topics": {"image": image_topic, "events": events_topic},
        "max_frames": max_frames,
        "workers": workers,
        "seconds": round(eval_s, 3),
        "configs": cfg_knobs,
        "bags": [{"path": r.path, "name": r.name, "ok": r.ok, "topics": {
            t: {"type": m, "count": n} for t, (m, n) in r.topics.items()},
            "used_topics": r.used_topics, "messages_read": r.messages_read,
            "frames": sum(1 for row in r.rows[cfg_names[0]] if row.modality == "frame"),
            "event_windows": sum(1 for row in r.rows[cfg_names[0]] if row.modality == "events"),
            "seconds": round(r.seconds, 3),
            "refs": None if refs_of.get(r.name) is None else refs_of[r.name].path}
            for r in results],
        **scored,
        "compute": compute_summaries(results, cfg_names),
        "frames": {c: {r.name: frame_columns(r, c) for r in results} for c in cfg_names},
        "live": None,
    }
    if live:
        from tinygpt_ros.evaluation.live import live_section

        report["live"] = live_section(results, cfg_knobs, str(model_dir), backend, issues)
    order = {"error": 0, "warning": 1}
    report["issues"] = [asdict(i) for i in sorted(issues, key=lambda i: order.get(i.severity, 2))]
    rep.write_report(report, out_dir, overwrite=overwrite, plots=plots)
    return report
