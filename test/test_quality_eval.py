"""`tinygpt-ros quality`'s building blocks on a tiny trained model: captions with a bootstrap
interval against dense, gestures by majority vote, and the markdown table."""

from __future__ import annotations

import math

import pytest

from tinygpt_ros.data.gestures import make_gesture_set
from tinygpt_ros.data.scenes import make_clips
from tinygpt_ros.evaluation.quality import (
    BLIND,
    evaluate_captions,
    evaluate_gestures,
    quality_markdown,
)
from tinygpt_ros.runtime.torch_engine import TorchEngine
from tinygpt_ros.train.recipe import EVENT_WINDOW_US


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tinygpt_ros.train.recipe import train

    d = train("tiny", tmp_path_factory.mktemp("quality") / "tiny", seed=0, threads=1)
    return TorchEngine.from_dir(d)


def test_captions_gestures_and_table(engine):
    clips = [c for m in ("still", "busy")
             for c in make_clips("val", 2, motion=m, base_seed=0, num_frames=12)]
    configs = {"dense": {"sttf_enabled": False, "anc_enabled": False},
               "sttf+anc": {"sttf_enabled": True, "anc_enabled": True}}
    knobs_before = engine.knobs()
    cap = evaluate_captions(engine, clips, configs, n_boot=20)
    assert engine.knobs() == knobs_before  # knobs restored
    assert cap["segments"] == sum(len(c.segments) for c in clips)
    assert set(cap["scores"]) == {*configs, BLIND}  # plus one fixed caption for every segment
    assert set(cap["attributes"]) == {*configs, BLIND}
    assert cap["attributes"][BLIND]["shape"]["accuracy"] == 0.0  # it names no shape
    assert cap["attribute_ceiling"]["action"]["accuracy"] == 1.0
    # an untrained-size model may score CIDEr 0 on a resample: then the interval is NaN
    intervals = cap["cider_vs_dense_interval"]
    assert set(intervals) == set(configs)
    for lo, hi in intervals.values():
        assert (math.isnan(lo) and math.isnan(hi)) or lo <= hi
    assert cap["compute"]["sttf+anc"]["all"].fused_tokens <= engine.knobs()["max_fused_tokens"]
    ges = evaluate_gestures(engine, make_gesture_set("val", 1, base_seed=0), EVENT_WINDOW_US,
                            configs={"sttf": {"sttf_enabled": True, "anc_enabled": False}})
    assert ges["clips"] == 11 and 0.0 <= ges["sttf"]["accuracy"] <= 1.0
    md = quality_markdown(cap, ges, "tinygpt-ros quality --split val")
    assert "95% interval" in md and "| sttf+anc |" in md and "Gesture accuracy" in md
    assert f"| {BLIND} |" in md and "| references |" in md
