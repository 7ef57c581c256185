"""`tinygpt-ros eval`: replay rosbag2 bags through the engine the node runs, score them, and
write the report.

Why one driver: the steps (arguments checked before any work, references per bag, one replay job
per bag on a worker pool, scoring of all bags together, the optional live comparison, the report
files) must run in the same order whatever runs the jobs, so the figures of a local run and a
cluster run are the same. Damage never stops the run: an unreadable bag, a truncated mcap (its
complete records are salvaged), a missing topic, a message that does not deserialize or convert,
references outside the bag: each becomes an issue listed in the report, and everything valid is
still evaluated. Bags run in parallel worker processes (`--workers`, spawn). `--live`
additionally plays each bag into the real node graph and lists every difference from the
offline output (`live.py`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tinygpt_ros.evaluation.cluster import replay_ray
from tinygpt_ros.evaluation.configs import full_knobs, parse_configs
from tinygpt_ros.evaluation.issues import Issue, sorted_issues
from tinygpt_ros.evaluation.live import live_section
from tinygpt_ros.evaluation.provenance import machine_info, model_identity
from tinygpt_ros.evaluation.refs import Refs, refs_for_bags
from tinygpt_ros.evaluation.replay import evaluate_bag
from tinygpt_ros.evaluation.report import check_out_dir, write_report
from tinygpt_ros.evaluation.results import BagJob, BagResult
from tinygpt_ros.evaluation.scoring import compute_summaries, frame_columns, score_results

log = logging.getLogger(__name__)

REPORT_FORMAT = "tinygpt_ros eval report v1"


def unique_names(paths: Sequence[str]) -> list[str]:
    """A short, unique name per bag (its directory or file stem; `_2`, `_3` on clashes)."""
    names: list[str] = []
    for p in paths:
        base = Path(p).name if Path(p).is_dir() else Path(p).stem
        name, k = base or "bag", 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def replay_local(jobs: Sequence[BagJob], workers: int, threads: int | None) -> list[BagResult]:
    """Replay every job, in this process for one worker, else on a spawn process pool (each
    worker gets an equal share of the cores unless `threads` says otherwise)."""
    if workers == 1 or len(jobs) == 1:
        return [evaluate_bag(j) for j in jobs]
    n = min(workers, len(jobs))
    per_worker = threads or max(1, (os.cpu_count() or 1) // n)
    for j in jobs:
        j.threads = per_worker
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        return list(pool.map(evaluate_bag, jobs))


def check_arguments(bags: Sequence[Any], workers: Any, max_frames: Any) -> None:
    if not bags:
        raise ValueError("bags: give at least one bag")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")


def bag_summary(r: BagResult, first_config: str, refs: list[Refs]) -> dict[str, Any]:
    """The report's row for one bag."""
    return {
        "path": r.path, "name": r.name, "ok": r.ok,
        "topics": {t: {"type": m, "count": n} for t, (m, n) in r.topics.items()},
        "used_topics": r.used_topics, "messages_read": r.messages_read,
        "frames": sum(1 for row in r.rows[first_config] if row.modality == "frame"),
        "event_windows": sum(1 for row in r.rows[first_config] if row.modality == "events"),
        "seconds": round(r.seconds, 3),
        "refs": ", ".join(x.path for x in refs) or None,
    }


def check_something_scored(references: dict[str, int], issues: list[Issue]) -> None:
    """An error when references were given but not one span was scored: nothing was evaluated
    for quality, which the command must not report as a success."""
    total = references["caption_spans"] + references["gesture_spans"]
    scored = references["caption_spans_scored"] + references["gesture_spans_scored"]
    if total and not scored:
        issues.append(Issue("all", "nothing_scored", "error", f"none of the {total} reference "
                            "span(s) could be scored: no caption or gesture quality was "
                            "evaluated"))


FAILURE_KINDS = ("nothing_scored", "refs_outside_bag")  # issues that make the command fail


def failures(report: dict[str, Any]) -> list[str]:
    """Why the evaluation failed as a whole ([] when it did not): no bag evaluated, nothing
    scored, or references entirely outside their bag."""
    why = []
    if not any(b["ok"] for b in report["bags"]):
        why.append("no bag could be evaluated")
    why += [f"{i['bag']}: {i['message']}" for i in report["issues"]
            if i["severity"] == "error" and i["kind"] in FAILURE_KINDS]
    return why


def run_eval(
    bags: Sequence[str | Path],
    model_dir: str | Path,
    out_dir: str | Path,
    refs: str | Path | Sequence[str | Path] | None = None,
    configs: Sequence[str] = ("dense", "sttf", "anc", "sttf+anc"),
    backend: str = "torch",
    image_topic: str = "/camera/image_raw",
    events_topic: str = "/events",
    overwrite: bool = False,
    workers: int = 1,
    live: bool = False,
    max_frames: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
    plots: bool = True,
    ray: str | None = None,
) -> dict[str, Any]:
    """Evaluate `bags`, write report.json / report.md / plots into `out_dir`; returns the report.

    `refs`: one references file for all bags, one per bag, or None for each bag's refs.json.
    `workers`: bags replayed in parallel, and live runs in parallel with `live` (each live run
    is a process of its own). `ray`: replay the bags as Ray tasks instead ("auto", an address,
    or "local" for a private instance with `workers` CPUs; `cluster.replay_ray`); the scoring
    and the report are the same code as for a local run. `report["seconds"]` is the wall time
    of the whole evaluation, live phase included (`report["phases"]` splits it).

    Raises FileExistsError before any work when `out_dir` holds a report and not `overwrite`,
    ValueError for bad arguments (configs, refs file, workers)."""
    from tinygpt_ros.model.weights import load_manifest

    t_start = time.perf_counter()
    check_arguments(bags, workers, max_frames)
    check_out_dir(out_dir, overwrite)
    load_manifest(model_dir)  # ModelLoadError (names the file) before any work
    cfg_knobs = {name: full_knobs(k) for name, k in parse_configs(list(configs)).items()}
    names = unique_names([str(b) for b in bags])
    issues: list[Issue] = []
    refs_of = refs_for_bags(bags, names, refs, issues)
    jobs = [BagJob(str(b), n, str(model_dir), backend, cfg_knobs, image_topic, events_topic,
                   max_frames, threads, progress) for b, n in zip(bags, names, strict=True)]
    log.info("evaluating %d bag(s) x %d configuration(s) %s", len(jobs), len(cfg_knobs),
             f"on Ray ({ray})" if ray else f"with {min(workers, len(jobs))} worker(s)")
    t0 = time.perf_counter()
    if ray:
        results = replay_ray(jobs, ray, workers, threads)
    else:
        results = replay_local(jobs, workers, threads)
    replay_s = time.perf_counter() - t0
    for r in results:
        issues.extend(r.issues)
    cfg_names = list(cfg_knobs)
    scored = score_results(results, refs_of, cfg_names, issues)
    check_something_scored(scored["references"], issues)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "model": model_identity(model_dir, backend),
        "machine": machine_info(),
        "topics": {"image": image_topic, "events": events_topic},
        "max_frames": max_frames,
        "workers": workers,
        "runner": f"Ray ({ray}), one task per bag" if ray else None,
        "seconds": None,  # the whole run, set below
        "phases": {"replay_s": round(replay_s, 3), "live_s": None},
        "configs": cfg_knobs,
        "bags": [bag_summary(r, cfg_names[0], refs_of.get(r.name)) for r in results],
        **scored,
        "compute": compute_summaries(results, cfg_names),
        "frames": {c: {r.name: frame_columns(r, c) for r in results} for c in cfg_names},
        "live": None,
    }
    if live:
        t0 = time.perf_counter()
        report["live"] = live_section(results, cfg_knobs, str(model_dir), backend, issues,
                                      workers=workers)
        report["phases"]["live_s"] = round(time.perf_counter() - t0, 3)
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    report["issues"] = [asdict(i) for i in sorted_issues(issues)]
    write_report(report, out_dir, overwrite=overwrite, plots=plots)
    return report
