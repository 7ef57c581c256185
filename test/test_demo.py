"""The README's main command: the graph comes up, the sample bag plays, captions and a summary
appear. Runs the real node graph in-process on a private ROS domain."""

from __future__ import annotations

import os
import random

from ros_fixtures import SHIPPED_MODEL_DIR

from tinygpt_ros.cli import default_sample_bag
from tinygpt_ros.demo import run_demo


def test_demo_plays_sample_bag_and_summarises():
    lines: list[str] = []
    model = os.environ.get("TINYGPT_ROS_TEST_MODEL_DIR") or str(SHIPPED_MODEL_DIR)
    rc = run_demo(default_sample_bag(), model, out=lines.append,
                  domain_id=random.SystemRandom().randint(1, 100))
    text = "\n".join(lines)
    assert rc == 0, text
    assert any(line.startswith("  caption : ") for line in lines), text
    assert any(line.startswith("  gesture : ") for line in lines), text
    assert "played 330 messages" in text
    assert "camera frames: 66" in text and "event windows: 264" in text
    assert "dropped / errors  : 0 / 0" in text
    assert "% of dense" in text
