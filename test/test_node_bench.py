"""`tinygpt-ros bench-node` end to end, shortened: the real graph in a subprocess, a couple of
seconds of 640x480 traffic at camera rates, then the report's structure and that frames flowed.
Timing is never asserted (the machine is shared); counts and structure are."""

from __future__ import annotations

import json
import os

import numpy as np

from tinygpt_ros.cli import build_parser, main
from tinygpt_ros.evaluation import node_bench
from tinygpt_ros.spec.types import STAGES


def test_generated_streams_are_camera_sized_and_differ_in_motion():
    still = node_bench.generated_stream("still", num_frames=6)
    pan = node_bench.generated_stream("pan", num_frames=6)
    assert still.frames[0].shape == (480, 640, 3) and still.frames[0].dtype == np.uint8
    assert np.array_equal(still.frames[0], still.frames[-1])
    assert not np.array_equal(pan.frames[0], pan.frames[-1])
    assert still.event_windows and all(w["t"].max(initial=0) < 50_000
                                       for w in still.event_windows)


def test_size_sets_every_generated_stream_and_a_bad_size_is_refused_first(tmp_path):
    """`--size H W` measures a 720p or 1080p camera the way VGA is measured; a size the
    streams cannot be drawn at is refused before any node or publisher starts."""
    for name in node_bench.STREAMS:
        s = node_bench.generated_stream(name, size=(72, 128), num_frames=4)
        assert {f.shape for f in s.frames} == {(72, 128, 3)}, name
    args = build_parser().parse_args(["bench-node", "--size", "720", "1280"])
    assert tuple(args.size) == (720, 1280)
    assert tuple(build_parser().parse_args(["bench-node"]).size) == node_bench.FRAME_SIZE
    for bad in [(8, 640), (480,), (480, 640, 3)]:
        try:
            node_bench.run_node_bench(size=bad, workdir=tmp_path / "w")
        except ValueError as exc:
            assert "size" in str(exc)
        else:
            raise AssertionError(f"size {bad} was accepted")
        assert not (tmp_path / "w").exists()


def test_the_photo_pan_stream_is_textured_moves_and_loops_without_a_jump():
    """The generated scenes are flat backgrounds, where the motion stage estimates nothing;
    this stream is the one that makes the node run its motion estimator."""
    from tinygpt_ros import ops
    from tinygpt_ros.ops import motion as M

    s = node_bench.generated_stream("photo_pan", num_frames=12)
    assert len(s.frames) == 12 and s.frames[0].shape == (480, 640, 3)
    assert M._ANCHORS.textured_blocks(M.gray(ops.frame_to_unit(s.frames[0]))) \
        >= M.MIN_TEXTURED_BLOCKS
    steps = [np.abs(a.astype(int) - b.astype(int)).mean()
             for a, b in zip(s.frames, [*s.frames[1:], s.frames[0]], strict=True)]
    assert min(steps) > 0  # the camera moves on every frame...
    assert max(steps) < 1.5 * min(steps)  # ...including from the last frame to the first
    np.testing.assert_array_equal(s.frames[1], s.frames[-1])  # forward, then back


def test_bench_node_runs_the_graph_and_reports(ros, tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain_id))
    out = tmp_path / "bench"
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nkept text\n")
    args = ["bench-node", "--configs", "dense", "sttf+anc", "--qos", "reliable",
            "--transports", "raw", "--streams", "still", "--seconds", "4",
            "--out", str(out), "--markdown", str(md)]
    assert build_parser().parse_args(args).func is not None
    assert main(args) == 0
    report = json.loads((out / "node_bench.json").read_text())
    assert report["machine"]["thread_env"] == {
        k: os.environ[k] for k in node_bench.THREAD_ENV if k in os.environ}
    assert [(r["config"], r["qos"], r["transport"]) for r in report["runs"]] == [
        ("dense", "reliable", "raw"), ("sttf+anc", "reliable", "raw")]
    for run in report["runs"]:
        assert "blas_threads=1" in run["threads"]
        s = run["streams"]["still"]
        assert s["images_published"] >= 30 and s["events_published"] >= 20
        assert 0 < s["images_processed"] <= s["images_published"]
        assert 0 < s["events_processed"] <= s["events_published"]
        accounted = (s["images_processed"] + s["events_processed"] + s["mailbox_dropped"]
                     + s["lost_before_node"])
        assert accounted >= s["images_published"] + s["events_published"]
        assert s["latency_ms_p50"] > 0 and s["caption_latency_ms_p50"] > 0
        assert 0 < s["conversion_ms_p50"] <= s["ros_overhead_ms_p50"]  # part of the overhead
        assert 0 < s["diagnostics_ms_p50"] <= s["ros_overhead_ms_p50"]  # and so is this
        # before the engine: the middleware's delivery and the mailbox, inside the latency
        assert 0 < s["input_age_ms_p50"] + s["queue_ms_p50"] < s["latency_ms_p50"]
        assert s["node_rss_mb_max"] > 50
        assert run["rss_timeline"] and run["captions_received"] >= s["images_processed"]
        assert s["node_transport_lost"] >= 0  # the node's own count of middleware losses
        assert run["node_summary"]["incompatible_qos"] == "0"  # the bench's QoS matched
        stages = s["stage_ms"]  # engine ms per stage from the node's own diagnostics
        assert set(stages) == set(STAGES) and stages["preprocess"][0] > 0
        assert all(len(v) == 3 for v in stages.values())
    ratios = report["targets"]["reliable/raw"]["latency_p50_sttf_over_dense"]
    assert set(ratios) == {"still"} and ratios["still"] > 0
    text = md.read_text()
    assert "kept text" in text and "## Node at camera rates" in text
    assert "<!-- node:start" in text and "| reliable | raw | sttf+anc | still |" in text
    assert "Engine ms per stage" in text


def test_bench_node_measures_a_node_without_frame_diagnostics(ros, tmp_path, monkeypatch):
    """With frame_diagnostics false the node sends no per-frame status, and the bench takes
    what the 1 Hz summaries report: the images processed and their ROS overhead, with the
    per-frame figures left unmeasured rather than guessed."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain_id))
    out = tmp_path / "bench"
    args = ["bench-node", "--configs", "sttf+anc", "--qos", "reliable", "--transports", "raw",
            "--streams", "still", "--seconds", "4", "--param", "frame_diagnostics=false",
            "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "node_bench.json").read_text())
    (run,) = report["runs"]
    assert run["frame_diagnostics"] is False
    s = run["streams"]["still"]
    assert s["source"] == "summary" and s["summaries_used"] >= 1
    assert 0 < s["images_processed"] <= s["images_published"]
    assert s["events_processed"] is None and s["latency_ms_p50"] is None
    assert s["ros_overhead_ms_p50"] > 0 and 0 < s["ros_overhead_share_p50"] < 1
    sttf = report["targets"]["reliable/raw"]["sttf+anc"]
    assert sttf["published"] == s["images_published"]  # event windows: processed unknown
    text = (out / "node_bench.md").read_text()
    assert "`frame_diagnostics: false`" in text and "from the 1 Hz summaries" in text


def test_stage_percentiles_single_out_the_slowest_frames():
    frames = [{"latency_ms_total": "10", "latency_ms_motion": "4", "latency_ms_decoder": "1"}
              for _ in range(40)]
    frames += [{"latency_ms_total": "90", "latency_ms_motion": "4", "latency_ms_decoder": "80"}
               for _ in range(2)]
    sm = node_bench.stage_percentiles(frames)
    assert sm["motion"] == [4.0, 4.0, 4.0]
    assert sm["decoder"][0] == 1.0 and sm["decoder"][2] == 80.0  # the tail is the decoder
    assert node_bench.stage_percentiles([]) == {}


def test_a_publisher_profile_reaches_the_bench_process_but_not_the_node(monkeypatch, tmp_path):
    import pytest

    for var in node_bench.PROFILE_VARS:  # recorded, so teardown restores what was there
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    with pytest.raises(ValueError, match="no such file"):
        node_bench.use_publisher_profile(tmp_path / "missing.xml")
    profile = tmp_path / "camera.xml"
    profile.write_text("<dds/>")
    set_here = node_bench.use_publisher_profile(profile)
    assert all(os.environ[v] == str(profile.resolve()) for v in node_bench.PROFILE_VARS)
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)  # none set: the run's own goes in
    env = node_bench.node_environment(7, set_here)
    assert not set(node_bench.PROFILE_VARS) & set(env) and env["ROS_DOMAIN_ID"] == "7"
    monkeypatch.setenv("ROS_DOMAIN_ID", "57")  # one the user set is honoured
    assert node_bench.node_environment(7, set_here)["ROS_DOMAIN_ID"] == "57"
    args = build_parser().parse_args(["bench-node", "--publisher-profile", str(profile)])
    assert args.publisher_profile == str(profile)
