"""The caption as a `visualization_msgs/Marker`, so RViz shows it where and when the image was.

A `std_msgs/String` caption has no header: nothing ties it to a frame or a time. The marker
carries the source image's header (stamp and frame_id), so RViz places the text in the camera's
frame as it was at the image's time (TF lookup at that stamp), and a recorded bag lines captions
up with their frames.
"""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker

CAPTION_NAMESPACE = "tinygpt_caption"
TEXT_HEIGHT_M = 0.2


def caption_marker(caption: str, header: Header, *, marker_id: int = 0,
                   text_height_m: float = TEXT_HEIGHT_M) -> Marker:
    """A TEXT_VIEW_FACING marker at the origin of `header.frame_id` (the camera), stamped with the
    source image's time. One id per node: each caption replaces the previous one."""
    marker = Marker(
        header=Header(stamp=header.stamp, frame_id=header.frame_id),
        ns=CAPTION_NAMESPACE,
        id=int(marker_id),
        type=Marker.TEXT_VIEW_FACING,
        action=Marker.ADD,
        text=caption,
        color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
        lifetime=Duration(sec=0, nanosec=0),  # until the next caption replaces it
        frame_locked=False,  # drawn where the camera was at the image's stamp
    )
    marker.pose.orientation.w = 1.0
    marker.scale.z = float(text_height_m)  # TEXT_VIEW_FACING uses only z: the text height
    return marker
