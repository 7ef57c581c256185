"""`tinygpt-ros soak`: fuzz, soak, lifecycle cycling, parameter storm and model faults against
the real node graph, driven from another process; figures and targets printed and saved."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_model_dir

HELP = "reliability figures: fuzz, soak, lifecycle cycles, parameters, model faults"
PARTS = ("fuzz", "soak", "lifecycle", "params", "faults")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime"))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--fuzz-messages", type=int, default=10_000)
    p.add_argument("--soak-minutes", type=float, default=30.0)
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--events-hz", type=float, default=20.0)
    p.add_argument("--sample-period", type=float, default=10.0,
                   help="seconds between RSS/thread/fd samples in the soak part")
    p.add_argument("--lifecycle-cycles", type=int, default=100)
    p.add_argument("--param-calls", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/soak",
                   help="directory for soak.json and the graph logs")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tinygpt_ros.evaluation.soak import SoakConfig, as_json, run_soak_suite
    from tinygpt_ros.ros.domain import ros_domain_id

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = SoakConfig(
        model_dir=args.model, backend=args.backend, parts=tuple(args.parts),
        fuzz_messages=args.fuzz_messages, soak_s=args.soak_minutes * 60.0,
        camera_hz=args.camera_hz, events_hz=args.events_hz, sample_period_s=args.sample_period,
        lifecycle_cycles=args.lifecycle_cycles, param_calls=args.param_calls, seed=args.seed,
        work_dir=str(out_dir.resolve()),
    )
    domain = ros_domain_id()
    print(f"[soak] ROS domain {domain}; model {cfg.model_dir} ({cfg.backend}); parts "
          f"{' '.join(cfg.parts)}", flush=True)
    def save(results: list) -> None:
        doc = json.dumps(as_json(results, cfg), indent=1, default=str)
        (out_dir / "soak.json").write_text(doc)

    results = run_soak_suite(cfg, domain, out=lambda line: print(line, flush=True),
                             on_part=save)
    missed = [t.what for r in results for t in r.targets if not t.met]
    print(f"[soak] wrote {out_dir / 'soak.json'}; "
          + ("all targets met" if not missed else f"{len(missed)} target(s) missed"))
    return 0 if not missed else 1
