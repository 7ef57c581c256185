"""Energy per frame: Jetson INA3221 power rails from sysfs when present, else a FLOPs estimate.

Sysfs layouts read (both documented for the INA3221 on Jetson modules):
- JetPack 4.x (L4T r32, NVIDIA's `ina3221x` IIO driver): `/sys/bus/i2c/drivers/ina3221x/
  <bus>-<addr>/iio:device<N>/rail_name_<c>` and `in_power<c>_input` in mW, channels c = 0..2.
- JetPack 5/6 (mainline hwmon `ina3221` driver): `/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/
  hwmon/hwmon<N>/in<c>_label`, `in<c>_input` (bus voltage, mV) and `curr<c>_input` (mA),
  channels c = 1..3; unconnected channels are labelled "NC". Power = mV * mA / 1e6 W.
Both globs are parameters, so other layouts (or a fake tree in tests) work too.

Which rails: the module's input rail when one exists (`VDD_IN`, `POM_5V_IN`, `5V_IN`, ...,
whole-module power), otherwise the sum of all rails (which can double count when rails nest:
pass `rails=[...]` to choose). Energy is what those rails drew while the frame ran, idle power
included; integrate with `mark()` at frame start and end (trapezoid over the samples in the
interval, plus an optional background sampler for long frames).

Without a sensor (or if reading it fails) `energy_for` returns `flops / 1e9 * j_per_gflop`
labelled "estimate".
"""

from __future__ import annotations

import bisect
import glob
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IIO_GLOB = "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"
HWMON_GLOB = "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
# Whole-module input rails, most preferred first (Nano: POM_5V_IN, Xavier NX: 5V_IN/VDD_IN,
# Orin: VDD_IN); when one exists it alone is used (the others are parts of it).
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "5V_IN", "VDD_5V_IN", "VIN_SYS_5V0")
DEFAULT_J_PER_GFLOP = 0.1  # rough edge GPU: ~10 W at ~100 GFLOP/s (same as the ROS default)
ESTIMATE = "estimate"


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: `power_w()` reads it now."""

    name: str
    power_mw_file: Path | None = None  # ina3221x: mW
    voltage_mv_file: Path | None = None  # ina3221 hwmon: mV ...
    current_ma_file: Path | None = None  # ... and mA

    def power_w(self) -> float:
        if self.power_mw_file is not None:
            return _read_number(self.power_mw_file) / 1e3
        assert self.voltage_mv_file is not None and self.current_ma_file is not None
        return _read_number(self.voltage_mv_file) * _read_number(self.current_ma_file) / 1e6


def _read_number(path: Path) -> float:
    return float(path.read_text().split()[0])


def _read_label(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def discover_rails(iio_glob: str = IIO_GLOB, hwmon_glob: str = HWMON_GLOB) -> list[Rail]:
    """Every readable INA3221 channel under both layouts (unconnected "NC" ones skipped)."""
    rails: list[Rail] = []
    for dev in sorted(glob.glob(iio_glob)):
        d = Path(dev)
        for c in range(3):
            name = _read_label(d / f"rail_name_{c}")
            power = d / f"in_power{c}_input"
            if name and name.upper() != "NC" and power.is_file():
                rails.append(Rail(name, power_mw_file=power))
    for dev in sorted(glob.glob(hwmon_glob)):
        d = Path(dev)
        for c in range(1, 4):
            name = _read_label(d / f"in{c}_label")
            volt, curr = d / f"in{c}_input", d / f"curr{c}_input"
            if name and name.upper() != "NC" and volt.is_file() and curr.is_file():
                rails.append(Rail(name, voltage_mv_file=volt, current_ma_file=curr))
    return rails


def select_rails(rails: Sequence[Rail], names: Sequence[str] | None = None) -> list[Rail]:
    """`names` (ValueError naming what exists if one is missing), else the module input rail,
    else all rails."""
    if names:
        by_name = {r.name: r for r in rails}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"rails: {missing} not found; INA3221 rails present: "
                             f"{sorted(by_name) or 'none'}")
        return [by_name[n] for n in names]
    for total in TOTAL_RAILS:
        for r in rails:
            if r.name.upper() == total:
                return [r]
    return list(rails)


class PowerMonitor:
    """Power samples of the chosen rails and energy over time intervals.

    `mark()` samples now (when a sensor is present) and returns the time stamp; the energy of
    a frame is `energy_for(t_start, t_end, flops)` -> (joules, source), source "ina3221:<rails>"
    or "estimate". `start(period_s)` adds a background sampler (for frames much longer than
    the sensor's update interval); `stop()` ends it.
    """

    def __init__(
        self,
        rails: Sequence[Rail] | None = None,
        names: Sequence[str] | None = None,
        iio_glob: str = IIO_GLOB,
        hwmon_glob: str = HWMON_GLOB,
        j_per_gflop: float = DEFAULT_J_PER_GFLOP,
        clock: Callable[[], float] = time.monotonic,
        max_samples: int = 4096,
    ) -> None:
        if not j_per_gflop >= 0:
            raise ValueError(f"j_per_gflop must be >= 0, got {j_per_gflop}")
        found = list(rails) if rails is not None else discover_rails(iio_glob, hwmon_glob)
        self.rails = select_rails(found, names) if found else []
        self.j_per_gflop = float(j_per_gflop)
        self.clock = clock
        self._t: deque[float] = deque(maxlen=max_samples)
        self._w: deque[float] = deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failed = False

    @property
    def available(self) -> bool:
        return bool(self.rails) and not self._failed

    @property
    def source(self) -> str:
        if not self.available:
            return ESTIMATE
        return "ina3221:" + "+".join(r.name for r in self.rails)

    def power_w(self) -> float | None:
        """Summed power of the rails now, or None (no sensor, or it stopped being readable)."""
        if not self.available:
            return None
        try:
            return float(sum(r.power_w() for r in self.rails))
        except (OSError, ValueError, IndexError) as exc:
            self._failed = True
            log.warning("INA3221 power rails %s became unreadable (%s); energy is an estimate "
                        "from now on", [r.name for r in self.rails], exc)
            return None

    def sample(self) -> float:
        """Take one sample (if a sensor is present); returns its time stamp."""
        w = self.power_w()
        t = self.clock()
        if w is not None:
            with self._lock:
                self._t.append(t)
                self._w.append(w)
        return t

    mark = sample  # frame start / end

    def energy_for(self, t0: float, t1: float, flops: float = 0.0) -> tuple[float, str]:
        """Joules drawn by the rails between t0 and t1 (trapezoid over the samples, power held
        constant beyond the first/last one), or the FLOPs estimate when there is no sensor."""
        if t1 < t0:
            raise ValueError(f"t1 ({t1}) must be >= t0 ({t0})")
        if not self.available:
            return float(flops) / 1e9 * self.j_per_gflop, ESTIMATE
        with self._lock:
            ts, ws = list(self._t), list(self._w)
        if not ts:
            return float(flops) / 1e9 * self.j_per_gflop, ESTIMATE

        def at(t: float) -> float:
            i = bisect.bisect_left(ts, t)
            if i == 0:
                return ws[0]
            if i == len(ts):
                return ws[-1]
            ta, tb = ts[i - 1], ts[i]
            return ws[i] if tb == ta else ws[i - 1] + (ws[i] - ws[i - 1]) * (t - ta) / (tb - ta)

        lo, hi = bisect.bisect_right(ts, t0), bisect.bisect_left(ts, t1)
        pts = [(t0, at(t0)), *zip(ts[lo:hi], ws[lo:hi], strict=True), (t1, at(t1))]
        joules = sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in itertools.pairwise(pts))
        return float(joules), self.source

    # ------------------------------------------------------------------ background sampling

    def start(self, period_s: float = 0.005) -> None:
        """Sample every `period_s` seconds in a daemon thread (no-op without a sensor)."""
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        if not self.available or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(period_s) and self.available:
                self.sample()

        self._thread = threading.Thread(target=loop, name="tinygpt-power", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=1.0)
            self._thread = None

    close = stop


__all__ = ["DEFAULT_J_PER_GFLOP", "ESTIMATE", "PowerMonitor", "Rail", "discover_rails",
           "select_rails"]
