"""Budget parameters on the real node through the real parameter service (as `ros2 param set`):
the target applies on the next frame, an unreachable target shows in the diagnostics, and the
1 Hz summary reports the share of frames inside the budget; gpu_share is refused on a CPU engine.
FLOPs mode: deterministic costs."""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from test_node_params import ParamClient

from tinygpt_ros.ros.conversions import rgb_to_image
from tinygpt_ros.ros.diagnostics import WARN, status_values
from tinygpt_ros.runtime.budget import LEVELS

pytest_plugins = ["ros_fixtures"]  # fixtures: tinygpt, lifecycle
from ros_fixtures import RELIABLE  # noqa: E402


class Feed:
    """Publishes frames one at a time, waiting for each one's frame diagnostics."""

    def __init__(self, ros) -> None:
        self.ros = ros
        n = ros.make_node("budget_io")
        self.pub = n.create_publisher(Image, "image", RELIABLE)
        self.diags: list[DiagnosticArray] = []
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, RELIABLE)
        assert ros.spin_until(lambda: self.pub.get_subscription_count() > 0)
        self.rng = np.random.default_rng(0)

    def statuses(self, suffix: str) -> list[DiagnosticStatus]:
        return [s for a in list(self.diags) for s in a.status if s.name.endswith(suffix)]

    def frame(self) -> dict[str, str]:
        """One busy frame (fresh noise: every token changes) -> its frame diagnostics."""
        before = len(self.statuses(": frame"))
        rgb = self.rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        self.pub.publish(rgb_to_image(rgb, Header(frame_id="cam")))
        assert self.ros.spin_until(lambda: len(self.statuses(": frame")) > before, timeout=20.0)
        return status_values(self.statuses(": frame")[-1])


def test_budget_target_set_applies_on_next_frame(ros, lifecycle, tinygpt):
    tinygpt(qos_reliability="reliable")
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    feed, pc = Feed(ros), ParamClient(ros)
    assert "budget_mode" not in feed.frame()  # off: no controller values
    assert pc.set("budget_mode", "flops").successful
    assert pc.set("budget_target_gflops", 0.05).successful
    d = feed.frame()
    assert d["budget_mode"] == "flops" and float(d["budget_target"]) == 0.05
    assert float(d["budget_cost"]) > 0 and "budget_knob_max_fused_tokens" in d
    assert pc.set("budget_target_gflops", 0.04).successful
    d = feed.frame()  # the very next frame already runs under the new target
    assert float(d["budget_target"]) == 0.04
    # refused values keep the old ones
    assert not pc.set("budget_mode", "watts").successful
    assert not pc.set("budget_target_gflops", 0.0).successful
    assert pc.get("budget_mode") == "flops" and pc.get("budget_target_gflops") == 0.04
    # gpu_share needs GPU busy time: this engine runs on the CPU, so it is refused with the
    # engine's reason and the running budget stays as it was
    r = pc.set("budget_mode", "gpu_share")
    assert not r.successful and "gpu_share unavailable" in r.reason and "not a GPU" in r.reason
    assert pc.get("budget_mode") == "flops"
    assert pc.set("budget_target_gpu_pct", 30.0).successful  # the target alone is harmless
    assert not pc.set("budget_target_gpu_pct", 150.0).successful
    d = feed.frame()
    assert d["budget_mode"] == "flops" and float(d["budget_target"]) == 0.04


def test_unreachable_target_is_reported_not_hidden(ros, lifecycle, tinygpt):
    tinygpt(qos_reliability="reliable", budget_mode="flops", budget_target_gflops=1e-6)
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    feed = Feed(ros)
    for _ in range(12):
        d = feed.frame()
    assert d["budget_state"] == "unreachable" and d["budget_unreachable"] == "true"
    assert float(d["budget_level"]) == LEVELS  # the cheapest setting, and still over
    # nothing saved for a new view: every frame over the target ran up the (bounded) debt
    assert float(d["budget_credit"]) == -2.0 and d["budget_new_views"] == "0"
    frame_status = feed.statuses(": frame")[-1]
    assert frame_status.level == WARN and "unreachable" in frame_status.message
    assert ros.spin_until(lambda: any(
        status_values(s).get("budget_frames", "0") != "0" for s in feed.statuses(": summary")),
        timeout=5.0)
    summary = [status_values(s) for s in feed.statuses(": summary")
               if status_values(s).get("budget_frames", "0") != "0"][-1]
    assert float(summary["budget_in_pct"]) == 0.0


def test_gpu_share_from_the_launch_file_falls_back_explicitly_on_a_cpu_engine(ros, lifecycle,
                                                                                 tinygpt):
    """Set before configure (no engine to ask yet) the value is accepted; the CPU engine then
    refuses it: the node runs with no budget, and says so in its error count."""
    tinygpt(qos_reliability="reliable", budget_mode="gpu_share", budget_target_gpu_pct=30.0)
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    feed = Feed(ros)
    for _ in range(3):
        d = feed.frame()
    assert "budget_mode" not in d  # no controller values: running without a budget
    assert int(d["errors"]) == 1  # the refusal, counted once (not once per frame)
