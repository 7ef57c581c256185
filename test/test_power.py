"""Jetson INA3221 power reading and per-frame energy, on fake sysfs trees."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tinygpt_ros.deploy.power import ESTIMATE, PowerMonitor, discover_rails, select_rails


def _write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text + "\n")


def old_tree(root: Path) -> str:
    """JetPack 4 (ina3221x IIO driver): rail_name_<c>, in_power<c>_input in mW."""
    dev = root / "ina3221x" / "6-0040" / "iio:device0"
    _write(dev, {"rail_name_0": "POM_5V_IN", "in_power0_input": "3000",
                 "rail_name_1": "POM_5V_GPU", "in_power1_input": "500",
                 "rail_name_2": "POM_5V_CPU", "in_power2_input": "800"})
    return str(root / "ina3221x" / "*" / "iio:device*")


def new_tree(root: Path, total_ma: int = 1000) -> str:
    """JetPack 5/6 (hwmon ina3221): in<c>_label, in<c>_input mV, curr<c>_input mA."""
    dev = root / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    _write(dev, {"in1_label": "VDD_IN", "in1_input": "5000", "curr1_input": str(total_ma),
                 "in2_label": "VDD_CPU_GPU_CV", "in2_input": "5000", "curr2_input": "400",
                 "in3_label": "NC", "in3_input": "0", "curr3_input": "0",
                 "update_interval": "1"})
    return str(root / "ina3221" / "*" / "hwmon" / "hwmon*")


NONE = "/nonexistent/*"


def test_discover_both_layouts(tmp_path):
    old = discover_rails(old_tree(tmp_path), NONE)
    assert [r.name for r in old] == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert old[0].power_w() == pytest.approx(3.0)
    new = discover_rails(NONE, new_tree(tmp_path))
    assert [r.name for r in new] == ["VDD_IN", "VDD_CPU_GPU_CV"]  # "NC" skipped
    assert new[0].power_w() == pytest.approx(5.0)  # 5000 mV * 1000 mA
    assert discover_rails(NONE, NONE) == []


def test_rail_selection(tmp_path):
    rails = discover_rails(old_tree(tmp_path), new_tree(tmp_path))
    assert [r.name for r in select_rails(rails)] == ["VDD_IN"]  # module input rail
    assert [r.name for r in select_rails(rails, ["POM_5V_GPU", "POM_5V_CPU"])] == [
        "POM_5V_GPU", "POM_5V_CPU"]
    with pytest.raises(ValueError, match=r"rails: \['VDD_GPU'\] not found.*POM_5V_CPU"):
        select_rails(rails, ["VDD_GPU"])
    parts = [r for r in rails if r.name in ("POM_5V_GPU", "POM_5V_CPU")]
    assert select_rails(parts) == parts  # no input rail: sum of all


def test_energy_is_trapezoid_over_marks(tmp_path):
    hw = new_tree(tmp_path, total_ma=1000)
    now = [0.0]
    mon = PowerMonitor(iio_glob=NONE, hwmon_glob=hw, clock=lambda: now[0])
    assert mon.available and mon.source == "ina3221:VDD_IN"
    curr = tmp_path / "ina3221" / "1-0040" / "hwmon" / "hwmon3" / "curr1_input"
    t0 = mon.mark()  # 5 W at t = 0
    now[0] = 0.5
    curr.write_text("1400\n")
    mon.sample()  # 7 W at t = 0.5 (background sample inside the frame)
    now[0] = 1.0
    curr.write_text("1000\n")
    t1 = mon.mark()  # 5 W at t = 1
    joules, source = mon.energy_for(t0, t1, flops=1e12)
    assert source == "ina3221:VDD_IN"
    assert joules == pytest.approx(0.5 * (5 + 7) / 2 + 0.5 * (7 + 5) / 2)  # 6 J
    # sub-interval: interpolated ends; beyond the samples the power is held
    assert mon.energy_for(0.25, 0.5)[0] == pytest.approx(0.25 * (6 + 7) / 2)
    assert mon.energy_for(1.0, 3.0)[0] == pytest.approx(2 * 5.0)
    with pytest.raises(ValueError, match="t1"):
        mon.energy_for(1.0, 0.0)


def test_estimate_without_sensor():
    mon = PowerMonitor(iio_glob=NONE, hwmon_glob=NONE, j_per_gflop=0.2)
    assert not mon.available and mon.source == ESTIMATE
    t0 = mon.mark()
    t1 = mon.mark()
    assert mon.energy_for(t0, t1, flops=3e9) == (pytest.approx(0.6), "estimate")
    with pytest.raises(ValueError, match="j_per_gflop"):
        PowerMonitor(iio_glob=NONE, hwmon_glob=NONE, j_per_gflop=-1)


def test_unreadable_sensor_falls_back_to_estimate(tmp_path, caplog):
    mon = PowerMonitor(iio_glob=old_tree(tmp_path), hwmon_glob=NONE, rails=None,
                       names=["POM_5V_GPU"])
    assert mon.power_w() == pytest.approx(0.5)
    (tmp_path / "ina3221x" / "6-0040" / "iio:device0" / "in_power1_input").unlink()
    with caplog.at_level("WARNING", logger="tinygpt_ros.power"):
        assert mon.power_w() is None
    assert "unreadable" in caplog.text
    assert mon.energy_for(0.0, 1.0, flops=1e9)[1] == ESTIMATE


def test_background_sampler(tmp_path):
    mon = PowerMonitor(iio_glob=old_tree(tmp_path), hwmon_glob=NONE)
    assert mon.source == "ina3221:POM_5V_IN"
    t0 = mon.mark()
    mon.start(period_s=0.001)
    time.sleep(0.05)
    mon.stop()
    t1 = mon.mark()
    assert len(mon._t) >= 4
    joules, _ = mon.energy_for(t0, t1)
    assert joules == pytest.approx(3.0 * (t1 - t0), rel=1e-6)
    with pytest.raises(ValueError, match="period_s"):
        mon.start(0)
    PowerMonitor(iio_glob=NONE, hwmon_glob=NONE).start()  # no sensor: nothing to sample
