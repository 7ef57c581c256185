"""`tinygpt-ros make-sample`: write the sample bag (mcap) and its references."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_sample_bag

HELP = "write the sample bag (mcap) and its references"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(default_sample_bag()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--event-encoding", default="pointcloud2",
                   choices=("pointcloud2", "mono", "evt3", "libcaer", "libcaer_cmp"),
                   help="/events as PointCloud2 (the shipped bag) or as event_camera_msgs/"
                        "EventPacket the way its driver publishes it: evt3 1280x720 "
                        "(metavision_driver), libcaer / libcaer_cmp 640x480 (libcaer_driver)")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.bags.sample import write_sample_bag

    path = write_sample_bag(args.out, seed=args.seed, overwrite=args.overwrite,
                            event_encoding=args.event_encoding)
    print(f"[make-sample] wrote {path}")
    return 0
