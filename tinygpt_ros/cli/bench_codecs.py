"""`tinygpt-ros bench-codecs`: EventPacket decoder throughput (mono, evt3, libcaer, libcaer_cmp)."""

from __future__ import annotations

import argparse

HELP = "EventPacket payload decoders: events per second on one core"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=1_000_000, help="events per packet")
    p.add_argument("--repeats", type=int, default=5, help="decodes per encoding (best is kept)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.codec_bench import bench_codecs, format_table

    for edge in ("vertical", "horizontal"):
        print(f"\n{edge} edge, {args.events} events per packet, best of {args.repeats}\n")
        print(format_table(bench_codecs(args.events, args.repeats, args.seed, edge)))
    return 0
