"""Encoders for the EventPacket payload encodings, the inverse of `ops.event_codecs`.

Why: the decoders are tested by round trips against an independent encoder, and the sample
bags are written the way each ROS 2 driver publishes: 'evt3' as the Prophesee metavision_driver
does (16-bit EVT 3.0 words, vector events for runs on one row), 'libcaer' as libcaer_driver's
uncompressed mode (libcaer polarity events), 'libcaer_cmp' as its compressed mode (per x column,
y runs in groups of 8). They work from the formats' definitions (see ops/event_codecs.py), not
from any driver's code. Events are EVENT_DTYPE with t in microseconds.
"""

from __future__ import annotations

import numpy as np

from tinygpt_ros.ops.event_codecs import (
    CMP_ADDR_X,
    CMP_ADDR_Y,
    CMP_TIME_HIGH,
    CMP_TIME_LOW,
    CMP_VECT_8,
    CMP_VECT_BASE_Y,
    EVT3_ADDR_X,
    EVT3_ADDR_Y,
    EVT3_TIME_HIGH,
    EVT3_TIME_LOW,
    EVT3_VECT_8,
    EVT3_VECT_12,
    EVT3_VECT_BASE_X,
)
from tinygpt_ros.spec.types import EVENT_DTYPE


def _word(code: int, payload: int) -> int:
    return (code << 12) | (payload & 0xFFF)


def _check(events: np.ndarray) -> np.ndarray:
    ev = np.asarray(events)
    if ev.dtype != EVENT_DTYPE:
        raise ValueError(f"events must have EVENT_DTYPE, got {ev.dtype}")
    if ev.size > 1 and np.any(np.diff(ev["t"]) < 0):
        raise ValueError("events must be sorted by t")
    return ev


def encode_mono(events: np.ndarray, time_base_us: int) -> bytes:
    """'mono': one little-endian 64-bit word per event, dt in ns since time_base."""
    ev = _check(events)
    dt = (ev["t"].astype(np.int64) - int(time_base_us)) * 1000
    if dt.size and (dt.min() < 0 or dt.max() > 0xFFFFFFFF):
        raise ValueError("mono: t - time_base must fit in 32-bit nanoseconds")
    words = (dt.astype(np.uint64) | (ev["x"].astype(np.uint64) << np.uint64(32))
             | (ev["y"].astype(np.uint64) << np.uint64(48))
             | (ev["p"].astype(np.uint64) << np.uint64(63)))
    return words.astype("<u8").tobytes()


def encode_evt3(events: np.ndarray, vectorize: bool = True, rng: np.random.Generator | None = None,
                emit_time: bool = True, last_time_us: int | None = None) -> bytes:
    """EVT 3.0 words for `events` (t: sensor microseconds; wraps at 2^24 are what the sensor
    would send). Events with the same (t, y, p) form runs; with `vectorize`, runs of nearby x
    become VECT_BASE_X + VECT_12 / VECT_8 words (`rng` picks 12 or 8 at random, to exercise
    both), the rest ADDR_X. `emit_time` starts the packet with TIME_HIGH and TIME_LOW (a
    packet that can be decoded on its own); otherwise `last_time_us` is the stream's time
    before this packet."""
    ev = _check(events)
    out: list[int] = []
    t = ev["t"].astype(np.int64) & ((1 << 24) - 1)
    last_high = last_low = -1
    if not emit_time and last_time_us is not None:
        last_high = (last_time_us >> 12) & 0xFFF
        last_low = last_time_us & 0xFFF
    last_y = -1
    i, n = 0, ev.size
    while i < n:
        j = i + 1
        while j < n and t[j] == t[i] and ev["y"][j] == ev["y"][i] and ev["p"][j] == ev["p"][i]:
            j += 1
        ti = int(t[i])
        high, low = ti >> 12, ti & 0xFFF
        if high != last_high or (emit_time and last_high < 0):
            out.append(_word(EVT3_TIME_HIGH, high))
            last_high = high
            last_low = -1
        if low != last_low:
            out.append(_word(EVT3_TIME_LOW, low))
            last_low = low
        y, p = int(ev["y"][i]), int(ev["p"][i])
        if y != last_y:
            out.append(_word(EVT3_ADDR_Y, y))
            last_y = y
        xs = np.sort(np.unique(ev["x"][i:j].astype(np.int64)))
        if len(xs) != j - i:
            raise ValueError("evt3: two events at the same pixel, time and polarity")
        k = 0
        while k < len(xs):
            width = 12 if rng is None or rng.random() < 0.5 else 8
            group = xs[(xs >= xs[k]) & (xs < xs[k] + width)]
            if vectorize and len(group) >= 2:
                base = int(xs[k])
                out.append(_word(EVT3_VECT_BASE_X, (p << 11) | base))
                mask = 0
                for x in group:
                    mask |= 1 << int(x - base)
                out.append(_word(EVT3_VECT_12 if width == 12 else EVT3_VECT_8, mask))
                k += len(group)
            else:
                out.append(_word(EVT3_ADDR_X, (p << 11) | int(xs[k])))
                k += 1
        i = j
    return np.asarray(out, dtype="<u2").tobytes()


def encode_libcaer(events: np.ndarray, time_base_ns: int, invalid: np.ndarray | None = None
                   ) -> bytes:
    """libcaer polarity events: timestamp = (t_us - time_base) mod 2^31 (libcaer's 31-bit
    clock). `invalid` marks events written with the valid bit cleared."""
    ev = _check(events)
    ts = (ev["t"].astype(np.int64) * 1000 - int(time_base_ns)) // 1000
    if ts.size and ts.min() < 0:
        raise ValueError("libcaer: t before time_base")
    valid = np.ones(ev.size, dtype=np.uint32) if invalid is None else (~invalid).astype(np.uint32)
    rec = np.empty(ev.size, dtype=[("data", "<u4"), ("ts", "<i4")])
    rec["data"] = (valid | (ev["p"].astype(np.uint32) << 1) | (ev["y"].astype(np.uint32) << 2)
                   | (ev["x"].astype(np.uint32) << 17))
    rec["ts"] = (ts % (1 << 31)).astype(np.int32)
    return rec.tobytes()


def encode_libcaer_cmp(events: np.ndarray, time_base_us: int) -> bytes:
    """libcaer_cmp words for events (t - time_base below 2^24 us): an ADDR_X when x changes,
    TIME_HIGH / TIME_LOW when the time changes, and per x the y's in blocks of 8 (y & ~7):
    one ADDR_Y for a lone event, VECT_BASE_Y + VECT_8 for two or more."""
    ev = _check(events)
    dt = ev["t"].astype(np.int64) - int(time_base_us)
    if dt.size and (dt.min() < 0 or dt.max() >= 1 << 24):
        raise ValueError("libcaer_cmp: t - time_base must be in [0, 2^24) microseconds")
    out: list[int] = []
    high, low, cur_x = 0, 0, -1
    i, n = 0, ev.size
    while i < n:
        x, p, d = int(ev["x"][i]), int(ev["p"][i]), int(dt[i])
        block = int(ev["y"][i]) & ~7
        j = i + 1
        while (j < n and int(dt[j]) == d and int(ev["x"][j]) == x and int(ev["p"][j]) == p
               and int(ev["y"][j]) & ~7 == block):
            j += 1
        if cur_x < 0:
            out.append(_word(CMP_ADDR_X, x))
            cur_x = x
        if d >> 12 != high:
            high = d >> 12
            out.append(_word(CMP_TIME_HIGH, high))
        if d & 0xFFF != low:
            low = d & 0xFFF
            out.append(_word(CMP_TIME_LOW, low))
        if x != cur_x:
            out.append(_word(CMP_ADDR_X, x))
            cur_x = x
        ys = sorted({int(v) for v in ev["y"][i:j]})
        if len(ys) != j - i:
            raise ValueError("libcaer_cmp: two events at the same pixel, time and polarity")
        if len(ys) == 1:
            out.append(_word(CMP_ADDR_Y, (p << 11) | ys[0]))
        else:
            out.append(_word(CMP_VECT_BASE_Y, (p << 11) | block))
            out.append(_word(CMP_VECT_8, sum(1 << (y - block) for y in ys)))
        i = j
    return np.asarray(out, dtype="<u2").tobytes()


def encode(encoding: str, events: np.ndarray, time_base_ns: int) -> bytes:
    """Payload of one EventPacket in `encoding`; time_base_ns is the packet's time_base (for
    'evt3', unused: its words carry the sensor clock)."""
    if encoding == "mono":
        return encode_mono(events, time_base_ns // 1000)
    if encoding == "evt3":
        return encode_evt3(events)
    if encoding == "libcaer":
        return encode_libcaer(events, time_base_ns)
    if encoding == "libcaer_cmp":
        return encode_libcaer_cmp(events, time_base_ns // 1000)
    raise ValueError(f"no encoder for {encoding!r}")
