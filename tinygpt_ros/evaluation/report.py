"""Write an evaluation report: report.json (everything), report.md (readable) and PNG plots.

Plots (matplotlib, Agg backend): tokens over time, branch timeline, FLOPs per frame, latency
histogram, quality against FLOPs for each configuration. Nothing is written over an existing
report unless `overwrite`; every file goes through a temporary name and an atomic rename, so an
interrupted run never leaves half a report.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinygpt_ros.evaluation.metrics import METRIC_KEYS
from tinygpt_ros.spec.config import BRANCH_NAMES

REPORT_FILES = ("report.json", "report.md")
PLOT_FILES = {
    "tokens": "tokens_over_time.png",
    "branches": "branch_timeline.png",
    "flops": "flops_per_frame.png",
    "latency": "latency_hist.png",
    "quality": "quality_vs_flops.png",
}
# solid, dashed, dotted, dash-dot: series that coincide stay visible
_LINE_STYLES = ("-", (0, (5, 2)), (0, (2, 1.5)), (0, (6, 2, 1, 2)))
_MARKERS = ("o", "s", "^", "D", "v", "P")
_BRANCH_COLORS = {"reuse": "#bbbbbb", "small": "#8ecae6", "medium": "#219ebc", "large": "#023047"}


def check_out_dir(out_dir: str | Path, overwrite: bool) -> None:
    """FileExistsError when `out_dir` already holds a report and `overwrite` is off."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"report directory {str(out)!r} exists and is not a directory")
    existing = [n for n in REPORT_FILES if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"report directory {str(out)!r} already holds {existing}; pass "
                              "--overwrite to replace it, or choose another --out")


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write `path` through `write(tmp_name)` and an atomic rename: readers never see half a
    file, and an interrupted write leaves the old one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Write text atomically (`write_atomic`)."""
    def w(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    write_atomic(path, w)


def write_report(report: dict[str, Any], out_dir: str | Path, overwrite: bool = False,
                 plots: bool = True) -> dict[str, str]:
    """Write the files; returns {kind: file name} of the plots made (also stored in the report)."""
    check_out_dir(out_dir, overwrite)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    plot_notes: dict[str, str] = {}
    if plots:
        made, plot_notes = make_plots(report, out)
    report["plots"] = made
    report["plot_notes"] = plot_notes
    write_text(out / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    write_text(out / "report.md", markdown(report))
    return made


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, set | tuple):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ------------------------------------------------------------------------------------ plots


def _series(report: dict[str, Any], config: str, modality: str, key: str
            ) -> tuple[list[float], list[int]]:
    """Values of `key` for one modality over all bags in order, and the bag boundaries."""
    values: list[Any] = []
    bounds: list[int] = []
    for bag in report["frames"][config].values():
        sel = [i for i, m in enumerate(bag["modality"]) if m == modality]
        values.extend(bag[key][i] for i in sel)
        bounds.append(len(values))
    return values, bounds[:-1]


def _modalities(report: dict[str, Any]) -> list[str]:
    found = []
    for modality in ("frame", "events"):
        if any(modality in per for per in report["compute"].values()):
            found.append(modality)
    return found


def identical_series(series: dict[str, list[Any]]) -> dict[str, str]:
    """{config: earlier config with exactly the same values} for configs whose series repeats
    an earlier one: the legend says so, since the lines lie on top of each other."""
    out: dict[str, str] = {}
    names = list(series)
    for i, c in enumerate(names):
        for earlier in names[:i]:
            if earlier not in out and series[earlier] == series[c]:
                out[c] = earlier
                break
    return out


def score_axis_limits(values: list[float]) -> tuple[float, float]:
    """A quality axis from 0 to at least 1 (the metrics' natural scale; CIDEr may go higher),
    so differences in the ninth decimal do not look like a spread."""
    top = max([v for v in values if math.isfinite(v)], default=0.0)
    return 0.0, max(1.0, top * 1.08)


def cost_axis_limits(values: list[float]) -> tuple[float, float]:
    """A cost axis from 0 to the largest value with some room."""
    top = max([v for v in values if math.isfinite(v)], default=0.0)
    return 0.0, top * 1.1 if top > 0 else 1.0


def make_plots(report: dict[str, Any], out: Path) -> tuple[dict[str, str], dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}
    notes: dict[str, str] = {}
    configs = list(report["configs"])
    palette = plt.get_cmap("tab10")
    color = {c: palette(i % 10) for i, c in enumerate(configs)}
    modalities = _modalities(report)
    if not modalities:
        return made, {"all": "no engine output: no plots"}

    def save(fig: Any, kind: str, layout: bool = True) -> None:
        path = out / PLOT_FILES[kind]
        if layout:
            fig.tight_layout()
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)
        made[kind] = PLOT_FILES[kind]

    unit = {"frame": "camera frame", "events": "event window"}

    # tokens over time
    fig, axes = plt.subplots(2, len(modalities), figsize=(6.5 * len(modalities), 6),
                             squeeze=False)
    for col, modality in enumerate(modalities):
        for row, (key, title) in enumerate((("tokens_recomputed", "tokens recomputed"),
                                            ("tokens_fused", "tokens fused (to decoder/head)"))):
            ax = axes[row][col]
            series = {c: _series(report, c, modality, key) for c in configs}
            same = identical_series({c: ys for c, (ys, _) in series.items()})
            for k, c in enumerate(configs):
                ys, bounds = series[c]
                label = c + (f" (identical to {same[c]})" if c in same else "")
                # later identical series are drawn thinner and dashed on top: both stay visible
                ax.plot(range(len(ys)), ys, label=label, color=color[c],
                        lw=2.6 - 0.5 * min(k, 3), ls=_LINE_STYLES[k % len(_LINE_STYLES)])
                if c in same:
                    notes.setdefault("tokens", "")
                    notes["tokens"] += (f"{modality} {key}: {c} is identical to {same[c]}; ")
            for b in bounds:
                ax.axvline(b, color="k", ls=":", lw=0.8)
            ax.set_title(f"{title} per {unit[modality]}")
            ax.set_xlabel(f"{unit[modality]} (bags concatenated)")
            ax.set_ylabel("tokens")
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=7)
    save(fig, "tokens")
    if "tokens" in notes:
        notes["tokens"] = notes["tokens"].rstrip("; ")

    # branch timeline
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(modalities), 1, figsize=(11, 0.5 * len(configs) * 2 + 1.5),
                             squeeze=False)
    cmap = ListedColormap([_BRANCH_COLORS[b] for b in BRANCH_NAMES])
    for r, modality in enumerate(modalities):
        ax = axes[r][0]
        rows = []
        for c in configs:
            br, bounds = _series(report, c, modality, "branch")
            rows.append([BRANCH_NAMES.index(b) if b in BRANCH_NAMES else 0 for b in br])
        width = max((len(x) for x in rows), default=0)
        grid = [x + [math.nan] * (width - len(x)) for x in rows]
        ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(BRANCH_NAMES) - 0.5,
                  interpolation="nearest")
        for b in bounds:
            ax.axvline(b - 0.5, color="w", lw=1.5)
        ax.set_yticks(range(len(configs)), configs, fontsize=8)
        ax.set_xlabel(f"{unit[modality]} (bags concatenated)")
        ax.set_title(f"encoder branch per {unit[modality]}")
    fig.legend(handles=[Patch(color=_BRANCH_COLORS[b], label=b) for b in BRANCH_NAMES],
               ncol=4, fontsize=8, loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    save(fig, "branches", layout=False)

    # FLOPs per frame
    fig, axes = plt.subplots(1, len(modalities), figsize=(6.5 * len(modalities), 4),
                             squeeze=False)
    for col, modality in enumerate(modalities):
        ax = axes[0][col]
        for c in configs:
            ys, bounds = _series(report, c, modality, "flops_total")
            ax.plot(range(len(ys)), [y / 1e9 for y in ys], label=c, lw=1.2, color=color[c])
        dense, _ = _series(report, configs[0], modality, "flops_dense")
        ax.plot(range(len(dense)), [y / 1e9 for y in dense], "k--", lw=0.8,
                label="dense model (reference)")
        for b in bounds:
            ax.axvline(b, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"total GFLOPs per {unit[modality]}")
        ax.set_xlabel(f"{unit[modality]} (bags concatenated)")
        ax.set_ylabel("GFLOPs (analytical)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    save(fig, "flops")

    # latency histogram
    fig, axes = plt.subplots(1, len(modalities), figsize=(6.5 * len(modalities), 4),
                             squeeze=False)
    for col, modality in enumerate(modalities):
        ax = axes[0][col]
        all_lat = [v for c in configs for v in _series(report, c, modality, "latency_ms")[0]]
        lo, hi = (min(all_lat), max(all_lat)) if all_lat else (0.0, 1.0)
        bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
        for c in configs:
            lat, _ = _series(report, c, modality, "latency_ms")
            ax.hist(lat, bins=bins, histtype="step", lw=1.4, label=c, color=color[c])
        ax.set_title(f"engine latency per {unit[modality]}")
        ax.set_xlabel("ms (sum of engine stages)")
        ax.set_ylabel("count")
        ax.legend(fontsize=7)
    save(fig, "latency")

    # quality against FLOPs
    panels: list[tuple[str, str, str]] = []
    if report.get("captions"):
        panels += [(k, "frame", k) for k in METRIC_KEYS]
    if report.get("gestures"):
        panels.append(("gesture accuracy", "events", "accuracy"))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
        for ax, (title, modality, key) in zip(axes[0], panels, strict=True):
            xs: list[float] = []
            ys: list[float] = []
            for c in configs:
                comp = report["compute"][c].get(modality)
                if comp is None:
                    continue
                score = (report["gestures"][c]["accuracy"] if key == "accuracy"
                         else report["captions"][c][key])
                ax.scatter(comp["total_gflops"], score, s=36, color=color[c], label=c,
                           alpha=0.85, marker=_MARKERS[configs.index(c) % len(_MARKERS)])
                xs.append(comp["total_gflops"])
                ys.append(score)
            ax.set_xlim(*cost_axis_limits(xs))
            ax.set_ylim(*score_axis_limits(ys))
            ax.set_title(title)
            ax.set_xlabel(f"mean GFLOPs per {unit[modality]}")
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, ncol=min(len(labels), 6), fontsize=8, loc="upper center")
        fig.tight_layout(rect=(0, 0, 1, 0.85))
        save(fig, "quality", layout=False)
    else:
        notes["quality"] = "no references were scored: no quality plot"
    return made, notes


# ------------------------------------------------------------------------------------ markdown


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    m = report["model"]
    mach = report["machine"]
    lines = [
        "# Bag evaluation report",
        "",
        f"- created: {report['created']}",
        f"- command: `{report.get('command') or 'run_eval(...)'}`",
        f"- model: `{m['dir']}` ({m.get('backend')}, preset {m.get('preset')}), weights "
        f"sha256 `{m.get('sha256')}`",
        f"- machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} "
        f"({mach['torch_threads']} threads)",
        f"- topics: image `{report['topics']['image']}`, events `{report['topics']['events']}`"
        + (f"; first {report['max_frames']} camera frames of each bag"
           if report.get("max_frames") else ""),
        f"- wall time: {_wall_time(report)}",
        "",
        "## Bags",
        "",
        "| bag | frames | event windows | messages read | evaluated | seconds | path |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in report["bags"]:
        lines.append(f"| {b['name']} | {b['frames']} | {b['event_windows']} | "
                     f"{b['messages_read']} | {'yes' if b['ok'] else '**no**'} | "
                     f"{b['seconds']:.1f} | `{b['path']}` |")
    issues = report.get("issues", [])
    lines += ["", "## Issues", ""]
    if not issues:
        lines.append("None: every message of the evaluated topics was used.")
    else:
        lines += ["| severity | bag | kind | count | what | examples |",
                  "|---|---|---|---|---|---|"]
        for i in issues:
            ex = "; ".join(i.get("examples", [])[:3])
            lines.append(f"| {i['severity']} | {_cell(i['bag'])} | {i['kind']} | {i['count']} | "
                         f"{_cell(i['message'])} | {_cell(ex)} |")
    refs = report["references"]
    lines += ["", "## Caption quality", ""]
    caps = report.get("captions")
    if caps:
        lines += [f"{refs['caption_spans_scored']} of {refs['caption_spans']} reference spans "
                  "scored (hypothesis: the caption shown at the last image of the span), all "
                  "configurations together with pycocoevalcap. CIDEr-D is unstable on small sets.",
                  "",
                  "| config | BLEU-4 | METEOR | ROUGE-L | CIDEr | GFLOPs/frame | vs dense model |",
                  "|---|---|---|---|---|---|---|"]
        for c, s in caps.items():
            comp = report["compute"][c].get("frame", {})
            lines.append(f"| {c} | {s['BLEU-4']:.3f} | {s['METEOR']:.3f} | {s['ROUGE-L']:.3f} | "
                         f"{s['CIDEr']:.3f} | {_fmt(comp.get('total_gflops'), 4)} | "
                         f"{_pct(comp.get('flops_ratio'))} |")
    else:
        lines.append("No caption references were scored.")
    lines += ["", "## Gesture accuracy", ""]
    ges = report.get("gestures")
    if ges:
        first = next(iter(ges.values()))
        lines += [f"{first['spans']} gesture spans (majority vote of the windows after the first "
                  "2 of each span).", "", "| config | accuracy | correct |", "|---|---|---|"]
        for c, g in ges.items():
            lines.append(f"| {c} | {100 * g['accuracy']:.1f}% | {g['correct']}/{g['spans']} |")
    else:
        lines.append("No gesture references were scored.")
    for modality, title in (("frame", "camera frames"), ("events", "event windows")):
        rows = [(c, per[modality]) for c, per in report["compute"].items() if modality in per]
        if not rows:
            continue
        lines += ["", f"## Compute per {title[:-1]}", "",
                  "| config | count | recomputed | fused tokens | encoder GFLOPs | total GFLOPs | "
                  "vs dense model | latency p50 / p95 ms | conversion ms | caption reuse | "
                  "branches |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c, s in rows:
            br = ", ".join(f"{k}:{v}" for k, v in s["branches"].items())
            lines.append(
                f"| {c} | {s['frames']} | {s['recomputed_pct']:.1f}% | {s['fused_tokens']:.1f} | "
                f"{s['encoder_gflops']:.4f} | {s['total_gflops']:.4f} | "
                f"{_pct(s.get('flops_ratio'))} | {s['latency_ms_p50']:.2f} / "
                f"{s['latency_ms_p95']:.2f} | {s['conversion_ms_mean']:.2f} | "
                f"{s['caption_reuse_pct']:.0f}% | {br} |")
    live = report.get("live")
    if live is not None:
        lines += ["", "## Live (ROS nodes) against offline", "", live_markdown(live)]
    lines += ["", "## Plots", ""]
    for kind, name in report.get("plots", {}).items():
        lines.append(f"![{kind}]({name})")
    for kind, note in report.get("plot_notes", {}).items():
        lines.append(f"- {kind}: {note}")
    spans = report.get("spans", [])
    if spans:
        lines += ["", "## Example hypotheses (first 10 spans)", "",
                  "| span | reference | " + " | ".join(report["configs"]) + " |",
                  "|---|---|" + "---|" * len(report["configs"])]
        for s in spans[:10]:
            lines.append(f"| {s['bag']} {s['span']} | {_cell(s['reference'])} | "
                         + " | ".join(_cell(s["hypotheses"][c]) for c in report["configs"])
                         + " |")
    return "\n".join(lines) + "\n"


def _wall_time(report: dict[str, Any]) -> str:
    """The whole run's wall time, and what it was spent on."""
    phases = report.get("phases") or {}
    parts = [f"bag replay {phases['replay_s']:.1f} s"] if phases.get("replay_s") is not None \
        else []
    if phases.get("live_s") is not None:
        parts.append(f"live {phases['live_s']:.1f} s")
    where = report.get("runner") or f"{report['workers']} worker(s)"
    return (f"{report['seconds']:.1f} s with {where}"
            + (f" ({', '.join(parts)}; the rest: setup and scoring)" if parts else ""))


def _pair(v: Any) -> str:
    if not isinstance(v, dict):
        return _fmt(v, 2)
    return f"{_fmt(v.get('frame'), 2)} / {_fmt(v.get('events'), 2)}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def live_markdown(live: dict[str, Any]) -> str:
    lines = [f"Played in lockstep (each message waits for its output): "
             f"{'**equal** to' if live.get('equal') else '**differs** from'} the offline output.",
             ""]
    if live.get("error"):
        lines += [f"Live evaluation could not run: {live['error']}", ""]
    lines += ["| bag | config | compared | equal | differences | dropped | engine latency p50 ms "
              "(live; frame / event window) | ROS overhead p50 ms (conversion + publishing, the "
              "diagnostics included; frame / "
              "event window) | note |", "|---|---|---|---|---|---|---|---|---|"]
    diffs: list[str] = []
    for bag, per in live.get("bags", {}).items():
        for c, r in per.items():
            lines.append(f"| {bag} | {c} | {r.get('compared', 0)} | "
                         f"{'yes' if r.get('equal') else 'no'} | {r.get('n_differences', 0)} | "
                         f"{r.get('dropped', 0)} | {_pair(r.get('latency_ms_p50'))} | "
                         f"{_pair(r.get('ros_overhead_ms_p50'))} | "
                         f"{_cell(r.get('error') or '')} |")
            diffs += [f"- {bag} / {c}: {d}" for d in r.get("differences", [])[:20]]
    if diffs:
        lines += ["", "Differences (first 20 per configuration):", "", *diffs]
    return "\n".join(lines)
