"""The README's main command: the graph comes up, the sample bag plays, captions and a summary
appear. Runs the real node graph in-process on a private ROS domain."""

from __future__ import annotations

import random

from tinygpt_ros.cli.paths import default_sample_bag
from tinygpt_ros.demo import run_demo

pytest_plugins = ["ros_fixtures"]  # fixture: model_dir (the shipped model)


def test_demo_plays_sample_bag_and_summarises(model_dir):
    lines: list[str] = []
    rc = run_demo(default_sample_bag(), model_dir, out=lines.append,
                  domain_id=random.SystemRandom().randint(1, 100))
    text = "\n".join(lines)
    assert rc == 0, text
    assert any(line.startswith("  caption : ") for line in lines), text
    assert any(line.startswith("  gesture : ") for line in lines), text
    assert "played 330 messages" in text
    assert "camera frames: 66" in text and "event windows: 264" in text
    assert "dropped / errors  : 0 / 0" in text
    assert "% of dense" in text
