"""`tinygpt-ros probe`: what the encoder's tokens carry, read by linear probes on held-out clips.

Why: the captioner names colours and actions but guesses shapes (README, quality). A caption
cannot say whether the shape is missing from the tokens or only from the decoder's reading of
them. A linear probe answers that for the encoder alone: fit a linear classifier on frozen
tokens of some clips, score it on tokens of other clips. A probe that memorises objects scores
well on the clips it was fitted on and at chance on new ones, so only the held-out score counts.

For every branch (and the patch embedding, before any encoder layer) and each attribute the
renderer labels per patch (`scenes.patch_labels`):
- `shape`: which shape covers the patch, over patches an object covers;
- `colour`: that object's colour, over the same patches;
- `background`: the background's kind, over patches no object covers.

Both sets of clips come from the `val` split (fit on the first, score on the next ones), so
the test split stays untouched. Clips filmed by a moving camera carry no labels and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ATTRIBUTES = ("shape", "colour", "background")


@dataclass
class ProbeSet:
    """Tokens of every labelled patch of some clips: one (P, D) array per layer, and labels."""

    layers: dict[str, np.ndarray]
    what: np.ndarray  # (P,) scenes.WHAT_CLASSES index
    colour: np.ndarray  # (P,) scenes.COLOUR_CLASSES index


def collect(model: Any, clips: int, base_seed: int, frames: int = 16,
            stride: int = 3) -> ProbeSet:
    """Tokens of `clips` val clips (every `stride`-th of `frames` frames) through every branch."""
    import torch

    from tinygpt_ros.data.scenes import iter_clips
    from tinygpt_ros.train.recipe import encode_frames

    layers: dict[str, list[np.ndarray]] = {}
    what, colour = [], []
    with torch.no_grad():
        for clip in iter_clips("val", clips, base_seed=base_seed, num_frames=frames):
            if clip.labels is None:
                continue
            emb, exits = encode_frames(model, clip.frames[None, ::stride])
            outs = {"embedding": emb, **{f"branch {i}": e for i, e in enumerate(exits)}}
            for name, t in outs.items():
                layers.setdefault(name, []).append(t.reshape(-1, t.shape[-1]).numpy())
            labels = clip.labels[::stride].reshape(-1, 2).astype(np.int64)
            what.append(labels[:, 0])
            colour.append(labels[:, 1])
    if not what:
        raise ValueError("no labelled clips: every clip drawn came from a moving camera")
    return ProbeSet({k: np.concatenate(v) for k, v in layers.items()},
                    np.concatenate(what), np.concatenate(colour))


def _targets(s: ProbeSet, attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """(patch mask, class per masked patch) of one attribute."""
    from tinygpt_ros.data.scenes import BACKGROUNDS

    on_object = s.what >= len(BACKGROUNDS)
    if attribute == "shape":
        return on_object, s.what[on_object]
    if attribute == "colour":
        return on_object, s.colour[on_object]
    if attribute == "background":
        return ~on_object, s.what[~on_object]
    raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")


def fit_and_score(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray,
                  y_score: np.ndarray, steps: int = 300, seed: int = 0) -> tuple[float, float]:
    """Multinomial logistic regression (standardised inputs, full-batch Adam): accuracy on the
    fitted patches and on the scored ones."""
    import torch
    import torch.nn.functional as nnf

    classes = np.unique(np.concatenate([y_fit, y_score]))
    index = {int(c): i for i, c in enumerate(classes)}
    yf = torch.tensor([index[int(c)] for c in y_fit])
    ys = torch.tensor([index[int(c)] for c in y_score])
    xf, xs = torch.from_numpy(x_fit).float(), torch.from_numpy(x_score).float()
    mu, sd = xf.mean(0), xf.std(0) + 1e-6
    xf, xs = (xf - mu) / sd, (xs - mu) / sd
    torch.manual_seed(seed)
    head = torch.nn.Linear(xf.shape[1], len(classes))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = nnf.cross_entropy(head(xf), yf)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fit = float((head(xf).argmax(-1) == yf).float().mean())
        score = float((head(xs).argmax(-1) == ys).float().mean())
    return fit, score


def run_probe(model_dir: str | Path, fit_clips: int = 60, score_clips: int = 30,
              steps: int = 300) -> dict[str, Any]:
    """Probe every layer for every attribute; report accuracies and each attribute's floor (the
    most common class of the scored patches: what a probe that learned nothing gets)."""
    from tinygpt_ros.evaluation.peers import load_model
    from tinygpt_ros.evaluation.provenance import model_identity

    model, _, _ = load_model(model_dir)
    fit = collect(model, fit_clips, base_seed=0)
    score = collect(model, score_clips, base_seed=fit_clips)
    rows = []
    for attribute in ATTRIBUTES:
        mf, yf = _targets(fit, attribute)
        ms, ys = _targets(score, attribute)
        floor = float(np.bincount(ys).max() / len(ys)) if len(ys) else float("nan")
        for layer in fit.layers:
            acc_fit, acc_score = fit_and_score(fit.layers[layer][mf], yf,
                                               score.layers[layer][ms], ys, steps)
            rows.append({"attribute": attribute, "layer": layer, "fit_accuracy": acc_fit,
                         "heldout_accuracy": acc_score, "floor": floor,
                         "fit_patches": int(mf.sum()), "scored_patches": int(ms.sum())})
    return {"format": "tinygpt_ros probe report v1", "model": model_identity(model_dir, "torch"),
            "split": "val", "fit_clips": fit_clips, "score_clips": score_clips, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Linear probes on frozen tokens: fitted on {report['fit_clips']} val clips, scored "
             f"on the next {report['score_clips']} (clips from a moving camera carry no labels "
             f"and are skipped). Floor: the scored patches' most common class.", "",
             "| attribute | layer | held-out accuracy | floor | on the fitted clips | "
             "patches fitted / scored |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['attribute']} | {r['layer']} | {100 * r['heldout_accuracy']:.1f}% "
                     f"| {100 * r['floor']:.1f}% | {100 * r['fit_accuracy']:.1f}% "
                     f"| {r['fit_patches']} / {r['scored_patches']} |")
    return "\n".join(lines) + "\n"
