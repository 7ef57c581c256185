"""Camera frames of a bag as RGB numpy arrays, in time order (for commands that only need the
pictures, such as `tinygpt-ros train-router`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tinygpt_ros.bags.reader import bag_topics, iter_bag
from tinygpt_ros.evaluation.replay import IMAGE_TYPES, converter, deserialize


def iter_bag_frames(bag: str | Path, topic: str = "/camera/image_raw",
                    stride: int = 1, limit: int = 0) -> Iterator[np.ndarray]:
    """Every `stride`-th frame of `topic` (Image or CompressedImage), at most `limit` (0 = all).
    ValueError naming the bag when the topic is missing or not an image."""
    topics = bag_topics(bag)
    if topic not in topics:
        raise ValueError(f"bag {str(bag)!r} has no topic {topic!r} (it has {sorted(topics)})")
    msgtype = topics[topic][0]
    conv = converter(msgtype) if msgtype in IMAGE_TYPES else None
    if conv is None:
        raise ValueError(f"bag {str(bag)!r}: topic {topic!r} is {msgtype}, not one of "
                         f"{list(IMAGE_TYPES)}")
    cls, to_rgb = conv
    n = 0
    for i, msg in enumerate(iter_bag(bag, [topic])):
        if i % max(1, stride):
            continue
        yield to_rgb(deserialize(msg.rawdata, cls))[0]  # as the node's engine sees it
        n += 1
        if limit and n >= limit:
            return
