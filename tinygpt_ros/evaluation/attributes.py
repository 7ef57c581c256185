"""What a caption gets right about its segment: shape, colour, background and action.

n-gram metrics reward a caption that repeats the references' common words, so a blind
captioner that always says the most frequent training caption can score close to a real one.
These checks read a caption the way the scene generator writes one (its templates are ours,
`data/scenes.py`) and ask whether it names the right things:

- shape: the first shape it names belongs to the segment's subject (the object that acts, or
  any visible object when nothing happens);
- colour: the first colour it names is the subject's (for a colour change, the old or the new);
- background (still segments only, the only ones whose references name it): the background it
  names is the segment's;
- action: the kind of event its verbs describe (still, moves, appears, leaves, changes colour)
  is the segment's;
- event_action: the same, judged on segments where something happens only. Most segments are
  still, so a captioner that never names an action scores the still share on `action` and 0%
  here.

An attribute the caption does not state counts as wrong. The references themselves do not
always state every attribute ("two shapes rest on a dark background" names no shape), so the
report carries their score as the ceiling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from tinygpt_ros.data.scenes import BACKGROUNDS, COLOURS, SHAPES, Segment

ATTRIBUTES = ("shape", "colour", "background", "action", "event_action")

_SHAPE = re.compile(r"\b(" + "|".join(SHAPES) + r")\b")
_COLOUR = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
_BACKGROUND = re.compile(r"\b(" + "|".join(BACKGROUNDS) + r") (?:background|backdrop)\b")
# Checked in this order: the first kind whose phrases occur wins ("moves out of the scene" is
# leaving, "nothing moves" is still); a caption with no action phrase describes a still scene.
_ACTIONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(r"\b(?:" + "|".join(phrases) + r")\b")) for kind, phrases in (
        ("still", ("nothing moves", "not move", "sits? still", "still scene", "rests?",
                   "stays in place")),
        ("leaves", ("leaves", "goes out of view", "disappears", "exits", "slides out",
                    "moves out", "fades away", "fades out", "vanishes")),
        ("appears", ("appears", "comes into view", "shows up", "enters", "slides in",
                     "fades in", "fades into view")),
        ("changes_colour", ("changes", "turns", "becomes", "is now")),
        ("moves", ("moves", "moving", "slides", "goes", "travels", "shifts", "darts",
                   "drifts")),
    ))


def caption_action(caption: str) -> str:
    """The kind of event a caption describes (one of data.scenes.KINDS)."""
    for kind, pattern in _ACTIONS:
        if pattern.search(caption):
            return kind
    return "still"


def judge(caption: str, seg: Segment) -> dict[str, bool | None]:
    """attribute -> whether `caption` states it right for `seg` (None: not judged here)."""
    subjects = [seg.actor] if seg.actor is not None else list(seg.objects)
    colours = {o.colour for o in subjects} | ({seg.new_colour} if seg.new_colour else set())
    shape = _SHAPE.search(caption)
    colour = _COLOUR.search(caption)
    background = _BACKGROUND.search(caption)
    return {
        "shape": shape is not None and shape.group(1) in {o.shape for o in subjects},
        "colour": colour is not None and colour.group(1) in colours,
        "background": (background is not None and background.group(1) == seg.background)
        if seg.kind == "still" else None,
        "action": (action := caption_action(caption) == seg.kind),
        "event_action": action if seg.kind != "still" else None,
    }


def attribute_accuracy(captions: Iterable[str], segments: Sequence[Segment]) -> dict[str, Any]:
    """Share of segments whose caption states each attribute right, with the counts."""
    correct = dict.fromkeys(ATTRIBUTES, 0)
    judged = dict.fromkeys(ATTRIBUTES, 0)
    for caption, seg in zip(captions, segments, strict=True):
        for name, ok in judge(caption, seg).items():
            if ok is None:
                continue
            judged[name] += 1
            correct[name] += int(ok)
    return {name: {"accuracy": correct[name] / judged[name] if judged[name] else float("nan"),
                   "correct": correct[name], "judged": judged[name]} for name in ATTRIBUTES}


def reference_ceiling(segments: Sequence[Segment]) -> dict[str, Any]:
    """The same accuracy for the segments' own references (each one in turn, averaged): what
    a caption written like the references can reach on these checks."""
    per_ref = [attribute_accuracy([seg.captions[i % len(seg.captions)] for seg in segments],
                                  segments) for i in range(max(len(s.captions) for s in segments))]
    return {name: {**per_ref[0][name],
                   "accuracy": sum(r[name]["accuracy"] for r in per_ref) / len(per_ref)}
            for name in ATTRIBUTES}
