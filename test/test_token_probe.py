"""`tinygpt-ros probe`: held-out linear probes of the encoder's tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinygpt_ros.cli import main
from tinygpt_ros.evaluation import token_probe


def test_probe_learns_separable_labels_and_not_random_ones():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 16))
    y_fit, y_score = rng.integers(3, size=300), rng.integers(3, size=300)
    x_fit = centres[y_fit] + rng.normal(size=(300, 16))
    x_score = centres[y_score] + rng.normal(size=(300, 16))
    fit, score = token_probe.fit_and_score(x_fit, y_fit, x_score, y_score)
    assert fit > 0.95 and score > 0.95
    # labels unrelated to the inputs: the probe may fit them, but held out it is at chance
    noise = rng.normal(size=(300, 64))
    fit, score = token_probe.fit_and_score(noise, y_fit, rng.normal(size=(300, 64)), y_score)
    assert fit > score + 0.15
    assert score < 0.5


def test_unknown_attribute_is_refused():
    s = token_probe.ProbeSet({}, np.zeros(3, np.int64), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="attribute"):
        token_probe._targets(s, "size")


def test_shipped_encoder_carries_colour_per_patch(tmp_path, capsys):
    """The shipped captioner names colours right on 72-85% of segments: the tokens must carry
    the colour of the object over a patch, well above the floor of always answering the most
    common colour, on clips the probe was not fitted on."""
    out = tmp_path / "probe.json"
    assert main(["probe", "--fit-clips", "12", "--score-clips", "6", "--steps", "150",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| colour | branch 2 |" in table
    report = json.loads(out.read_text())
    assert report["split"] == "val"
    rows = {(r["attribute"], r["layer"]): r for r in report["rows"]}
    assert set(rows) == {(a, layer) for a in token_probe.ATTRIBUTES
                         for layer in ("embedding", "branch 0", "branch 1", "branch 2")}
    colour = rows[("colour", "branch 2")]
    assert colour["scored_patches"] > 50
    assert colour["heldout_accuracy"] > colour["floor"] + 0.2


def test_probe_refuses_empty_clip_counts():
    with pytest.raises(SystemExit, match="at least 1"):
        main(["probe", "--fit-clips", "0"])
