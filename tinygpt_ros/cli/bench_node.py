"""`tinygpt-ros bench-node`: the real node graph in its own process at camera rates."""

from __future__ import annotations

import argparse

from tinygpt_ros.evaluation.node_bench import CONFIGS, FRAME_SIZE, QOS, STREAMS, TRANSPORTS

HELP = "the node graph in a subprocess at camera rates: latency, drops, CPU, RSS"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--qos", nargs="+", default=list(QOS), choices=list(QOS),
                   help="input QoS reliability, publisher and node alike")
    p.add_argument("--transports", nargs="+", default=list(TRANSPORTS), choices=list(TRANSPORTS),
                   help="raw: sensor_msgs/Image rgb8; compressed: CompressedImage jpeg")
    p.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS),
                   help="generated streams to publish (ignored with --bag)")
    p.add_argument("--size", nargs=2, type=int, default=list(FRAME_SIZE), metavar=("H", "W"),
                   help="height and width of the generated rgb8 frames (default: 480 640, "
                   "a VGA camera; e.g. 720 1280)")
    p.add_argument("--bag", default=None, help="publish this bag's frames and event windows "
                   "at camera rates instead of generated streams")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per stream")
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--events-hz", type=float, default=20.0)
    p.add_argument("--model", default=None, help="model directory (default: the node's)")
    p.add_argument("--backend", default=None, choices=["onnxruntime", "torch"])
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="node parameter for every run, on top of config/edge.yaml "
                   "(repeatable), e.g. --param blas_threads=0")
    p.add_argument("--budget-mode", default=None,
                   choices=["off", "latency", "flops", "power", "gpu_share"],
                   help="run the node under this closed-loop budget (budget_mode)")
    p.add_argument("--budget-target", type=float, default=None,
                   help="the budget mode's target: ms (latency), GFLOPs (flops), mW (power), "
                   "%% (gpu_share)")
    p.add_argument("--publisher-profile", default=None, metavar="XML",
                   help="Fast DDS XML profile for the publishing process only, as a camera "
                   "driver is given it (e.g. config/fastdds_large_images.xml); the node keeps "
                   "the user's environment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/bench_node", help="report directory")
    p.add_argument("--markdown", default=None,
                   help="also write the 'node' section of this file (docs/benchmarks.md)")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.node_bench import main

    return main(args)
