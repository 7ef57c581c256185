"""One weights file per precision, shared by every ONNX graph of that precision.

Why: the exported graphs overlap. Each encoder branch graph nests the blocks of the smaller
branches, prefill and step both carry the whole decoder, both embedding graphs carry pos_embed;
stored inside each graph, 39% of the weight bytes were copies. Here every initializer of at
least `INLINE_MAX_BYTES`, and every smaller one whose bytes occur more than once, moves into one
external-data file (ONNX `data_location = EXTERNAL`, with `location`, `offset`, `length`),
where each distinct content (sha256 of its raw little-endian bytes) is stored once; graphs that
share a tensor point at the same region. Small tensors used once (shape constants and the like)
stay inside their graph.

onnxruntime resolves `location` relative to the graph file's folder, so the graphs must be
loaded by path (the engine does); the TensorRT and CUDA providers read the same initializers
onnxruntime loaded. The file's sha256 goes into the manifest like every graph's. No torch here.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from onnx import TensorProto, external_data_helper, numpy_helper

# A tensor smaller than this, whose bytes occur once in all graphs, stays inside its graph.
INLINE_MAX_BYTES = 1024
# Each region starts at a multiple of this, so a memory-mapped tensor is SIMD/cache-line aligned.
ALIGN = 64


@dataclass
class SharedWeights:
    """What `share_initializers` stored: the file's bytes and how much sharing saved."""

    blob: bytes
    tensors: int = 0  # regions in the file (distinct contents)
    referenced_bytes: int = 0  # external bytes summed over graphs (what per-graph copies hold)
    stored_bytes: int = 0  # distinct payload bytes in the file (its size less the padding)
    per_graph: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def deduplicated_bytes(self) -> int:
        return self.referenced_bytes - self.stored_bytes


def _raw_bytes(tensor: Any) -> bytes:
    """The tensor's bytes as ONNX raw_data holds them (little-endian), whatever field held them."""
    if tensor.HasField("raw_data"):
        return bytes(tensor.raw_data)
    return numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name).raw_data


def _movable(tensor: Any) -> bool:
    return (tensor.data_location != TensorProto.EXTERNAL
            and tensor.data_type not in (TensorProto.STRING, TensorProto.UNDEFINED))


def share_initializers(graphs: Mapping[str, Any], location: str) -> SharedWeights:
    """Move the initializers of `graphs` (name -> ModelProto, changed in place) into one blob.

    `location` is the blob's path relative to the graphs' folder (all graphs sit in one folder).
    Returns the blob to write there and the sharing figures. Deterministic: graphs in the given
    order, initializers in graph order, so the same models give the same bytes.
    """
    contents: dict[tuple[str, int], tuple[bytes, str]] = {}  # (graph, index) -> bytes, sha256
    counts: Counter[str] = Counter()
    for name, proto in graphs.items():
        for i, t in enumerate(proto.graph.initializer):
            if _movable(t):
                raw = _raw_bytes(t)
                digest = hashlib.sha256(raw).hexdigest()
                contents[(name, i)] = (raw, digest)
                counts[digest] += 1

    blob = bytearray()
    regions: dict[str, tuple[int, int]] = {}
    out = SharedWeights(b"")
    for name, proto in graphs.items():
        moved = moved_bytes = 0
        for i, t in enumerate(proto.graph.initializer):
            raw, digest = contents.get((name, i), (b"", ""))
            if not raw or (len(raw) < INLINE_MAX_BYTES and counts[digest] == 1):
                continue
            if digest not in regions:
                blob.extend(b"\0" * (-len(blob) % ALIGN))
                regions[digest] = (len(blob), len(raw))
                blob.extend(raw)
                out.stored_bytes += len(raw)
            offset, length = regions[digest]
            t.raw_data = raw
            external_data_helper.set_external_data(t, location, offset=offset, length=length)
            t.ClearField("raw_data")
            for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(f)
            moved += 1
            moved_bytes += length
        out.per_graph[name] = {"external_tensors": moved, "external_bytes": moved_bytes}
        out.referenced_bytes += moved_bytes
    out.blob = bytes(blob)
    out.tensors = len(regions)
    return out
