"""`tinygpt-ros overlay`: render the node's debug/overlay picture from a bag into a PNG.

Plays the bag's camera frames and event windows through the engine in record order (as the node
would see them), then draws the overlay of camera frame `--frame` and of the last event window
before it, side by side. The README's screenshot (docs/overlay.png) is made with the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinygpt_ros.cli.paths import default_model_dir, default_sample_bag

HELP = "render the debug/overlay picture of a bag's frame (and event window) into a PNG"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bag", default=str(default_sample_bag()), help="rosbag2 (mcap or sqlite3)")
    p.add_argument("--out", default="docs/overlay.png", help="PNG to write")
    p.add_argument("--frame", type=int, default=52,
                   help="camera frame index to draw (0-based; the sample bag's busy clip is 44-65)")
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime"))
    p.add_argument("--image-topic", default="/camera/image_raw",
                   help="sensor_msgs/Image or CompressedImage (jpeg, png)")
    p.add_argument("--events-topic", default="/events",
                   help="event windows (PointCloud2); '' draws the camera frame only")


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from rclpy.serialization import deserialize_message

    from tinygpt_ros.bags.reader import bag_topics, iter_bag
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.evaluation.replay import IMAGE_TYPES
    from tinygpt_ros.ros import conversions as conv
    from tinygpt_ros.ros import overlay
    from tinygpt_ros.ros.bag_player import message_class

    if args.frame < 0:
        raise ValueError(f"--frame must be >= 0, got {args.frame}")
    topics = [args.image_topic] + ([args.events_topic] if args.events_topic else [])
    in_bag = bag_topics(args.bag)
    types = {t: message_class(in_bag[t][0]) for t in topics if t}
    if in_bag[args.image_topic][0] not in IMAGE_TYPES:
        raise ValueError(f"{args.image_topic} is {in_bag[args.image_topic][0]}, not one of "
                         f"{list(IMAGE_TYPES)}")
    engine = load_engine(args.model, backend=args.backend)
    frames = 0
    picture_frame = picture_events = None
    try:
        for m in iter_bag(args.bag, topics):
            msg = deserialize_message(m.rawdata, types[m.topic])
            stamp_us = conv.stamp_to_us(msg.header.stamp)
            if m.topic == args.image_topic:
                rgb, pixel_scale = conv.camera_frame(msg)  # as the node decodes it
                result = engine.process_frame(rgb, stamp_us, pixel_scale)
                if frames == args.frame:
                    picture_frame = overlay.render_frame(rgb, result)
                    break
                frames += 1
            else:
                events = conv.pointcloud2_to_events(msg)
                result = engine.process_events(events, stamp_us)
                picture_events = overlay.render_events(events, result)
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    if picture_frame is None:
        raise ValueError(f"bag {args.bag} has only {frames} frames on {args.image_topic}")
    panels = [picture_frame] + ([picture_events] if picture_events is not None else [])
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 8, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255)
              for p in panels]
    image = np.concatenate([padded[0]] + [x for p in padded[1:] for x in (gap, p)], 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"could not write {out}")
    print(f"[overlay] wrote {out} ({image.shape[1]}x{image.shape[0]}): frame {args.frame}"
          + (" and the event window before it" if picture_events is not None else ""))
    return 0
