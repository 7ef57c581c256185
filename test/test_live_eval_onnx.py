"""`tinygpt-ros eval --live` on the onnxruntime backend with the shipped model: the path a robot
without torch takes (this file also runs in the Jazzy leg, whose environment has no torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tinygpt_ros.evaluation.runner import run_eval

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "sample_bag"
MODEL = REPO / "models" / "tinygpt"


def test_live_equals_offline_on_onnxruntime(tmp_path):
    refs = tmp_path / "refs.json"  # gesture spans only: no Java caption scoring needed here
    sample_refs = json.loads((SAMPLE / "refs.json").read_text())
    refs.write_text(json.dumps({"gestures": sample_refs["gestures"][:1]}))
    report = run_eval([SAMPLE], MODEL, tmp_path / "out", refs=refs, configs=["sttf+anc"],
                      backend="onnxruntime", max_frames=4, live=True, progress=False,
                      plots=False)
    live = report["live"]
    assert live["equal"], live
    bag = report["bags"][0]
    r = live["bags"][bag["name"]]["sttf+anc"]
    assert r["compared"] == bag["frames"] + bag["event_windows"] > 0
    assert r["differences"] == [] and r["error"] is None


def test_onnxruntime_eval_imports_no_torch(tmp_path):
    """Offline eval on onnxruntime in a fresh interpreter never loads torch."""
    import subprocess

    refs = tmp_path / "refs.json"
    sample_refs = json.loads((SAMPLE / "refs.json").read_text())
    refs.write_text(json.dumps({"gestures": sample_refs["gestures"][:1]}))
    code = (
        "import sys, json; from tinygpt_ros.evaluation.runner import run_eval; "
        f"run_eval([{str(SAMPLE)!r}], {str(MODEL)!r}, {str(tmp_path / 'o')!r}, "
        "configs=['sttf+anc'], backend='onnxruntime', max_frames=2, progress=False, "
        f"plots=False, refs={str(refs)!r}); print(json.dumps('torch' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip().splitlines()[-1]
    assert out == "false"
