"""tinygpt_node lifecycle through the real `<node>/change_state` and `<node>/get_state` services.

Engine-dependent (fixtures `engine_factory` / `model_dir` from ros_fixtures): all tests here.
"""

from __future__ import annotations

import gc
import json
import shutil
import threading
import tracemalloc

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from tinygpt_ros.ros.conversions import rgb_to_image

pytest_plugins = ["ros_fixtures"]  # fixtures: engine_factory, model_dir, tinygpt, lifecycle
_RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _frame(value: int = 120) -> Image:
    rgb = np.full((32, 32, 3), value, np.uint8)
    return rgb_to_image(rgb, Header(frame_id="cam"))


def _wire(ros, node_name: str = "tinygpt_node"):
    io = ros.make_node("io")
    pub = io.create_publisher(Image, "image", _RELIABLE)
    captions: list[str] = []
    io.create_subscription(String, "caption", lambda m: captions.append(m.data), _RELIABLE)
    return io, pub, captions


def test_transitions_gate_processing(ros, lifecycle, tinygpt):
    node = tinygpt(qos_reliability="reliable")
    lc = lifecycle()
    assert lc.state() == "unconfigured"
    assert lc.configure()
    assert lc.state() == "inactive"
    assert node.engine is not None

    _, pub, captions = _wire(ros)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
    for _ in range(3):
        pub.publish(_frame())
        ros.spin_for(0.1)
    assert captions == []  # inactive: nothing published ...
    assert node.stats.ignored_inactive >= 1  # ... and the frames were counted as ignored

    assert lc.activate()
    assert lc.state() == "active"
    pub.publish(_frame())
    assert ros.spin_until(lambda: len(captions) >= 1)

    assert lc.deactivate()
    assert lc.state() == "inactive"
    n = len(captions)
    pub.publish(_frame(30))
    ros.spin_for(0.5)
    assert len(captions) == n

    assert lc.cleanup()
    assert lc.state() == "unconfigured"
    assert node.engine is None
    assert lc.shutdown()
    assert lc.state() == "finalized"


def test_configure_fails_cleanly_on_missing_model(ros, lifecycle, tinygpt, model_dir, tmp_path):
    missing = tmp_path / "no_such_model"
    node = tinygpt(model_dir=str(missing))
    lc = lifecycle()
    before = threading.active_count()
    assert not lc.configure()
    assert lc.state() == "unconfigured"
    assert str(missing) in node.last_error
    assert node.engine is None
    assert list(node.subscriptions) == []
    assert threading.active_count() == before
    # The node can retry once the model appears (model_dir itself is read-only).
    shutil.copytree(model_dir, missing)
    assert lc.configure()
    assert lc.state() == "inactive"


def test_configure_fails_on_corrupt_model(ros, lifecycle, tinygpt, tmp_path):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    (bad / "model.pt").write_bytes(b"\x00garbage")
    node = tinygpt(model_dir=str(bad))
    lc = lifecycle()
    assert not lc.configure()
    assert lc.state() == "unconfigured"
    assert str(bad) in node.last_error
    json.dumps(node.last_error)  # a plain, loggable string


def test_ten_cycles_leak_nothing(ros, lifecycle, tinygpt):
    node = tinygpt(qos_reliability="reliable")
    lc = lifecycle()
    _, pub, captions = _wire(ros)
    threads0 = threading.active_count()
    subs0 = len(list(node.subscriptions))
    pubs0 = len(list(node.publishers))
    timers0 = len(list(node.timers))

    def cycle(i: int) -> None:
        assert lc.configure()
        assert lc.activate()
        assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
        n = len(captions)
        pub.publish(_frame(10 * i))
        assert ros.spin_until(lambda: len(captions) > n)
        assert lc.deactivate()
        assert lc.cleanup()

    cycle(0)
    cycle(1)
    gc.collect()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for i in range(2, 10):
        cycle(i)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert threading.active_count() == threads0
    assert len(list(node.subscriptions)) == subs0
    assert len(list(node.publishers)) == pubs0
    assert len(list(node.timers)) == timers0
    assert growth < 1_000_000, f"memory grew by {growth} bytes over 8 cycles"
    assert lc.state() == "unconfigured"


def test_shutdown_from_every_state(ros, lifecycle, tinygpt):
    threads0 = threading.active_count()
    for i, target in enumerate(("unconfigured", "inactive", "active")):
        name = f"tinygpt_{i}"
        node = tinygpt(name=name)
        lc = lifecycle(name)
        if target in ("inactive", "active"):
            assert lc.configure()
        if target == "active":
            assert lc.activate()
        assert lc.state() == target
        assert lc.shutdown()
        assert lc.state() == "finalized"
        assert node.engine is None
        assert list(node.subscriptions) == []
    assert threading.active_count() == threads0


def test_the_streaming_allocator_policy_holds_only_while_active(ros, lifecycle, tinygpt,
                                                               monkeypatch):
    """Frame buffers come from the heap only while the node is active; deactivate (and a
    shutdown straight from active) switch back before a cleanup frees what configure mapped
    (ros/memory.py)."""
    import tinygpt_ros.ros.node as node_module

    calls: list[bool] = []
    monkeypatch.setattr(node_module, "streaming_allocator", calls.append)
    tinygpt()
    lc = lifecycle()
    assert lc.configure() and calls == []
    assert lc.activate() and calls == [True]
    assert lc.deactivate() and calls[-1] is False
    assert lc.activate() and calls[-1] is True
    assert lc.shutdown() and calls[-1] is False
