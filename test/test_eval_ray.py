"""`tinygpt-ros eval --ray`: the bags replayed as Ray tasks (a local Ray instance with 2 CPUs,
one task per bag) give the same report numbers as the local process pool, on the sample bag and
on a bag this test writes; the package never imports Ray unless asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tinygpt_ros.bags.reader import iter_bag
from tinygpt_ros.evaluation.runner import run_eval

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "sample_bag"
SAMPLE_REFS = json.loads((SAMPLE / "refs.json").read_text())
TIMING = {"latency_ms", "conversion_ms", "latency_ms_p50", "latency_ms_p95",
          "conversion_ms_mean", "seconds", "phases", "created", "machine", "runner", "command",
          "workers"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tinygpt_ros.train.recipe import train

    out = tmp_path_factory.mktemp("tiny_model")
    train("tiny", out, seed=0, threads=1)
    return str(out)


def numbers(doc: Any) -> Any:
    """The report without what depends on timing or on where it ran."""
    if isinstance(doc, dict):
        return {k: numbers(v) for k, v in doc.items() if k not in TIMING}
    if isinstance(doc, list):
        return [numbers(v) for v in doc]
    return doc


def _written_bag(path: Path) -> Path:
    """Camera frames 10..15 of the sample bag and their event windows, in a sqlite3 bag."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    topics = {"/camera/image_raw": "sensor_msgs/msg/Image",
              "/events": "sensor_msgs/msg/PointCloud2"}
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
    with writer:
        conns = {t: writer.add_connection(t, m, typestore=ts) for t, m in topics.items()}
        images = 0
        for m in iter_bag(SAMPLE, list(topics)):
            images += m.topic == "/camera/image_raw"
            if images > 16:
                break
            if images >= 10:
                writer.write(conns[m.topic], m.timestamp_ns, m.rawdata)
    return path


@pytest.mark.timeout(900)  # about a minute on an idle 2-core machine; CI machines are shared
def test_ray_gives_the_local_numbers(tiny_model, tmp_path):
    written = _written_bag(tmp_path / "written_bag")
    refs = tmp_path / "refs.json"  # gesture spans only: no Java caption scoring needed here
    refs.write_text(json.dumps({"gestures": SAMPLE_REFS["gestures"][:4]}))
    kwargs = dict(refs=refs, configs=["dense", "sttf+anc"], max_frames=6, threads=1,
                  progress=False, plots=False)
    local = run_eval([SAMPLE, written], tiny_model, tmp_path / "local", **kwargs)
    on_ray = run_eval([SAMPLE, written], tiny_model, tmp_path / "ray", ray="local", workers=2,
                      **kwargs)
    assert [b["ok"] for b in on_ray["bags"]] == [True, True]
    assert on_ray["bags"][1]["frames"] == 6 and on_ray["gestures"]["dense"]["spans"] >= 1
    assert numbers(on_ray) == numbers(local)
    assert on_ray["runner"].startswith("Ray (local)") and local["runner"] is None
    md = (tmp_path / "ray" / "report.md").read_text()
    assert "with Ray (local), one task per bag" in md


def test_ray_is_imported_only_when_asked():
    code = ("import sys, tinygpt_ros.cli.eval_bags, tinygpt_ros.evaluation.runner, "
            "tinygpt_ros.ros.node; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
