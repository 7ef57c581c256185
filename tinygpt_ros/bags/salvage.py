"""Salvage the complete messages of an mcap file whose end is missing.

Why: a recording cut off by a crash or power loss has no summary section or footer, and
`rosbags` (which reads through the index) refuses to open it, although every chunk written before
the cut is intact. The `mcap` library's `StreamReader` reads records in file order without the
index; this stops at the first incomplete record and skips a chunk that fails to decompress or to
pass its CRC, so one damaged chunk does not hide the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mcap.exceptions import EndOfFile, InvalidMagic, McapError
from mcap.records import Channel, Chunk, DataEnd, Footer, Message, Schema
from mcap.stream_reader import StreamReader, breakup_chunk


class SalvagedMessage(NamedTuple):
    topic: str
    msgtype: str  # the schema name, e.g. "sensor_msgs/msg/Image"
    timestamp_ns: int  # the record's log time
    rawdata: bytes | None  # CDR bytes, None when scanned without data


def mcap_files(path: str | Path) -> list[Path]:
    """The .mcap files of a bag: the file itself, or the directory's, in name order."""
    p = Path(path)
    if p.is_file():
        return [p] if p.suffix == ".mcap" else []
    if p.is_dir():
        return sorted(p.glob("*.mcap"))
    return []


class McapSalvage:
    """The readable messages of one mcap file, in file order, sorted by log time inside each chunk
    (recorders write chunks in time order). After a scan, `truncated_at` is the byte offset of the
    first incomplete record (None when the data section ended cleanly) and `bad_chunks` says why
    each skipped chunk was skipped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.truncated_at: int | None = None
        self.bad_chunks: list[str] = []

    def scan(self, wanted: set[str] | None = None, with_data: bool = True
             ) -> Iterator[SalvagedMessage]:
        """Messages of the `wanted` topics (all when None). Raises ValueError when the file is
        not an mcap file at all."""
        self.truncated_at = None
        self.bad_chunks = []
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}

        def meta(record: object) -> None:
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))

        def message(record: Message) -> SalvagedMessage | None:
            topic, msgtype = channels.get(record.channel_id, ("", ""))
            if not topic or (wanted is not None and topic not in wanted):
                return None
            return SalvagedMessage(topic, msgtype, int(record.log_time),
                                   bytes(record.data) if with_data else None)

        with open(self.path, "rb") as f:
            records = StreamReader(f, emit_chunks=True, validate_crcs=True).records
            try:
                first = next(records)
            except InvalidMagic:
                raise ValueError(f"{self.path}: not an mcap file (bad magic)") from None
            except (EndOfFile, struct.error):
                if f.tell() < 8:
                    raise ValueError(f"{self.path}: not an mcap file (bad magic)") from None
                self.truncated_at = 8
                return
            record: object = first
            while True:
                if isinstance(record, DataEnd | Footer):  # the summary adds nothing new
                    return
                if isinstance(record, Schema | Channel):
                    meta(record)
                elif isinstance(record, Message):
                    m = message(record)
                    if m is not None:
                        yield m
                elif isinstance(record, Chunk):
                    yield from self._chunk(record, meta, message)
                end = f.tell()  # the reader consumed exactly this record
                try:
                    record = next(records)
                except StopIteration:
                    return
                except (EndOfFile, McapError, struct.error, ValueError):
                    self.truncated_at = end
                    return

    def _chunk(self, chunk: Chunk, meta: object, message: object) -> Iterator[SalvagedMessage]:
        try:
            inner = breakup_chunk(chunk, validate_crc=True)
        except Exception as exc:  # decompression, CRC or a record cut inside the chunk
            self.bad_chunks.append(f"chunk at log time {chunk.message_start_time} skipped "
                                   f"({type(exc).__name__}: {exc})")
            return
        batch = []
        for record in inner:
            if isinstance(record, Message):
                m = message(record)  # type: ignore[operator]
                if m is not None:
                    batch.append(m)
            else:
                meta(record)  # type: ignore[operator]
        batch.sort(key=lambda m: m.timestamp_ns)
        yield from batch
