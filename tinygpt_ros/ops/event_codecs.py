"""Decoders for the payload encodings of event_camera_msgs/EventPacket, in numpy.

Why here: the ROS node, the bag evaluator and the benchmarks all turn EventPacket payloads into
events, and a robot's event camera publishes in its driver's own encoding. The layouts follow the
formats' public documentation (Prophesee EVT 3.0) and what the ROS 2 drivers publish
(metavision_driver: 'evt3'; libcaer_driver: 'libcaer', 'libcaer_cmp'; 'mono' from the
event_camera_codecs family). Every decoder is vectorised (no per-event Python loop) and never
guesses: a payload that cannot be decoded raises `EventCodecError` naming the defect.

Encodings, all in little-endian words unless the packet says `is_bigendian`:
- 'mono': one 64-bit word per event: bit 63 polarity, bits 48-62 y, bits 32-47 x, bits 0-31
  time in nanoseconds since `time_base`.
- 'evt3': 16-bit words, type in bits 12-15. EVT_ADDR_Y (0x0) sets y (bits 0-10); EVT_ADDR_X
  (0x2) is one event at x (bits 0-10), polarity bit 11; VECT_BASE_X (0x3) sets the base x and
  polarity of the vector events that follow; VECT_12 (0x4) / VECT_8 (0x5) are up to 12 / 8
  events at base x + bit index, then base x moves on by 12 / 8; EVT_TIME_LOW (0x6) and
  EVT_TIME_HIGH (0x8) are the low and high 12 bits of a 24-bit microsecond clock that wraps
  every 2^24 us (a TIME_HIGH smaller than the previous one by more than `EVT3_HIGH_BACKSTEP`
  counts as a wrap; the sensor can step back a little without wrapping); EXT_TRIGGER (0xA),
  OTHERS (0xE), CONTINUED_4 (0x7) and CONTINUED_12 (0xF) carry no CD event. Codes 0x1, 0x9,
  0xB, 0xC, 0xD are undefined and make the packet corrupt. Decoding state (time, y, base x)
  carries over from one packet to the next (`Evt3Decoder`); events before the stream's first
  time reference or first y are dropped and counted, as the vendor's decoder does.
- 'libcaer': libcaer polarity events, 8 bytes each: a 32-bit word (bit 0 valid mark, bit 1
  polarity, bits 2-16 y, bits 17-31 x) and a signed 32-bit microsecond timestamp that wraps
  at 2^31; time is `time_base` (ns) + timestamp * 1000, plus 2^31 us per wrap inside the
  packet. Events whose valid mark is 0 (libcaer's filters invalidated them) are dropped and
  counted.
- 'libcaer_cmp': 16-bit words, type in bits 12-15: TIME_HIGH (0) and TIME_LOW (1) are the high
  and low 12 bits of a 24-bit microsecond offset from `time_base`; ADDR_X (2) sets x; ADDR_Y (3)
  is one event at y (bits 0-10), polarity bit 11; VECT_BASE_Y (4) sets base y and polarity;
  VECT_8 (5) is up to 8 events at base y + bit index (base y then moves on by 8). Other codes
  make the packet corrupt.

Times come back in nanoseconds on the packet's sensor clock, with `anchor_ns`: the sensor time
that the packet's header.stamp stands for ('mono', 'libcaer_cmp': `time_base`; 'evt3',
'libcaer': the packet's first event), so a caller can put events on the header's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

ENCODINGS = ("mono", "evt3", "libcaer_cmp", "libcaer")

EVT3_HIGH_BACKSTEP = 10  # TIME_HIGH steps back by at most this without a wrap (sensor jitter)
_EVT3_WRAP_US = 1 << 24
_LIBCAER_WRAP_US = 1 << 31

# EVT 3.0 word types
EVT3_ADDR_Y, EVT3_ADDR_X, EVT3_VECT_BASE_X, EVT3_VECT_12, EVT3_VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
EVT3_TIME_LOW, EVT3_CONTINUED_4, EVT3_TIME_HIGH = 0x6, 0x7, 0x8
EVT3_EXT_TRIGGER, EVT3_OTHERS, EVT3_CONTINUED_12 = 0xA, 0xE, 0xF

# libcaer_cmp word types
CMP_TIME_HIGH, CMP_TIME_LOW, CMP_ADDR_X, CMP_ADDR_Y, CMP_VECT_BASE_Y, CMP_VECT_8 = range(6)


def _bit_tables() -> tuple[np.ndarray, np.ndarray]:
    """For every 12-bit mask: how many bits are set, and their positions in ascending order
    (row m * 12 + rank of the flat table: the rank-th set bit of mask m)."""
    masks = np.arange(4096)
    bits = (masks[:, None] >> np.arange(12)) & 1
    positions = np.zeros((4096, 12), dtype=np.int32)
    for m in range(4096):
        on = np.flatnonzero(bits[m])
        positions[m, : on.size] = on
    return bits.sum(axis=1).astype(np.int32), positions.reshape(-1)


_POPCOUNT, _BIT_POSITIONS = _bit_tables()


def _row_events(valid_bits: np.ndarray, counts: np.ndarray
                ) -> tuple[np.ndarray | None, np.ndarray]:
    """Expand rows (event words) into events: `valid_bits` is each row's 12-bit event mask and
    `counts` how many of its events to keep (its popcount, or 0 to drop the row). Returns the row
    of each event (None when every row holds exactly one event: the rows are the events) and
    the bit index of each event in its row's mask. Why this shape: one np.repeat of the row
    index and a gather per column is several times cheaper than a repeat per column, and the
    rank of an event inside its row is only worked out for the rows that hold two or more."""
    irregular = np.flatnonzero(counts != 1)
    if irregular.size == 0:
        return None, _BIT_POSITIONS[valid_bits * 12]
    rows = np.repeat(np.arange(counts.size, dtype=np.int32), counts)
    rank = np.zeros(rows.size, dtype=np.int32)
    extra = counts[irregular] - 1  # events a row holds beyond one (-1: a dropped row)
    first = irregular + np.cumsum(extra) - extra  # index of each irregular row's first event
    many = extra > 0
    if many.any():
        first, extra = first[many], extra[many]
        offsets = np.arange(int(extra.sum()), dtype=np.int32) - np.repeat(
            np.cumsum(extra) - extra, extra)
        rank[np.repeat(first, extra) + offsets + 1] = offsets + 1
    return rows, _BIT_POSITIONS[valid_bits[rows] * 12 + rank]


def _gather(rows: np.ndarray | None, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row columns -> per-event columns for the rows `_row_events` returned."""
    return columns if rows is None else tuple(c[rows] for c in columns)


class EventCodecError(ValueError):
    """A payload that cannot be decoded. `kind`: encoding (unknown encoding), size (length does
    not fit the encoding: truncated), decode (corrupt words), values (coordinates outside the
    sensor the packet declares), limit (more events than the caller's max_events)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedEvents:
    """Events of one packet in stream order. `dropped`: events the payload holds that cannot be
    used (evt3 before any time reference or y, libcaer events marked invalid); `triggers`:
    external-trigger words seen (evt3)."""

    x: np.ndarray  # uint16
    y: np.ndarray  # uint16
    t_ns: np.ndarray  # int64, sensor clock
    p: np.ndarray  # uint8, 1 = ON
    anchor_ns: int
    dropped: int = 0
    triggers: int = 0

    @property
    def size(self) -> int:
        return int(self.t_ns.shape[0])


def _as_bytes(payload: object) -> np.ndarray:
    if isinstance(payload, np.ndarray):
        return payload.view(np.uint8).reshape(-1)
    return np.frombuffer(memoryview(payload).cast("B"), dtype=np.uint8)


def _words(payload: object, size: int, big_endian: bool, encoding: str) -> np.ndarray:
    raw = _as_bytes(payload)
    if raw.size % size:
        raise EventCodecError(
            "size", f"'{encoding}' payload has {raw.size} bytes, not a multiple of {size}: "
            f"truncated by {raw.size % size} byte(s)")
    return raw.view(f"{'>' if big_endian else '<'}u{size}")


def _check_count(count: int, max_events: int | None, encoding: str) -> None:
    if max_events is not None and count > max_events:
        raise EventCodecError(
            "limit", f"'{encoding}' payload holds {count} events, over the limit {max_events}")


def _check_geometry(x: np.ndarray, y: np.ndarray, width: int, height: int, encoding: str) -> None:
    if width <= 0 or height <= 0 or x.size == 0:
        return
    bad = (x >= width) | (y >= height)
    if bad.any():
        i = int(np.argmax(bad))
        raise EventCodecError(
            "values", f"'{encoding}' event {i} at ({int(x[i])}, {int(y[i])}) is outside the "
            f"{width}x{height} sensor the packet declares ({int(bad.sum())} such event(s))")


# ------------------------------------------------------------------------------------ mono


def decode_mono(payload: object, time_base: int = 0, big_endian: bool = False,
                width: int = 0, height: int = 0, max_events: int | None = None
                ) -> DecodedEvents:
    words = _words(payload, 8, big_endian, "mono")
    _check_count(words.size, max_events, "mono")
    words = words.astype(np.uint64)
    x = ((words >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16)
    y = ((words >> np.uint64(48)) & np.uint64(0x7FFF)).astype(np.uint16)
    p = (words >> np.uint64(63)).astype(np.uint8)
    t = (words & np.uint64(0xFFFFFFFF)).astype(np.int64) + int(time_base)
    _check_geometry(x, y, width, height, "mono")
    return DecodedEvents(x, y, t, p, anchor_ns=int(time_base))


# ------------------------------------------------------------------------------------ evt3


@dataclass(frozen=True)
class Evt3State:
    """What an EVT 3.0 stream carries from one packet to the next. -1 = not seen yet."""

    time_high: int = -1  # (wraps << 24) | (TIME_HIGH << 12), microseconds
    time_low: int = -1
    y: int = -1
    base_x: int = -1
    polarity: int = 0


def _latest(mask: np.ndarray, values: np.ndarray, at: np.ndarray, initial: int) -> np.ndarray:
    """For each word index in `at`: values[k] of the k-th word with `mask` (counted from 0) that
    is the last one at or before it, else `initial`. One running count over the words: cheaper
    than a sorted search per event word."""
    if values.size == 0 or at.size == 0:
        return np.full(at.shape, initial, dtype=np.int64)
    seen = np.cumsum(mask, dtype=np.int32)[at]  # 0: none yet -> `initial`
    return np.concatenate(([initial], values.astype(np.int64)))[seen]


def _evt3_vector_bases(code: np.ndarray, pay: np.ndarray, is_base_word: np.ndarray,
                       is_vector_word: np.ndarray, state: Evt3State
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Base x and polarity of each VECT_12 / VECT_8 word of a packet, whether it is a VECT_8,
    and the base x and polarity the next packet starts from. A VECT_BASE_X word sets base x
    and polarity; each vector word after it moves base x on by 12 / 8. Worked out over the
    base and vector words only (in stream order), so the cost follows them, not the whole
    packet. -1: no base known yet."""
    seq = np.flatnonzero(is_base_word | is_vector_word)
    seq_code = code[seq]
    is_base = seq_code == EVT3_VECT_BASE_X
    is_vec = ~is_base
    is_v8 = seq_code[is_vec] == EVT3_VECT_8
    step = np.where(is_base, 0, np.where(seq_code == EVT3_VECT_8, 8, 12)).astype(np.int64)
    moved_through = np.cumsum(step)  # how far base x moved up to and including each word
    moved = moved_through[is_vec] - step[is_vec]  # before each vector word
    total_moved = int(moved_through[-1]) if seq.size else 0
    base_at = np.flatnonzero(is_base)
    from_state = state.base_x + moved if state.base_x >= 0 else np.full_like(moved, -1)
    if base_at.size == 0:
        end = state.base_x + total_moved if state.base_x >= 0 else -1
        polarity = np.full(moved.shape, state.polarity, np.int32)
        return from_state, polarity, is_v8, end, state.polarity
    base_words = pay[seq[base_at]].astype(np.int64)
    k = (np.cumsum(is_base, dtype=np.int32) - 1)[is_vec]  # the base word each vector follows
    kk = np.maximum(k, 0)
    from_base = (base_words[kk] & 0x7FF) + moved - moved_through[base_at][kk]
    vec_x = np.where(k >= 0, from_base, from_state)
    vec_pol = np.where(k >= 0, base_words[kk] >> 11, state.polarity)
    end = int(base_words[-1] & 0x7FF) + total_moved - int(moved_through[base_at[-1]])
    return vec_x, vec_pol, is_v8, end, int(base_words[-1] >> 11)


def decode_evt3(payload: object, state: Evt3State | None = None, big_endian: bool = False,
                width: int = 0, height: int = 0, max_events: int | None = None
                ) -> tuple[DecodedEvents, Evt3State]:
    """One EVT 3.0 packet -> (events, the state the next packet of the stream starts from).
    Each state word (time, y, vector base) is looked up for the event words only, with one
    running count per state type, so the cost follows the words; the vector-base arithmetic
    runs only over vector words, which a vertical edge never sends."""
    state = state or Evt3State()
    w = _words(payload, 2, big_endian, "evt3")
    if big_endian:
        w = w.astype(np.uint16)  # native order once: every later pass is cheaper
    code = (w >> 12).astype(np.uint8)
    # undefined types 0x1, 0x9, 0xB-0xD: a few compares are cheaper than a table lookup
    bad = (code == 0x1) | (code == 0x9) | ((code >= 0xB) & (code <= 0xD))
    if bad.any():
        i = int(np.argmax(bad))
        raise EventCodecError(
            "decode", f"'evt3' word {i} (0x{int(w[i]):04x}) has undefined type 0x{int(code[i]):x}"
            f" ({int(bad.sum())} such word(s)): corrupt packet")
    pay = w & 0xFFF

    # time: 24-bit microseconds, wraps counted over this packet's TIME_HIGH words
    is_high = code == EVT3_TIME_HIGH
    high_pos = np.flatnonzero(is_high)
    highs = pay[high_pos].astype(np.int64)
    prev_high = (state.time_high >> 12) & 0xFFF if state.time_high >= 0 else -1
    wraps_before = state.time_high >> 24 if state.time_high >= 0 else 0
    previous = np.concatenate(([prev_high], highs[:-1])) if highs.size else highs
    wrapped = (previous >= 0) & (highs < previous) & (previous - highs > EVT3_HIGH_BACKSTEP)
    full_high = ((wraps_before + np.cumsum(wrapped)) << 24) | (highs << 12)
    is_low, is_y = code == EVT3_TIME_LOW, code == EVT3_ADDR_Y
    low_pos, y_pos = np.flatnonzero(is_low), np.flatnonzero(is_y)

    # event words: ADDR_X (one event) and VECT_12 / VECT_8 (up to 12 / 8 at base x + bit)
    is_event = code == EVT3_ADDR_X
    is_vector = (code == EVT3_VECT_12) | (code == EVT3_VECT_8)
    has_vectors = bool(is_vector.any())
    if has_vectors:
        is_event |= is_vector
    rows = np.flatnonzero(is_event)
    rp = pay[rows].astype(np.int32)
    x0, pol = rp & 0x7FF, rp >> 11
    t_high = _latest(is_high, full_high, rows, state.time_high)
    t_low = _latest(is_low, pay[low_pos], rows, state.time_low)
    y_row = _latest(is_y, pay[y_pos] & 0x7FF, rows, state.y)

    # an event word is usable once the stream has a time reference and a y: every word after
    # the first of each that the state lacks
    first_usable = -1
    for known, positions in ((state.time_high, high_pos), (state.time_low, low_pos),
                             (state.y, y_pos)):
        if known < 0:
            first_usable = max(first_usable, int(positions[0]) if positions.size else w.size)
    usable_row = rows > first_usable

    end_base, end_polarity = state.base_x, state.polarity
    is_base = code == EVT3_VECT_BASE_X
    if has_vectors or is_base.any():
        vec_x, vec_pol, is_v8, end_base, end_polarity = _evt3_vector_bases(
            code, pay, is_base, is_vector, state)
    if has_vectors:
        vec = code[rows] != EVT3_ADDR_X
        x0 = x0.astype(np.int64)
        x0[vec] = vec_x
        pol[vec] = vec_pol
        usable_row[vec] &= vec_x >= 0
        vec_pay = rp[vec]
        valid_bits = np.ones(rows.size, dtype=np.int32)
        valid_bits[vec] = np.where(is_v8, vec_pay & 0xFF, vec_pay)
        all_counts = _POPCOUNT[valid_bits]
    else:
        valid_bits = np.ones(rows.size, dtype=np.int32)
        all_counts = valid_bits
    total = int(all_counts.sum())
    _check_count(total, max_events, "evt3")
    counts = all_counts * usable_row
    dropped = total - int(counts.sum())

    event_rows, bit = _row_events(valid_bits, counts)
    x0, y, p, t_us = _gather(event_rows, x0, y_row, pol.astype(np.uint8), t_high | t_low)
    x = x0 + bit
    if x.size and int(x.max()) > 0xFFFF:
        raise EventCodecError("decode", "'evt3' vector events run past x = 65535: corrupt packet")
    x16, y16 = x.astype(np.uint16), y.astype(np.uint16)
    _check_geometry(x16, y16, width, height, "evt3")
    t_ns = t_us * 1000

    new_state = Evt3State(
        time_high=int(full_high[-1]) if full_high.size else state.time_high,
        time_low=int(pay[low_pos[-1]]) if low_pos.size else state.time_low,
        y=int(pay[y_pos[-1]] & 0x7FF) if y_pos.size else state.y,
        base_x=end_base,
        polarity=end_polarity)
    events = DecodedEvents(
        x16, y16, t_ns, p, anchor_ns=int(t_ns[0]) if t_ns.size else 0,
        dropped=dropped, triggers=int(np.count_nonzero(code == EVT3_EXT_TRIGGER)))
    return events, new_state


@dataclass
class Evt3Decoder:
    """An EVT 3.0 stream: keeps the decoding state between packets of one topic."""

    state: Evt3State = field(default_factory=Evt3State)

    def decode(self, payload: object, big_endian: bool = False, width: int = 0,
               height: int = 0, max_events: int | None = None) -> DecodedEvents:
        events, state = decode_evt3(payload, self.state, big_endian, width, height, max_events)
        self.state = state  # only after a packet decoded cleanly
        return events

    def reset(self) -> None:
        self.state = replace(Evt3State())


# --------------------------------------------------------------------------------- libcaer


def decode_libcaer(payload: object, time_base: int = 0, big_endian: bool = False,
                   width: int = 0, height: int = 0, max_events: int | None = None
                   ) -> DecodedEvents:
    raw = _as_bytes(payload)
    if raw.size % 8:
        raise EventCodecError(
            "size", f"'libcaer' payload has {raw.size} bytes, not a multiple of 8: truncated by "
            f"{raw.size % 8} byte(s)")
    _check_count(raw.size // 8, max_events, "libcaer")
    order = ">" if big_endian else "<"
    rec = raw.view(np.dtype([("data", order + "u4"), ("ts", order + "i4")]))
    data = rec["data"]
    ts = rec["ts"].astype(np.int64)
    if ts.size and int(ts.min()) < 0:
        i = int(np.argmax(ts < 0))
        raise EventCodecError(
            "decode", f"'libcaer' event {i} has a negative timestamp {int(ts[i])}: corrupt packet")
    wraps = np.concatenate(([0], np.cumsum(np.diff(ts) < 0))) if ts.size else ts
    t_ns = int(time_base) + (ts + wraps * _LIBCAER_WRAP_US) * 1000
    valid = (data & 1).astype(bool)
    dropped = int(valid.size - np.count_nonzero(valid))
    anchor = int(t_ns[0]) if t_ns.size else int(time_base)
    if dropped:
        data, t_ns = data[valid], t_ns[valid]
    x = ((data >> 17) & 0x7FFF).astype(np.uint16)
    y = ((data >> 2) & 0x7FFF).astype(np.uint16)
    p = ((data >> 1) & 1).astype(np.uint8)
    _check_geometry(x, y, width, height, "libcaer")
    return DecodedEvents(x, y, t_ns, p, anchor_ns=anchor, dropped=dropped)


def decode_libcaer_cmp(payload: object, time_base: int = 0, big_endian: bool = False,
                       width: int = 0, height: int = 0, max_events: int | None = None
                       ) -> DecodedEvents:
    w = _words(payload, 2, big_endian, "libcaer_cmp")
    code = (w >> 12).astype(np.uint8)
    pay = w & 0xFFF
    bad = code > CMP_VECT_8
    if bad.any():
        i = int(np.argmax(bad))
        raise EventCodecError(
            "decode", f"'libcaer_cmp' word {i} (0x{int(w[i]):04x}) has unknown type "
            f"{int(code[i])} ({int(bad.sum())} such word(s)): corrupt packet")
    is_x = code == CMP_ADDR_X
    first_x = int(np.argmax(is_x)) if is_x.any() else w.size
    events_before_x = (code[:first_x] == CMP_ADDR_Y) | (code[:first_x] == CMP_VECT_8)
    if events_before_x.any():
        raise EventCodecError(
            "decode", "'libcaer_cmp' packet has events before its first ADDR_X: corrupt packet")
    is_y, is_v8 = code == CMP_ADDR_Y, code == CMP_VECT_8
    rows = np.flatnonzero(is_y | is_v8)
    rp = pay[rows].astype(np.int64)
    single = is_y[rows]
    is_high, is_low, is_base = code == CMP_TIME_HIGH, code == CMP_TIME_LOW, code == CMP_VECT_BASE_Y
    x_row = _latest(is_x, pay[is_x] & 0x7FF, rows, 0)
    t_row = (_latest(is_high, pay[is_high].astype(np.int64) << 12, rows, 0)
             | _latest(is_low, pay[is_low], rows, 0))
    # vector base y: set by VECT_BASE_Y, moved on by 8 after each VECT_8
    vec = ~single
    moved_incl = np.concatenate(([0], np.cumsum(np.full(int(vec.sum()), 8, np.int64))))
    base_count = np.cumsum(is_base, dtype=np.int32)
    base_k = base_count[rows[vec]] - 1
    if (base_k < 0).any():
        raise EventCodecError(
            "decode", "'libcaer_cmp' VECT_8 before any VECT_BASE_Y: corrupt packet")
    base_pos = np.flatnonzero(is_base)
    anchor = base_pos[base_k] if base_k.size else base_k
    anchor_moved = moved_incl[np.searchsorted(rows[vec], anchor)]
    y0 = (rp & 0x7FF).astype(np.int64)
    pol = (rp >> 11).astype(np.int64)
    base_word = pay[anchor].astype(np.int64)
    y0[vec] = (base_word & 0x7FF) + moved_incl[:-1] - anchor_moved
    pol[vec] = base_word >> 11
    valid_bits = np.where(single, 1, rp & 0xFF)
    counts = _POPCOUNT[valid_bits]
    _check_count(int(counts.sum()), max_events, "libcaer_cmp")
    event_rows, bit = _row_events(valid_bits, counts)
    y0, p, x, t_us = _gather(event_rows, y0, pol.astype(np.uint8), x_row.astype(np.uint16),
                             t_row)
    y = y0 + bit
    t_ns = int(time_base) + t_us * 1000
    if y.size and int(y.max()) > 0xFFFF:
        raise EventCodecError("decode", "'libcaer_cmp' vector events run past y = 65535")
    y16 = y.astype(np.uint16)
    _check_geometry(x, y16, width, height, "libcaer_cmp")
    return DecodedEvents(x, y16, t_ns, p, anchor_ns=int(time_base))


# --------------------------------------------------------------------------------- dispatch


def decode_packet(encoding: str, payload: object, *, time_base: int = 0,
                  big_endian: bool = False, width: int = 0, height: int = 0,
                  evt3: Evt3Decoder | None = None, max_events: int | None = None
                  ) -> DecodedEvents:
    """Decode one EventPacket payload. `evt3` carries the EVT 3.0 stream state between packets
    (a fresh decoder when None: the packet must then hold its own time reference and y).
    `max_events`: more events than this raise EventCodecError(kind="limit") before the event
    arrays are allocated."""
    if encoding == "mono":
        return decode_mono(payload, time_base, big_endian, width, height, max_events)
    if encoding == "evt3":
        return (evt3 or Evt3Decoder()).decode(payload, big_endian, width, height, max_events)
    if encoding == "libcaer":
        return decode_libcaer(payload, time_base, big_endian, width, height, max_events)
    if encoding == "libcaer_cmp":
        return decode_libcaer_cmp(payload, time_base, big_endian, width, height, max_events)
    raise EventCodecError(
        "encoding", f"EventPacket.encoding {encoding!r} is not supported (supported: "
        f"{', '.join(ENCODINGS)})")
