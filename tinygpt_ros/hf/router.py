"""The ANC router of a pretrained captioner, in numpy: a small MLP from the cheap complexity
features (`ops.frame_complexity_features`) to one logit per depth branch.

It lives in its own JSON file next to (or apart from) the checkpoint, `tinygpt_router.json`,
written by `tinygpt-ros train-router` (self-distillation on the user's unlabelled bags), so the
pretrained weights are never modified. Without a file the router always prefers the full
tower: ANC then costs nothing and changes nothing until a router has been trained.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.model.weights import ModelLoadError

ROUTER_FILE = "tinygpt_router.json"
# 2: the file names each branch's token grid as well as its depth (the cheap branch became a
# 7 x 7 grid); a format-1 file was trained for other branches and is refused with the command
ROUTER_FORMAT = 2
UNTRAINED_MARGIN = 4.0  # logit lead of the full tower when no router was trained


@dataclass
class RouterParams:
    """features (F,) -> standardised -> relu(W1 x + b1) -> W2 h + b2 -> (branches,) logits."""

    branch_depths: tuple[int, ...]
    branch_grids: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    info: dict[str, Any]

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, np.float32) - self.mean) / self.std
        h = np.maximum(self.w1 @ x + self.b1, 0.0)
        return (self.w2 @ h + self.b2).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ROUTER_FORMAT, "branch_depths": list(self.branch_depths),
            "branch_grids": list(self.branch_grids),
            "mean": self.mean.tolist(), "std": self.std.tolist(), "w1": self.w1.tolist(),
            "b1": self.b1.tolist(), "w2": self.w2.tolist(), "b2": self.b2.tolist(),
            "info": self.info,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return p


def untrained_logits(num_branches: int) -> np.ndarray:
    """Logits that make the full tower (last branch) the argmax by a wide margin."""
    out = np.zeros(num_branches, np.float32)
    out[-1] = UNTRAINED_MARGIN
    return out


def load_router(path: str | os.PathLike[str], branch_depths: tuple[int, ...],
                branch_grids: tuple[int, ...]) -> RouterParams:
    """Read a router file; ModelLoadError when unreadable or trained for other branches."""
    p = Path(path)
    retrain = "retrain with `tinygpt-ros train-router`"
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("format") == 1:
            raise ModelLoadError(f"router file {p}: trained for the depth-only branches of an "
                                 f"earlier version (format 1); {retrain}")
        if d.get("format") != ROUTER_FORMAT:
            raise ValueError(f"format {d.get('format')!r}, expected {ROUTER_FORMAT}")
        params = RouterParams(
            tuple(int(x) for x in d["branch_depths"]),
            tuple(int(x) for x in d["branch_grids"]),
            *(np.asarray(d[k], np.float32) for k in ("mean", "std", "w1", "b1", "w2", "b2")),
            info=dict(d.get("info", {})),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"router file {p}: unreadable ({exc})") from exc
    mine = (tuple(branch_depths), tuple(branch_grids))
    if (params.branch_depths, params.branch_grids) != mine:
        raise ModelLoadError(
            f"router file {p}: trained for branches (depth, grid) "
            f"{list(zip(params.branch_depths, params.branch_grids, strict=False))}, this tower "
            f"has {list(zip(*mine, strict=True))}; {retrain}"
        )
    nb, hidden = len(branch_depths), params.w1.shape[0]
    if params.w2.shape != (nb, hidden) or params.b2.shape != (nb,):
        raise ModelLoadError(f"router file {p}: output layer shape {params.w2.shape} does not "
                             f"match {nb} branches")
    return params
