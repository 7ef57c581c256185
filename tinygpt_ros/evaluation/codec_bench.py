"""Throughput of the EventPacket payload decoders (ops/event_codecs.py), events per second.

Why: a 1280x720 event camera can send 10 M events/s and the node decodes on one thread, so the
decoders must keep up on one core. The stream is what a moving edge makes: events in rows of
neighbouring pixels sharing a timestamp and polarity, 10 events per microsecond, so evt3 and
libcaer_cmp get their vector words. Encoding is not timed. Wall time and the thread's CPU time
are both reported: on a shared machine the wall figure includes time other processes took."""

from __future__ import annotations

import time

import numpy as np

from tinygpt_ros.bags import event_encoders as enc
from tinygpt_ros.ops import event_codecs as codecs
from tinygpt_ros.spec.types import EVENT_DTYPE

SENSOR = {"mono": (1280, 720), "evt3": (1280, 720), "libcaer": (640, 480),
          "libcaer_cmp": (640, 480)}


def edge_stream(events: int, width: int, height: int, seed: int = 0,
                edge: str = "vertical") -> np.ndarray:
    """`events` events of an edge at 10 events per microsecond: every microsecond a run of 10
    neighbouring pixels fires with one polarity, down one column ('vertical' edge: libcaer_cmp
    packs them in vector words, evt3 needs a y word per event) or along one row ('horizontal':
    evt3 packs them in vector words)."""
    rng = np.random.default_rng(seed)
    n = events
    k = np.arange(n)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = 1_000_000 + k // 10
    run, along = k // 10, k % 10
    if edge == "vertical":
        ev["x"] = run % width
        ev["y"] = (run * 37 + along) % height
    else:
        ev["x"] = (run * 37 + along) % width
        ev["y"] = run % height
    ev["p"] = (k // 1000) % 2
    noise = rng.random(n) < 0.2  # a fifth are background noise anywhere on the sensor
    ev["x"][noise] = rng.integers(0, width, int(noise.sum()))
    ev["y"][noise] = rng.integers(0, height, int(noise.sum()))
    _, first = np.unique(np.stack([ev["t"], ev["x"], ev["y"], ev["p"]]), axis=1,
                         return_index=True)
    return ev[np.sort(first)]


def bench_codecs(events: int = 1_000_000, repeats: int = 5, seed: int = 0,
                 edge: str = "vertical") -> dict[str, dict[str, float]]:
    """For each encoding: events decoded, payload bytes, best-of-`repeats` seconds, events/s."""
    out: dict[str, dict[str, float]] = {}
    for encoding in codecs.ENCODINGS:
        width, height = SENSOR[encoding]
        ev = edge_stream(events, width, height, seed, edge)
        base_ns = int(ev["t"][0]) * 1000
        payload = enc.encode(encoding, ev, base_ns)
        best = best_cpu = float("inf")
        decoded = None
        for _ in range(max(1, repeats)):
            start, start_cpu = time.perf_counter(), time.thread_time()
            decoded = codecs.decode_packet(encoding, payload, time_base=base_ns, width=width,
                                           height=height)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.thread_time() - start_cpu)
        assert decoded is not None and decoded.size == ev.size, (encoding, decoded)
        out[encoding] = {"events": float(ev.size), "bytes": float(len(payload)),
                         "seconds": best, "events_per_s": ev.size / best,
                         "cpu_seconds": best_cpu, "events_per_cpu_s": ev.size / best_cpu}
    return out


def format_table(rates: dict[str, dict[str, float]]) -> str:
    lines = ["| encoding | events | bytes/event | best decode wall (ms) | M events/s (wall) | "
             "M events/s (thread CPU) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rates.items():
        lines.append(f"| {name} | {int(r['events'])} | {r['bytes'] / r['events']:.2f} | "
                     f"{r['seconds'] * 1e3:.1f} | {r['events_per_s'] / 1e6:.1f} | "
                     f"{r['events_per_cpu_s'] / 1e6:.1f} |")
    return "\n".join(lines)
