"""Offline bag evaluation (`tinygpt-ros eval`): span matching and metrics on a hand-checked case,
the report and plots from the sample bag, damaged input, and the overwrite guard.

Uses a tiny trained model (trained once per module, ~5 s) and short prefixes of the sample bag.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from tinygpt_ros.bags.reader import iter_bag
from tinygpt_ros.evaluation.configs import full_knobs, parse_configs
from tinygpt_ros.evaluation.issues import Issue
from tinygpt_ros.evaluation.progress import progress_bar
from tinygpt_ros.evaluation.refs import CaptionSpan, GestureSpan, load_refs, parse_refs
from tinygpt_ros.evaluation.replay import evaluate_bag
from tinygpt_ros.evaluation.results import BagJob, BagResult, FrameRow
from tinygpt_ros.evaluation.runner import run_eval
from tinygpt_ros.evaluation.scoring import (
    frame_columns,
    score_results,
    span_gestures,
    span_hypotheses,
)
from tinygpt_ros.spec.types import NO_GESTURE, ComputeRecord

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "sample_bag"
SAMPLE_REFS = json.loads((SAMPLE / "refs.json").read_text())
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tinygpt_ros.train.recipe import train

    out = tmp_path_factory.mktemp("tiny_model")
    train("tiny", out, seed=0, threads=1)
    return str(out)


def _row(i: int, modality: str, stamp: int, caption=None, gesture=None) -> FrameRow:
    rec = ComputeRecord(frame_index=i, modality=modality, tokens_in=196, tokens_recomputed=196,
                        tokens_fused=31, branch="large")
    return FrameRow(i, modality, stamp, stamp, rec, caption, gesture)


def _gesture_refs(path: Path, spans: list[dict]) -> Path:
    path.write_text(json.dumps({"gestures": spans}))
    return path


# ------------------------------------------------------------------------ pure functions


def test_span_matching_picks_caption_at_last_image():
    stamps = [0, 10, 20, 35, 30, 50]  # not sorted: the last image is the largest stamp
    caps = ["a", "b", "c", "d", "e", "f"]
    spans = [CaptionSpan(0, 30, ["x"]), CaptionSpan(30, 60, ["y"]),
             CaptionSpan(100, 200, ["z"])]
    assert span_hypotheses(stamps, caps, spans) == ["c", "f", None]
    # gestures: windows after the first 2 of a span vote; a tie goes to the class reached first
    g_stamps = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14]
    preds = ["x", "x", "b", "a", "a", "b", "x", "x", "c", "d", None]
    g_spans = [GestureSpan(0, 10, "a"), GestureSpan(10, 20, "c"),
               GestureSpan(20, 30, "a"), GestureSpan(3, 5, "a")]
    assert span_gestures(g_stamps, preds, g_spans) == [
        ("b", 6), ("c", 5), (None, 0), (None, 2)]


def test_gesture_spans_score_the_silence_outcome():
    """The node's "none" (a window under gesture_min_events) votes like a class: it is right in
    a span labelled "none" and a miss in a gesture span."""
    refs = parse_refs({"gestures": [{"start_ns": 0, "end_ns": 100, "label": "none"},
                                       {"start_ns": 100, "end_ns": 200, "label": "hand_clap"}]})
    stamps = [0, 20, 40, 60, 80, 100, 120, 140, 160, 180]
    preds = [NO_GESTURE] * 5 + ["hand_clap", "hand_clap", NO_GESTURE, NO_GESTURE, NO_GESTURE]
    assert span_gestures(stamps, preds, refs.gestures) == [(NO_GESTURE, 5), (NO_GESTURE, 5)]


def test_metrics_hand_checked_through_span_matching():
    """Two caption spans, two configurations with known hypotheses, scored by score_results."""
    t0 = 1_000
    refs = parse_refs({
        "captions": [
            {"start_ns": t0, "end_ns": t0 + 300, "captions": ["a red ball moves left",
                                                              "the red ball rolls left"]},
            {"start_ns": t0 + 300, "end_ns": t0 + 600, "captions": ["a green cube sits still",
                                                                    "nothing moves here"]},
            {"start_ns": 9_000_000, "end_ns": 9_000_100, "captions": ["not in the bag"]},
        ],
        "gestures": [{"start_ns": t0, "end_ns": t0 + 600, "label": "hand_clap"}],
    })
    stream = {  # (stamp, caption) per image; the span's hypothesis is its last image's caption
        "exact": [(t0, "wrong"), (t0 + 200, "a red ball moves left"), (t0 + 300, "wrong"),
                  (t0 + 500, "a green cube sits still")],
        "partial": [(t0 + 100, "a red ball"), (t0 + 400, "a green cube")],
    }
    rows = {}
    for name, frames in stream.items():
        rows[name] = [_row(i, "frame", s, caption=c) for i, (s, c) in enumerate(frames)]
        votes = ["other", "other", "hand_clap", "hand_clap", "other"]
        if name == "partial":
            votes = ["hand_clap", "hand_clap", "other", "other", "other"]
        rows[name] += [_row(10 + i, "events", t0 + 100 * i, gesture=g)
                       for i, g in enumerate(votes)]
    result = BagResult("bag", "bag", {}, {}, 0, rows, [], 0.0, True)
    issues: list[Issue] = []
    out = score_results([result], {"bag": refs}, ["exact", "partial"], issues)
    assert [s["hypotheses"] for s in out["spans"]] == [
        {"exact": "a red ball moves left", "partial": "a red ball"},
        {"exact": "a green cube sits still", "partial": "a green cube"}]
    assert out["references"]["caption_spans_scored"] == 2
    exact, partial = out["captions"]["exact"], out["captions"]["partial"]
    assert exact["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert exact["ROUGE-L"] == pytest.approx(1.0, abs=1e-9)
    # BLEU-4 by hand: 1-, 2-, 3-gram precisions 1; no 4-gram at all, which pycocoevalcap
    # scores as (0 + 1e-15) / (0 + 1e-9); brevity penalty with the closest reference lengths
    # (5 and 3) against 3 + 3 hypothesis words: exp(1 - 8 / 6).
    assert partial["BLEU-4"] == pytest.approx((1e-6) ** 0.25 * math.exp(1 - 8 / 6), rel=1e-6)
    # ROUGE-L by hand: LCS 3, best P = 3/3, best R = 3/5 for both spans;
    # F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.6 / 2.04.
    assert partial["ROUGE-L"] == pytest.approx(2.44 * 0.6 / 2.04, abs=1e-6)
    assert exact["METEOR"] > 0.9 > partial["METEOR"]
    assert exact["CIDEr"] > partial["CIDEr"]
    # gestures: exact's votes after the 2 warm-up windows: hand_clap x2, other -> right
    assert out["gestures"]["exact"] == {"accuracy": 1.0, "correct": 1, "spans": 1}
    assert out["gestures"]["partial"]["accuracy"] == 0.0
    assert [(i.kind, i.count) for i in issues] == [("ref_span_not_in_bag", 1)]


def test_parse_configs_named_and_sweeps():
    cfgs = parse_configs(["dense", "fusion_threshold=0.2,1", "sttf:max_fused_tokens=16"])
    assert list(cfgs) == ["dense", "fusion_threshold=0.2", "fusion_threshold=1",
                          "sttf:max_fused_tokens=16"]
    assert cfgs["fusion_threshold=1"] == {"sttf_enabled": True, "anc_enabled": True,
                                          "fusion_threshold": 1.0}
    assert cfgs["sttf:max_fused_tokens=16"]["anc_enabled"] is False
    assert full_knobs(cfgs["dense"])["sttf_enabled"] is False
    for bad, word in (["nope"], "nope"), (["fusion_threshold=-1"], "fusion_threshold"), \
            (["bogus_knob=1"], "bogus_knob"), (["x:fusion_threshold=1"], "'x'"), \
            (["max_fused_tokens=2.5"], "max_fused_tokens"):
        with pytest.raises(ValueError, match=word):
            parse_configs(bad)


def test_refs_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"captions\[0\]\.end_ns"):
        parse_refs({"captions": [{"start_ns": 5, "end_ns": 5, "captions": ["a"]}]})
    with pytest.raises(ValueError, match=r"captions\[0\]\.captions"):
        parse_refs({"captions": [{"start_ns": 1, "end_ns": 5, "captions": []}]})
    with pytest.raises(ValueError, match=r"gestures\[1\]\.label"):
        parse_refs({"gestures": [{"start_ns": 1, "end_ns": 5, "label": "a"},
                                    {"start_ns": 1, "end_ns": 5}]})
    with pytest.raises(ValueError, match="does not exist"):
        load_refs(tmp_path / "missing.json")
    refs = load_refs(SAMPLE / "refs.json")
    assert len(refs.captions) == len(SAMPLE_REFS["captions"])
    assert len(refs.gestures) == 11


def test_progress_bar_lines():
    buf = io.StringIO()
    bar = progress_bar(40, "bag", stream=buf)
    for _ in range(40):
        bar.update()
    bar.close()
    lines = buf.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("[eval] bag [")
    assert "40/40 msgs 100%" in lines[-1]


# ------------------------------------------------------------------------ sample bag report


@pytest.fixture(scope="module")
def sample_report(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "eval"
    report = run_eval([SAMPLE], tiny_model, out, configs=["dense", "sttf+anc",
                                                             "fusion_threshold=1.0"],
                         max_frames=30, progress=False, command="test")
    return out, report


def test_report_files_and_plots_from_sample_bag(sample_report):
    out, _ = sample_report
    for name in ("report.json", "report.md", *be_plot_files()):
        assert (out / name).stat().st_size > 0, name
    for name in be_plot_files():
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((out / "report.json").read_text())
    assert saved["model"]["sha256"] and len(saved["model"]["sha256"]) == 64
    assert list(saved["configs"]) == ["dense", "sttf+anc", "fusion_threshold=1.0"]
    assert saved["configs"]["fusion_threshold=1.0"]["fusion_threshold"] == 1.0
    bag = saved["bags"][0]
    assert bag["ok"] and bag["frames"] == 30 and bag["event_windows"] > 100
    # all configurations scored against the same spans: the first clips' spans are in range
    assert saved["references"]["caption_spans_scored"] >= 2
    assert set(saved["captions"]) == set(saved["configs"])
    assert saved["gestures"]["dense"]["spans"] >= 4
    kinds = {i["kind"] for i in saved["issues"]}
    assert kinds == {"ref_span_not_in_bag"}  # spans after the 30-frame prefix only
    for c in saved["configs"]:
        cols = saved["frames"][c][bag["name"]]
        assert len(cols["stamp_ns"]) == bag["frames"] + bag["event_windows"]
        assert set(cols["branch"]) <= {"reuse", "small", "medium", "large"}
        assert all(t >= 1 for t in cols["tokens_fused"])
    dense, sttf = saved["compute"]["dense"]["frame"], saved["compute"]["sttf+anc"]["frame"]
    assert dense["recomputed_pct"] == 100.0 and dense["flops_ratio"] == pytest.approx(1.0, 0.01)
    assert sttf["total_gflops"] < dense["total_gflops"]
    md = (out / "report.md").read_text()
    for text in ("## Caption quality", "## Gesture accuracy", "## Compute per camera frame",
                 "| fusion_threshold=1.0 |", "![quality](quality_vs_flops.png)"):
        assert text in md


def be_plot_files():
    from tinygpt_ros.evaluation.report import PLOT_FILES

    return list(PLOT_FILES.values())


def test_existing_report_is_not_overwritten(sample_report, tiny_model, tmp_path):
    from tinygpt_ros import cli

    out, _ = sample_report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_eval([SAMPLE], tiny_model, out, configs=["dense"], max_frames=2, progress=False)
    assert cli.main(["eval", str(SAMPLE), "--model", tiny_model, "--out", str(out),
                     "--configs", "dense"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # with overwrite it is replaced (gesture-only refs: no caption scoring needed)
    refs = _gesture_refs(tmp_path / "refs.json", SAMPLE_REFS["gestures"][:1])
    rep = run_eval([SAMPLE], tiny_model, out, refs=refs, configs=["dense"], max_frames=2,
                      progress=False, overwrite=True, plots=False)
    assert json.loads((out / "report.json").read_text())["configs"] == {
        "dense": rep["configs"]["dense"]}


# ------------------------------------------------------------------------ damaged input


def _damaged_bag(path: Path) -> Path:
    """6 camera frames from the sample bag (no events topic): frame 2's CDR bytes cut short
    (fails to deserialize), frame 4 re-encoded as 32FC1 (fails to convert)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    msgtype = "sensor_msgs/msg/Image"
    msgs = []
    for i, m in enumerate(iter_bag(SAMPLE, ["/camera/image_raw"])):
        if i == 6:
            break
        msgs.append(m)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        conn = writer.add_connection("/camera/image_raw", msgtype, typestore=ts)
        for i, m in enumerate(msgs):
            raw = m.rawdata
            if i == 2:
                raw = raw[:40]
            elif i == 4:
                img = dataclasses.replace(ts.deserialize_cdr(raw, msgtype), encoding="32FC1")
                raw = bytes(ts.serialize_cdr(img, msgtype))
            writer.write(conn, m.timestamp_ns, raw)
    spans = [SAMPLE_REFS["gestures"][0], {"start_ns": 1, "end_ns": 2, "label": "hand_clap"}]
    _gesture_refs(path / "refs.json", spans)
    return path


@pytest.fixture(scope="module")
def damaged_report(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("damaged")
    truncated = tmp / "truncated_bag"
    truncated.mkdir()
    mcap = SAMPLE / "sample_bag.mcap"
    data = mcap.read_bytes()
    (truncated / "truncated_bag.mcap").write_bytes(data[: int(len(data) * 0.6)])
    shutil.copy(SAMPLE / "metadata.yaml", truncated / "metadata.yaml")
    _gesture_refs(truncated / "refs.json", SAMPLE_REFS["gestures"][:3])
    damaged = _damaged_bag(tmp / "damaged_bag")
    garbage = tmp / "garbage_bag"
    garbage.mkdir()
    (garbage / "garbage_bag.mcap").write_bytes(b"this is not a bag" * 10)
    out = tmp / "report"
    report = run_eval([truncated, damaged, garbage], tiny_model, out,
                         configs=["dense", "sttf+anc"], max_frames=12, workers=2,
                         progress=False, plots=False)
    return out, report


def test_damaged_bags_are_listed_and_the_rest_evaluated(damaged_report):
    out, _ = damaged_report
    saved = json.loads((out / "report.json").read_text())
    bags = {b["name"]: b for b in saved["bags"]}
    assert bags["truncated_bag"]["ok"] and bags["truncated_bag"]["frames"] == 12
    assert bags["damaged_bag"]["ok"] and bags["damaged_bag"]["frames"] == 4  # 6 - 2 bad
    assert not bags["garbage_bag"]["ok"]
    issues = {(i["bag"], i["kind"]): i for i in saved["issues"]}
    assert "salvaged" in issues[("truncated_bag", "bag_truncated")]["message"]
    assert issues[("damaged_bag", "deserialize")]["count"] == 1
    assert "32FC1" in issues[("damaged_bag", "conversion_encoding")]["examples"][0]
    assert issues[("damaged_bag", "topic_missing")]["message"].startswith("events topic")
    assert issues[("garbage_bag", "bag_unreadable")]["severity"] == "error"
    missing = issues[("damaged_bag", "ref_span_not_in_bag")]
    assert missing["count"] == 2  # its only events span and the one before the bag
    # the valid gesture spans of the truncated bag were still scored
    assert saved["gestures"]["dense"]["spans"] == 2
    md = (out / "report.md").read_text()
    assert "bag_truncated" in md and "bag_unreadable" in md and "deserialize" in md


def test_cli_eval_reports_bad_arguments(tiny_model, tmp_path, capsys):
    from tinygpt_ros import cli

    assert cli.main(["eval", str(SAMPLE), "--model", tiny_model, "--out", str(tmp_path / "o"),
                     "--configs", "fusion_threshold=abc"]) == 2
    assert "fusion_threshold" in capsys.readouterr().err
    assert cli.main(["eval", str(SAMPLE), "--model", str(tmp_path / "no_model"), "--out",
                     str(tmp_path / "o")]) == 2
    assert "no_model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_fails_when_all_references_lie_outside_the_bag(tiny_model, tmp_path, capsys):
    """Nothing scored is a failure (exit 1, the reason on stderr); spans partly outside the
    evaluated part stay a warning (exit 0)."""
    from tinygpt_ros import cli

    late = [{**g, "start_ns": g["start_ns"] + 10**12, "end_ns": g["end_ns"] + 10**12}
            for g in SAMPLE_REFS["gestures"][:2]]
    args = ["eval", str(SAMPLE), "--model", tiny_model, "--configs", "dense", "--max-frames",
            "3", "--no-progress"]
    outside = _gesture_refs(tmp_path / "outside.json", late)
    assert cli.main([*args, "--out", str(tmp_path / "a"), "--refs", str(outside)]) == 1
    err = capsys.readouterr().err
    assert "refs_outside_bag" in err and "every reference span lies outside the bag" in err
    saved = json.loads((tmp_path / "a" / "report.json").read_text())
    assert saved["references"]["gesture_spans_scored"] == 0
    partial = _gesture_refs(tmp_path / "partial.json", SAMPLE_REFS["gestures"][:1] + late)
    assert cli.main([*args, "--out", str(tmp_path / "b"), "--refs", str(partial)]) == 0
    err = capsys.readouterr().err
    assert "ref_span_not_in_bag" in err and "error" not in err


def test_sqlite3_bag_gives_the_mcap_output(tiny_model, tmp_path):
    """The same messages in a sqlite3 bag: identical engine output to the mcap sample."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    topics = {"/camera/image_raw": "sensor_msgs/msg/Image",
              "/events": "sensor_msgs/msg/PointCloud2"}
    path = tmp_path / "db_bag"
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
    with writer:
        conns = {t: writer.add_connection(t, m, typestore=ts) for t, m in topics.items()}
        images = 0
        for m in iter_bag(SAMPLE, list(topics)):
            images += m.topic == "/camera/image_raw"
            if images > 4:
                break
            writer.write(conns[m.topic], m.timestamp_ns, m.rawdata)
    assert list(path.glob("*.db3"))
    knobs = {"sttf+anc": full_knobs({})}
    outs = []
    for bag in (path, SAMPLE):
        job = BagJob(str(bag), bag.name, tiny_model, "torch", knobs, "/camera/image_raw",
                        "/events", max_frames=4, progress=False)
        r = evaluate_bag(job)
        assert r.ok and not r.issues
        cols = frame_columns(r, "sttf+anc")
        outs.append({k: v for k, v in cols.items() if k not in ("latency_ms", "conversion_ms")})
    assert outs[0] == outs[1] and len(outs[0]["stamp_ns"]) == 4 + 16


def test_shared_refs_spans_are_credited_to_the_bag_that_has_them():
    refs = parse_refs({"gestures": [
        {"start_ns": 0, "end_ns": 100, "label": "a"},
        {"start_ns": 1000, "end_ns": 1100, "label": "b"},
        {"start_ns": 5000, "end_ns": 5100, "label": "c"}]})
    bags = []
    for name, t0, label in (("one", 0, "a"), ("two", 1000, "x")):
        rows = {"cfg": [_row(i, "events", t0 + 10 * i, gesture=label) for i in range(5)]}
        bags.append(BagResult(name, name, {}, {}, 5, rows, [], 0.0, True))
    issues: list[Issue] = []
    out = score_results(bags, {"one": refs, "two": refs}, ["cfg"], issues)
    assert [(g["bag"], g["label"], g["predictions"]["cfg"]) for g in out["gesture_spans"]] == [
        ("one", "a", "a"), ("two", "b", "x")]
    assert out["gestures"]["cfg"] == {"accuracy": 0.5, "correct": 1, "spans": 2}
    assert out["captions"] is None
    assert [(i.bag, i.kind, i.count) for i in issues] == [("one, two", "ref_span_not_in_bag", 1)]
