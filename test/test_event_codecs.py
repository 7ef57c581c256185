"""EventPacket payload decoders (ops/event_codecs.py) against the encoders written for them
(bags/event_encoders.py): round trips over random streams with EVT 3.0 time-high wraps,
libcaer timestamp wraps, vector-event groups and polarity runs; truncated and corrupt packets
raise EventCodecError naming the defect."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_ros.bags import event_encoders as enc
from tinygpt_ros.ops import event_codecs as codecs
from tinygpt_ros.spec.types import EVENT_DTYPE


def _stream(rng: np.random.Generator, n: int, width: int, height: int, t0: int,
            span_us: int, runs: bool = True) -> np.ndarray:
    """Random events, sorted by t, unique per (t, x, y, p); with `runs`, a third of them come as
    row runs (same t, y, p; neighbouring x) and column runs, as a moving edge makes them."""
    t = np.sort(rng.integers(t0, t0 + span_us, n))
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = t
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["p"] = rng.integers(0, 2, n)
    if runs:
        starts = rng.choice(n - 20, n // 60, replace=False)
        for s in starts:
            k = int(rng.integers(2, 16))
            ev["t"][s:s + k] = ev["t"][s]
            ev["p"][s:s + k] = ev["p"][s]
            if rng.random() < 0.5:
                ev["y"][s:s + k] = ev["y"][s]
                ev["x"][s:s + k] = np.minimum(ev["x"][s] + np.arange(k) * int(rng.integers(1, 3)),
                                              width - 1)
            else:
                ev["x"][s:s + k] = ev["x"][s]
                ev["y"][s:s + k] = np.minimum(ev["y"][s] + np.arange(k), height - 1)
        ev = ev[np.argsort(ev["t"], kind="stable")]
    _, first = np.unique(np.stack([ev["t"], ev["x"], ev["y"], ev["p"]]), axis=1,
                         return_index=True)
    return ev[np.sort(first)]


def _canon(x, y, t, p) -> np.ndarray:
    order = np.lexsort((np.asarray(p), np.asarray(x), np.asarray(y), np.asarray(t)))
    return np.stack([np.asarray(a, dtype=np.int64)[order] for a in (t, y, x, p)])


def _same(decoded: codecs.DecodedEvents, ev: np.ndarray, t_scale: int = 1000, t_off: int = 0):
    got = _canon(decoded.x, decoded.y, decoded.t_ns, decoded.p)
    want = _canon(ev["x"], ev["y"], ev["t"].astype(np.int64) * t_scale + t_off, ev["p"])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evt3_round_trip_with_time_high_wraps_and_vectors(seed):
    rng = np.random.default_rng(seed)
    # 40 s of sensor time: two wraps of the 24-bit microsecond clock
    ev = _stream(rng, 6000, 1280, 720, t0=(1 << 24) - 3_000_000, span_us=40_000_000)
    payload = enc.encode_evt3(ev, vectorize=True, rng=rng)
    words = np.frombuffer(payload, "<u2") >> 12
    assert {codecs.EVT3_VECT_12, codecs.EVT3_VECT_8, codecs.EVT3_ADDR_X} <= set(words.tolist())
    highs = (np.frombuffer(payload, "<u2")[words == codecs.EVT3_TIME_HIGH] & 0xFFF).astype(int)
    assert (np.diff(highs) < 0).sum() >= 2  # the clock wrapped inside the packet
    # the sensor clock is 24 bits: what comes back is t modulo 2^24 plus the wraps seen
    decoded = codecs.decode_packet("evt3", payload, width=1280, height=720)
    first_high = (int(ev["t"][0]) >> 24) << 24
    _same(decoded, ev, t_off=-first_high * 1000)
    assert decoded.dropped == 0


def test_evt3_state_carries_across_packets_and_big_endian():
    rng = np.random.default_rng(5)
    ev = _stream(rng, 3000, 640, 480, t0=1000, span_us=20_000_000)
    a, b = ev[:1500], ev[1500:]
    p1 = enc.encode_evt3(a, rng=rng)
    p2 = enc.encode_evt3(b, rng=rng, emit_time=False, last_time_us=int(a["t"][-1]))
    dec = codecs.Evt3Decoder()
    first = dec.decode(p1)
    swapped = np.frombuffer(p2, "<u2").astype(">u2").tobytes()
    second = dec.decode(swapped, big_endian=True)
    x = np.concatenate([first.x, second.x])
    y = np.concatenate([first.y, second.y])
    t = np.concatenate([first.t_ns, second.t_ns])
    p = np.concatenate([first.p, second.p])
    want = _canon(ev["x"], ev["y"], (ev["t"].astype(np.int64) % (1 << 24)) * 1000, ev["p"])
    got = _canon(x, y, t, p)
    # the second packet's clock continues the first's; 20 s crosses one wrap
    wraps = (ev["t"] >> 24) - (int(ev["t"][0]) >> 24)
    want = _canon(ev["x"], ev["y"], (ev["t"].astype(np.int64) - ((int(ev["t"][0]) >> 24) << 24))
                  * 1000, ev["p"])
    assert wraps.max() >= 1
    np.testing.assert_array_equal(got, want)


def test_evt3_events_before_a_time_reference_are_dropped_and_counted():
    w = np.array([(codecs.EVT3_ADDR_Y << 12) | 5, (codecs.EVT3_ADDR_X << 12) | 7,
                  (codecs.EVT3_TIME_HIGH << 12) | 1, (codecs.EVT3_TIME_LOW << 12) | 2,
                  (codecs.EVT3_ADDR_X << 12) | (1 << 11) | 9], dtype="<u2")
    d = codecs.decode_packet("evt3", w.tobytes())
    assert d.dropped == 1 and d.size == 1
    assert (int(d.x[0]), int(d.y[0]), int(d.p[0]), int(d.t_ns[0])) == (9, 5, 1, 4098 * 1000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evt3_packets_split_anywhere_decode_like_one_packet(seed):
    """A driver cuts its word stream into packets wherever its buffer fills: between a
    VECT_BASE_X and its vector words, or between two vector words. The decoder's state must
    carry base x, polarity, y and time over the cut."""
    rng = np.random.default_rng(seed)
    ev = _stream(rng, 4000, 1280, 720, t0=5000, span_us=3_000_000)
    words = np.frombuffer(enc.encode_evt3(ev, vectorize=True, rng=rng), "<u2")
    whole = codecs.decode_packet("evt3", words.tobytes())
    cuts = np.sort(rng.choice(np.arange(1, words.size), 40, replace=False))
    dec = codecs.Evt3Decoder()
    parts = [dec.decode(chunk.tobytes()) for chunk in np.split(words, cuts)]
    for field in ("x", "y", "t_ns", "p"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(d, field) for d in parts]), getattr(whole, field))
    assert sum(d.dropped for d in parts) == whole.dropped == 0


def test_evt3_empty_vector_word_still_moves_the_base():
    """A VECT_12 with no bit set holds no event but moves base x on by 12; the next vector
    word's events sit 12 further on."""
    w = np.array([(codecs.EVT3_TIME_HIGH << 12) | 1, (codecs.EVT3_TIME_LOW << 12) | 2,
                  (codecs.EVT3_ADDR_Y << 12) | 7, (codecs.EVT3_VECT_BASE_X << 12) | 100,
                  (codecs.EVT3_VECT_12 << 12) | 0, (codecs.EVT3_VECT_12 << 12) | 0b101],
                 dtype="<u2")
    d = codecs.decode_packet("evt3", w.tobytes())
    assert d.x.tolist() == [112, 114] and d.y.tolist() == [7, 7] and d.dropped == 0


def test_libcaer_cmp_empty_vector_word_still_moves_the_base():
    w = np.array([(codecs.CMP_TIME_HIGH << 12) | 0, (codecs.CMP_TIME_LOW << 12) | 5,
                  (codecs.CMP_ADDR_X << 12) | 3, (codecs.CMP_VECT_BASE_Y << 12) | 10,
                  (codecs.CMP_VECT_8 << 12) | 0, (codecs.CMP_VECT_8 << 12) | 0b11], dtype="<u2")
    d = codecs.decode_packet("libcaer_cmp", w.tobytes(), time_base=1000)
    assert d.y.tolist() == [18, 19] and d.x.tolist() == [3, 3]
    assert d.t_ns.tolist() == [1000 + 5000] * 2


@pytest.mark.parametrize("seed", [0, 1])
def test_libcaer_round_trip_with_timestamp_wrap_and_invalid_events(seed):
    rng = np.random.default_rng(seed)
    base_ns = 1_700_000_000_000_000_000
    ev = _stream(rng, 4000, 640, 480, t0=base_ns // 1000 + (1 << 31) - 2_000_000,
                 span_us=5_000_000)
    ev["t"] -= (1 << 31)  # timestamps start 2 s before libcaer's 31-bit clock wraps
    invalid = rng.random(ev.size) < 0.05
    payload = enc.encode_libcaer(ev, base_ns - (1 << 31) * 1000, invalid)
    ts = np.frombuffer(payload, [("d", "<u4"), ("t", "<i4")])["t"]
    assert (np.diff(ts.astype(np.int64)) < 0).any()  # wrapped inside the packet
    d = codecs.decode_packet("libcaer", payload, time_base=base_ns - (1 << 31) * 1000,
                             width=640, height=480)
    assert d.dropped == int(invalid.sum())
    _same(d, ev[~invalid])


@pytest.mark.parametrize("seed", [0, 1])
def test_libcaer_cmp_round_trip_with_vectors_and_polarity_runs(seed):
    rng = np.random.default_rng(seed)
    base_us = 1_700_000_000_000_000
    ev = _stream(rng, 5000, 640, 480, t0=base_us, span_us=(1 << 24) - 1)
    payload = enc.encode_libcaer_cmp(ev, base_us)
    codes = set((np.frombuffer(payload, "<u2") >> 12).tolist())
    assert {codecs.CMP_VECT_8, codecs.CMP_ADDR_Y, codecs.CMP_TIME_HIGH} <= codes
    d = codecs.decode_packet("libcaer_cmp", payload, time_base=base_us * 1000, width=640,
                             height=480)
    _same(d, ev)
    assert d.anchor_ns == base_us * 1000


def test_mono_round_trip():
    rng = np.random.default_rng(3)
    ev = _stream(rng, 1000, 346, 260, t0=5_000_000, span_us=1_000_000, runs=False)
    d = codecs.decode_packet("mono", enc.encode_mono(ev, 5_000_000), time_base=5_000_000_000)
    _same(d, ev)


@pytest.mark.parametrize("encoding,payload,kind,words", [
    ("evt3", b"\x00\x80\x05", "size", "truncated"),
    ("libcaer", b"\x01" * 12, "size", "truncated"),
    ("libcaer_cmp", b"\x01\x20\x00", "size", "truncated"),
    ("mono", b"\x00" * 9, "size", "truncated"),
    ("evt3", np.array([0x8001, 0x6002, 0x9000], "<u2").tobytes(), "decode", "undefined type"),
    ("libcaer_cmp", np.array([0x2001, 0x7000], "<u2").tobytes(), "decode", "unknown type"),
    ("libcaer_cmp", np.array([0x3001], "<u2").tobytes(), "decode", "before its first ADDR_X"),
    ("libcaer_cmp", np.array([0x2001, 0x50ff], "<u2").tobytes(), "decode", "VECT_BASE_Y"),
    ("libcaer", np.array([(1, -5)], [("d", "<u4"), ("t", "<i4")]).tobytes(), "decode",
     "negative"),
    ("evt4", b"", "encoding", "not supported"),
])
def test_bad_packets_are_reported_not_guessed(encoding, payload, kind, words):
    with pytest.raises(codecs.EventCodecError, match=words) as err:
        codecs.decode_packet(encoding, payload)
    assert err.value.kind == kind


def test_events_outside_the_declared_sensor_are_reported():
    ev = np.zeros(1, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"] = 700, 10, 100
    with pytest.raises(codecs.EventCodecError, match="outside the 640x480") as err:
        codecs.decode_packet("evt3", enc.encode_evt3(ev), width=640, height=480)
    assert err.value.kind == "values"


def test_decoders_are_vectorised_enough():
    """Not a speed assertion (timings are noisy here): the benchmark lives in
    `tinygpt-ros bench-codecs`. This only checks the bench function runs and reports rates."""
    from tinygpt_ros.evaluation.codec_bench import bench_codecs

    rates = bench_codecs(events=20_000, repeats=1)
    assert set(rates) == set(codecs.ENCODINGS)
    assert all(r["events"] > 0 and r["events_per_s"] > 0 for r in rates.values())
