"""The lifecycle node runs a pretrained (tiny, random) GIT checkpoint given as model_dir, over
real topics, the same way it runs a TinyGPT model directory; a hub id fails configure with the
download hint and the node stays up."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from tinygpt_ros.ros import conversions as conv

pytest.importorskip("transformers")
pytest_plugins = ["ros_fixtures"]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory):
    from hf_fixtures import save_tiny_git

    return str(save_tiny_git(tmp_path_factory.mktemp("git") / "tiny-git"))


def test_node_captions_with_a_local_git_checkpoint(ros, tinygpt, lifecycle, git_dir):
    tinygpt(model_dir=git_dir, qos_reliability="reliable")
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    io = ros.make_node("io")
    pub = io.create_publisher(Image, "image", RELIABLE)
    captions: list[str] = []
    io.create_subscription(String, "caption", lambda m: captions.append(m.data), RELIABLE)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pub.publish(conv.rgb_to_image(rgb, Header(stamp=Time(sec=1), frame_id="cam")))
    assert ros.spin_until(lambda: captions, 60.0)
    assert isinstance(captions[0], str)


def test_node_drafts_a_decoded_caption_from_the_last_one(ros, tinygpt, lifecycle, git_dir):
    """The same frame twice, caption reuse off: the second caption is decoded with the first
    as its draft, in one decoder pass; with `caption_draft` set false over the parameter
    service, one pass per token again."""
    from rclpy.parameter import Parameter

    node = tinygpt(model_dir=git_dir, qos_reliability="reliable", caption_reuse_threshold=0.0,
                   anc_enabled=False)
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    io = ros.make_node("io")
    pub = io.create_publisher(Image, "image", RELIABLE)
    captions: list[str] = []
    passes: list[int] = []

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.endswith(": frame"):
                passes.extend(int(kv.value) for kv in st.values if kv.key == "decoder_passes")

    io.create_subscription(String, "caption", lambda m: captions.append(m.data), RELIABLE)
    io.create_subscription(DiagnosticArray, "/diagnostics", on_diag, RELIABLE)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for i in range(3):
        if i == 2:
            node.set_parameters([Parameter("caption_draft", value=False)])
        pub.publish(conv.rgb_to_image(rgb, Header(stamp=Time(sec=1 + i), frame_id="cam")))
        assert ros.spin_until(lambda i=i: len(captions) > i and len(passes) > i, 60.0)
    words = len(captions[0].split())
    assert captions[0] == captions[1] == captions[2] and words >= 2
    assert passes[0] > 1 and passes[1] == 1 and passes[2] == passes[0]


def test_node_refuses_a_hub_id_with_the_download_hint(ros, tinygpt, lifecycle):
    node = tinygpt(model_dir="microsoft/git-base-coco")
    lc = lifecycle()
    assert not lc.configure()
    assert lc.state() == "unconfigured"
    assert "hf download microsoft/git-base-coco" in node.last_error
