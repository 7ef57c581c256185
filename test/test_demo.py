"""The README's main command: the graph comes up, the sample bag plays, captions and a summary
appear. Runs the real node graph in-process on the user's ROS domain (or a private one)."""

from __future__ import annotations

import pytest
from conftest import ros_domain_id as harness_domain_id

from tinygpt_ros.cli.paths import default_sample_bag
from tinygpt_ros.demo import run_demo
from tinygpt_ros.ros.domain import RANDOM_DOMAIN_RANGE, ros_domain_id

pytest_plugins = ["ros_fixtures"]  # fixture: model_dir (the shipped model)


def test_demo_plays_sample_bag_and_summarises(model_dir, monkeypatch):
    domain = harness_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))  # a user's setting must be honoured
    lines: list[str] = []
    rc = run_demo(default_sample_bag(), model_dir, out=lines.append)
    text = "\n".join(lines)
    assert rc == 0, text
    assert f"ROS domain {domain}\n" in text + "\n"
    assert any(line.startswith("  caption : ") for line in lines), text
    assert any(line.startswith("  gesture : ") for line in lines), text
    assert "played 330 messages" in text
    assert "camera frames: 66" in text and "event windows: 264" in text
    assert "dropped / errors  : 0 / 0" in text
    assert "% of dense" in text


def test_demo_plays_a_driver_shaped_event_packet_bag(model_dir, tmp_path, monkeypatch):
    """`make-sample --event-encoding evt3`: the demo subscribes the node to EventPacket and
    every evt3 window (1280x720 sensor) reaches the engine."""
    pytest.importorskip("event_camera_msgs.msg", reason="event_camera_msgs is built for Kilted "
                        "only (scripts/setup.sh)")
    from tinygpt_ros.bags.sample import write_sample_bag

    monkeypatch.setenv("ROS_DOMAIN_ID", str(harness_domain_id()))
    bag = write_sample_bag(tmp_path / "evt3_bag", event_encoding="evt3")
    lines: list[str] = []
    rc = run_demo(bag, model_dir, out=lines.append)
    text = "\n".join(lines)
    assert rc == 0, text
    assert "event windows: 264" in text and "dropped / errors  : 0 / 0" in text, text
    assert any(line.startswith("  gesture : ") for line in lines), text


def test_domain_is_the_users_when_set_else_random():
    assert ros_domain_id({"ROS_DOMAIN_ID": "42"}) == 42
    assert ros_domain_id({"ROS_DOMAIN_ID": " 0 "}) == 0
    lo, hi = RANDOM_DOMAIN_RANGE
    assert all(lo <= ros_domain_id({}) <= hi for _ in range(50))
    assert lo <= ros_domain_id({"ROS_DOMAIN_ID": ""}) <= hi


@pytest.mark.parametrize("bad", ["abc", "-1", "500"])
def test_domain_refuses_a_bad_setting_by_name(bad):
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        ros_domain_id({"ROS_DOMAIN_ID": bad})
