"""lifecycle_manager: brings managed lifecycle nodes up (configure -> activate) and down.

For each node in `node_names` (startup in order, shutdown in reverse) it asks `<node>/get_state`,
requests the next transition on `<node>/change_state`, checks the state again, and repeats until
the node is active (startup) or unconfigured (shutdown). A refused or timed-out transition stops
the sequence: the manager goes to state `failed`, logs an ERROR naming the node and transition,
and publishes an ERROR diagnostic; it never raises.

No deadlocks: nothing blocks inside a callback. Requests are `call_async`; a 20 Hz timer (running
only while a sequence is in progress) polls the pending future, service availability and the
deadline (`transition_timeout_s`). This works in a single-threaded executor shared with the
managed nodes, unlike blocking calls, and unlike coroutine callbacks it does not busy-spin the
executor while a node takes seconds to load its model.

Services (std_srvs is not available, so the installed lifecycle_msgs/srv/ChangeState is reused;
its request is ignored): `~/startup` and `~/shutdown` start the sequence and answer at once:
success=True if it was started (or the nodes are already there), False if another sequence is
still running. The outcome is latched on `~/state` (std_msgs/String, transient local: idle,
starting, active, stopping, unconfigured, failed; after a transition someone else requested
also inactive or finalized) and reported on /diagnostics (status
`<manager>: lifecycle`, ERROR when failed, on every change and at 1 Hz).
`shutdown` means "bring the nodes back to unconfigured" (deactivate, cleanup), so `startup` can
bring them up again; it does not finalize them.

Transitions requested by someone else (`ros2 lifecycle set /tinygpt_node deactivate`) are followed
through each node's `<node>/transition_event`: between sequences `~/state` is the state of the
least advanced managed node (unconfigured, inactive, active, finalized), so it never claims
`active` for a node that is not. During a sequence the events only update the per-node states;
`failed` stays until the next startup/shutdown, so its reason is not overwritten.

Lost answers (see RESEND_AFTER_S): an unanswered get_state is sent again; a change_state is
settled by the node's transition_event when its answer does not come first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State, Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String

from tinygpt_ros.ros.diagnostics_wire import DiagnosticsPublisher, Status
from tinygpt_ros.ros.spin import spin_node_main

STARTUP, SHUTDOWN = "active", "unconfigured"  # goal states
_STEP_UP = {  # current state -> transition towards active
    State.PRIMARY_STATE_UNCONFIGURED: (Transition.TRANSITION_CONFIGURE, "configure"),
    State.PRIMARY_STATE_INACTIVE: (Transition.TRANSITION_ACTIVATE, "activate"),
}
_STEP_DOWN = {  # current state -> transition towards unconfigured
    State.PRIMARY_STATE_ACTIVE: (Transition.TRANSITION_DEACTIVATE, "deactivate"),
    State.PRIMARY_STATE_INACTIVE: (Transition.TRANSITION_CLEANUP, "cleanup"),
}
MAX_STEPS_PER_NODE = 6
# A lifecycle service's answer can be lost right after start-up (why: ros/service_calls.py, the
# blocking callers' version). The manager never blocks, so it does the same in its tick: a
# get_state unanswered after RESEND_AFTER_S is asked again (then after twice as long, ...); a
# change_state whose answer is lost is settled by the node's transition_event, which names the
# state the transition ended in. Shorter than the blocking callers' 5 s: it delays a bring-up.
RESEND_AFTER_S = 2.0
# transition -> (the transition state it passes through, the primary state it ends in)
_TRANSITION_STATES = {
    Transition.TRANSITION_CONFIGURE: (State.TRANSITION_STATE_CONFIGURING,
                                      State.PRIMARY_STATE_INACTIVE),
    Transition.TRANSITION_ACTIVATE: (State.TRANSITION_STATE_ACTIVATING,
                                     State.PRIMARY_STATE_ACTIVE),
    Transition.TRANSITION_DEACTIVATE: (State.TRANSITION_STATE_DEACTIVATING,
                                       State.PRIMARY_STATE_INACTIVE),
    Transition.TRANSITION_CLEANUP: (State.TRANSITION_STATE_CLEANINGUP,
                                    State.PRIMARY_STATE_UNCONFIGURED),
}
# Primary states, least advanced first: the manager's state between sequences is the first one
# any managed node is in.
_PRIMARY_ORDER = (
    State.PRIMARY_STATE_FINALIZED, State.PRIMARY_STATE_UNCONFIGURED,
    State.PRIMARY_STATE_INACTIVE, State.PRIMARY_STATE_ACTIVE,
)
_PRIMARY_LABELS = {
    State.PRIMARY_STATE_FINALIZED: "finalized", State.PRIMARY_STATE_UNCONFIGURED: "unconfigured",
    State.PRIMARY_STATE_INACTIVE: "inactive", State.PRIMARY_STATE_ACTIVE: "active",
}


@dataclass
class _Clients:
    change: Any
    get: Any


@dataclass
class _Step:
    node: str
    phase: str  # "get_state" | "change_state"
    deadline: float
    future: Any = None
    transition: str = ""
    transition_id: int = 0
    steps: int = 0
    sent_at: float = 0.0  # when the pending request went out
    # get_state: ask again when unanswered this long (read when the step starts)
    resend_after: float = field(default_factory=lambda: RESEND_AFTER_S)


class LifecycleManager(Node):
    """Drives the lifecycle of `node_names`; see the module docstring for the protocol."""

    def __init__(self, node_name: str = "lifecycle_manager", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameter(
            "node_names", ["tinygpt_node"],
            ParameterDescriptor(
                description="Managed lifecycle nodes (relative to this node's namespace), brought "
                "up in this order and down in reverse. Read at start-up.",
                read_only=True,
            ),
        )
        self.declare_parameter(
            "autostart", True,
            ParameterDescriptor(description="Configure and activate the nodes on start-up."),
        )
        self.declare_parameter(
            "transition_timeout_s", 30.0,
            ParameterDescriptor(
                description="Longest wait for a node's lifecycle service or one transition "
                "(model loading happens in configure).",
                floating_point_range=[FloatingPointRange(from_value=0.1, to_value=3600.0)],
            ),
        )
        self.node_names: list[str] = list(self.get_parameter("node_names").value)
        self._group = MutuallyExclusiveCallbackGroup()
        self._lc_clients = {
            n: _Clients(
                self.create_client(ChangeState, f"{n}/change_state", callback_group=self._group),
                self.create_client(GetState, f"{n}/get_state", callback_group=self._group),
            )
            for n in self.node_names
        }
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._state_pub = self.create_publisher(String, "~/state", latched)
        self._diagnostics = DiagnosticsPublisher(
            self.create_publisher(DiagnosticArray, "/diagnostics", 10))
        self.create_service(ChangeState, "~/startup", self._on_startup, callback_group=self._group)
        self.create_service(ChangeState, "~/shutdown", self._on_shutdown,
                            callback_group=self._group)
        self.state = "idle"
        self.node_states: dict[str, str] = {n: "unknown" for n in self.node_names}
        self._node_primary: dict[str, int] = {}
        for n in self.node_names:
            self.create_subscription(
                TransitionEvent, f"{n}/transition_event",
                lambda msg, n=n: self._on_transition_event(n, msg), 10,
                callback_group=self._group,
            )
        self.failures: dict[str, str] = {}
        self._goal = ""
        self._queue: list[str] = []
        self._step: _Step | None = None
        self._on_done: list[Callable[[bool], None]] = []
        self._mutex = threading.RLock()  # startup()/shutdown() may come from other threads
        self._tick = self.create_timer(0.05, self._on_tick, callback_group=self._group)
        self._tick.cancel()
        # Diagnostic aggregators mark silent items stale: repeat the status at 1 Hz.
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._group)
        self._publish_state()
        if self.get_parameter("autostart").value:
            self.startup()

    # ------------------------------------------------------------------------------ public API

    @property
    def busy(self) -> bool:
        return self._step is not None

    def startup(self, on_done: Callable[[bool], None] | None = None) -> bool:
        """Configure + activate every managed node (in order). False if a sequence is running."""
        return self._begin(STARTUP, list(self.node_names), "starting", on_done)

    def shutdown(self, on_done: Callable[[bool], None] | None = None) -> bool:
        """Deactivate + clean up every managed node (reverse order) back to unconfigured."""
        return self._begin(SHUTDOWN, list(reversed(self.node_names)), "stopping", on_done)

    # ------------------------------------------------------------------------------- services

    def _on_startup(self, request: ChangeState.Request, response: ChangeState.Response):
        response.success = self.startup()
        return response

    def _on_shutdown(self, request: ChangeState.Request, response: ChangeState.Response):
        response.success = self.shutdown()
        return response

    # -------------------------------------------------------------------------- state machine

    def _begin(self, goal: str, nodes: list[str], label: str,
               on_done: Callable[[bool], None] | None) -> bool:
        with self._mutex:
            return self._begin_locked(goal, nodes, label, on_done)

    def _begin_locked(self, goal: str, nodes: list[str], label: str,
                      on_done: Callable[[bool], None] | None) -> bool:
        if self._step is not None:
            self.get_logger().warning(f"{label} refused: a sequence is still running")
            return False
        self._goal, self._queue = goal, nodes
        self.failures = {}
        self._on_done = [on_done] if on_done else []
        self._set_state(label)
        self._next_node()
        if self._step is not None:
            self._tick.reset()
        return True

    def _timeout(self) -> float:
        return time.monotonic() + float(self.get_parameter("transition_timeout_s").value)

    def _next_node(self) -> None:
        if not self._queue:
            self._finish(True)
            return
        self._step = _Step(self._queue.pop(0), "get_state", self._timeout())

    def _on_tick(self) -> None:
        with self._mutex:
            self._advance()

    def _advance(self) -> None:
        step = self._step
        if step is None:
            self._tick.cancel()
            return
        clients = self._lc_clients[step.node]
        if step.future is None:
            client = clients.get if step.phase == "get_state" else clients.change
            if client.service_is_ready():
                if step.phase == "get_state":
                    step.future = client.call_async(GetState.Request())
                else:
                    req = ChangeState.Request(transition=Transition(id=step.transition_id))
                    step.future = client.call_async(req)
                step.sent_at = time.monotonic()
            elif time.monotonic() > step.deadline:
                self._fail(step.node, f"service {client.srv_name} not available")
            return
        if not step.future.done():
            now = time.monotonic()
            if now > step.deadline:
                what = step.transition or "get_state"
                self._fail(step.node, f"{what} timed out")
            elif step.phase == "get_state" and now - step.sent_at > step.resend_after:
                self.get_logger().info(
                    f"{step.node}/get_state unanswered after {step.resend_after:.0f} s; asking "
                    "again (a response lost before discovery finished)")
                self._forget(clients.get, step)
                step.resend_after *= 2  # the next tick sends it again
            return
        try:
            result = step.future.result()
        except Exception as exc:  # a service that died mid-call
            self._fail(step.node, f"{step.phase} call failed: {exc!r}")
            return
        if step.phase == "get_state":
            self._after_get_state(step, result.current_state)
        else:
            self._after_change_state(step, bool(result.success))

    @staticmethod
    def _forget(client: Any, step: _Step) -> None:
        """Drop the step's pending request; an answer that still comes is ignored."""
        if step.future is not None:
            client.remove_pending_request(step.future)
        step.future = None

    def _settle_by_event(self, node: str, event: TransitionEvent) -> None:
        """Our change_state request for `node` is pending and the node reports the end of that
        very transition (it leaves the transition's own state): the answer is no longer needed,
        and may never come."""
        step = self._step
        if step is None or step.node != node or step.phase != "change_state" \
                or step.future is None or step.transition_id not in _TRANSITION_STATES:
            return
        passing, ends_in = _TRANSITION_STATES[step.transition_id]
        if event.start_state.id != passing or event.goal_state.id not in _PRIMARY_LABELS:
            return
        self._forget(self._lc_clients[node].change, step)
        self._after_change_state(step, event.goal_state.id == ends_in)

    def _on_transition_event(self, node: str, event: TransitionEvent) -> None:
        """Any transition of a managed node, requested by us or by anyone else."""
        goal = event.goal_state
        with self._mutex:
            self._settle_by_event(node, event)
            self.node_states[node] = goal.label
            if goal.id not in _PRIMARY_LABELS:
                return  # a transition state (configuring, ...): the final one follows
            self._node_primary[node] = goal.id
            if self._step is not None or self.state == "failed":
                # our own sequence reports its outcome when it ends; a failure stays on ~/state
                # (with its reason) until the next startup/shutdown
                return
            followed = self._followed_state()
            if followed is not None and followed != self.state:
                self.get_logger().warning(
                    f"{node} went {event.start_state.label} -> {goal.label} outside a "
                    f"startup/shutdown request; state is now {followed}"
                )
                self._set_state(followed)

    def _followed_state(self) -> str | None:
        """The least advanced primary state of the managed nodes, None while one is unknown."""
        if any(n not in self._node_primary for n in self.node_names):
            return None
        ids = {self._node_primary[n] for n in self.node_names}
        return _PRIMARY_LABELS[next(i for i in _PRIMARY_ORDER if i in ids)]

    def _after_get_state(self, step: _Step, current: State) -> None:
        self.node_states[step.node] = current.label
        if current.id in _PRIMARY_LABELS:
            self._node_primary[step.node] = current.id
        goal_id = (
            State.PRIMARY_STATE_ACTIVE if self._goal == STARTUP
            else State.PRIMARY_STATE_UNCONFIGURED
        )
        if current.id == goal_id or (
            self._goal == SHUTDOWN and current.id == State.PRIMARY_STATE_FINALIZED
        ):
            self.get_logger().info(f"{step.node} is {current.label}")
            self._next_node()
            return
        table = _STEP_UP if self._goal == STARTUP else _STEP_DOWN
        if current.id not in table or step.steps >= MAX_STEPS_PER_NODE:
            self._fail(step.node, f"cannot reach {self._goal} from state {current.label!r}")
            return
        step.transition_id, step.transition = table[current.id]
        step.steps += 1
        step.phase, step.future, step.deadline = "change_state", None, self._timeout()

    def _after_change_state(self, step: _Step, success: bool) -> None:
        if not success:
            self._fail(step.node, f"transition {step.transition!r} failed")
            return
        self.get_logger().info(f"{step.node}: {step.transition} done")
        step.phase, step.future, step.deadline = "get_state", None, self._timeout()

    def _fail(self, node: str, reason: str) -> None:
        self.failures[node] = reason
        self.get_logger().error(
            f"lifecycle of {node} failed: {reason}; the sequence stopped (see the node's log)"
        )
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        self._step, self._queue = None, []
        self._tick.cancel()
        if ok:
            self._set_state(self._goal)
        else:
            self._set_state("failed")
        callbacks, self._on_done = self._on_done, []
        for cb in callbacks:
            cb(ok)

    def _set_state(self, state: str) -> None:
        self.state = state
        self._publish_state()

    def _publish_state(self) -> None:
        self._state_pub.publish(String(data=self.state))
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        with self._mutex:
            state, failures, nodes = self.state, dict(self.failures), dict(self.node_states)
        level = DiagnosticStatus.ERROR if state == "failed" else DiagnosticStatus.OK
        message = "; ".join(f"{n}: {r}" for n, r in failures.items()) if failures else state
        values = [("state", state)]
        values += [(f"node.{n}", s) for n, s in nodes.items()]
        values += [(f"failure.{n}", r) for n, r in failures.items()]
        status = Status(level[0], f"{self.get_name()}: lifecycle", message, "", values)
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(header, [status])


def main(args: list[str] | None = None) -> None:
    """`ros2 run tinygpt_ros lifecycle_manager --ros-args -p node_names:=[tinygpt_node]`."""
    spin_node_main(LifecycleManager, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
