"""Evaluation configurations from the command line: named configs and knob sweeps.

Why: users compare the node's settings on their own bags, so `--configs` takes the named configs
of `quality.CAPTION_CONFIGS` and sweeps like `fusion_threshold=0.2,0.5`, each value checked
against the knob's declared range before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tinygpt_ros.evaluation.quality import CAPTION_CONFIGS
from tinygpt_ros.runtime.budget import MODE_OF_TARGET
from tinygpt_ros.spec.config import KNOB_SPECS, Knobs

DEFAULT_BASE = "sttf+anc"  # sweeps without an explicit base apply on top of this config


def parse_knob_value(knob: str, raw: str) -> Any:
    """One sweep value, typed and range-checked like the node's parameter."""
    if knob in MODE_OF_TARGET:  # a budget sweep: budget_target_gflops=0.2,0.3 (runtime/budget)
        try:
            target = float(raw.strip())
        except ValueError:
            raise ValueError(f"configs: {knob} needs numbers, got {raw!r}") from None
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"configs: {knob} must be > 0, got {raw!r}")
        return target
    spec = KNOB_SPECS.get(knob)
    if spec is None:
        raise ValueError(f"configs: unknown knob {knob!r}; known: {', '.join(KNOB_SPECS)}")
    text = raw.strip()
    if spec.kind is bool:
        low = text.lower()
        if low not in ("true", "false", "1", "0", "on", "off"):
            raise ValueError(f"configs: {knob} takes true/false, got {raw!r}")
        value: Any = low in ("true", "1", "on")
    elif spec.kind is str:
        value = text
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"configs: {knob} needs numbers, got {raw!r}") from None
    try:
        return Knobs.validated(knob, value)
    except ValueError as exc:
        raise ValueError(f"configs: {exc}") from None


def parse_configs(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Config specs -> {name: knob overrides}.

    A spec is a named config of `quality.CAPTION_CONFIGS` (dense, sttf, anc, sttf+anc) or a sweep
    `[base:]knob=v1,v2,...` that yields one config per value on top of `base` (default sttf+anc),
    named `knob=v` (or `base:knob=v`)."""
    if isinstance(specs, str) or not specs:
        raise ValueError("configs: give at least one config name or sweep")
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        spec = spec.strip()
        if "=" not in spec:
            if spec not in CAPTION_CONFIGS:
                raise ValueError(f"configs: unknown config {spec!r}; use one of "
                                 f"{list(CAPTION_CONFIGS)} or a sweep like "
                                 "fusion_threshold=0.2,0.5")
            out[spec] = dict(CAPTION_CONFIGS[spec])
            continue
        head, _, values = spec.partition("=")
        base, _, knob = head.rpartition(":")
        base = base or DEFAULT_BASE
        if base not in CAPTION_CONFIGS:
            raise ValueError(f"configs: unknown base config {base!r} in {spec!r}; use one of "
                             f"{list(CAPTION_CONFIGS)}")
        raws = [v for v in values.split(",") if v.strip()]
        if not raws:
            raise ValueError(f"configs: sweep {spec!r} has no values")
        for raw in raws:
            value = parse_knob_value(knob.strip(), raw)
            prefix = "" if base == DEFAULT_BASE else f"{base}:"
            extra = ({"budget_mode": MODE_OF_TARGET[knob.strip()]}
                     if knob.strip() in MODE_OF_TARGET else {})
            out[f"{prefix}{knob.strip()}={raw.strip()}"] = {**CAPTION_CONFIGS[base], **extra,
                                                           knob.strip(): value}
    return out


def full_knobs(overrides: dict[str, Any]) -> dict[str, Any]:
    """Every knob: the node's defaults (config/edge.yaml == spec.config.Knobs) + overrides."""
    knobs = Knobs()
    budget = {}
    for name, value in overrides.items():
        if is_budget_setting(name):
            budget[name] = value  # budget settings ride along (the engine's controller)
        else:
            knobs.set(name, value)
    return {**knobs.as_dict(), **budget}


def is_budget_setting(name: str) -> bool:
    """`budget_mode` and the budget targets configure the engine's controller, not a knob."""
    return name == "budget_mode" or name in MODE_OF_TARGET
