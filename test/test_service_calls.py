"""ros/service_calls.py against real rclpy services: a lost answer is asked for again only when
the caller says the request may be repeated, and a call never outlives its timeout."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import ros_domain_id

from tinygpt_ros.ros import service_calls


@pytest.fixture
def held_server():
    """A GetState server in its own context and thread that holds back its first answer until
    the test ends (a lost response), and a client context spun by the test thread, as
    `tinygpt-ros footprint` spins its own."""
    import rclpy
    from lifecycle_msgs.srv import GetState
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    domain = ros_domain_id()
    server_ctx, client_ctx = rclpy.Context(), rclpy.Context()
    rclpy.init(context=server_ctx, domain_id=domain)
    rclpy.init(context=client_ctx, domain_id=domain)
    server = rclpy.create_node("held_server", context=server_ctx)
    release = threading.Event()
    requests: list[float] = []

    def answer(_req, resp):
        requests.append(time.monotonic())
        if len(requests) == 1:
            release.wait(30.0)
        resp.current_state.label = "active"
        return resp

    server.create_service(GetState, "/held_server/get_state", answer,
                          callback_group=ReentrantCallbackGroup())
    server_exec = MultiThreadedExecutor(num_threads=2, context=server_ctx)
    server_exec.add_node(server)
    threading.Thread(target=server_exec.spin, daemon=True).start()
    client_node = rclpy.create_node("caller", context=client_ctx)
    client = client_node.create_client(GetState, "/held_server/get_state")
    client_exec = SingleThreadedExecutor(context=client_ctx)
    client_exec.add_node(client_node)

    def spin_until_done(future, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not future.done():
            client_exec.spin_once(timeout_sec=0.02)
        return future.done()

    deadline = time.monotonic() + 20.0
    while not client.service_is_ready() and time.monotonic() < deadline:
        client_exec.spin_once(timeout_sec=0.05)
    assert client.service_is_ready()
    try:
        yield client, GetState.Request(), spin_until_done, requests
    finally:
        release.set()
        client_exec.shutdown(timeout_sec=2.0)
        server_exec.shutdown(timeout_sec=2.0)
        client_node.destroy_node()
        server.destroy_node()
        rclpy.try_shutdown(context=client_ctx)
        rclpy.try_shutdown(context=server_ctx)


def test_a_lost_answer_is_asked_for_again(held_server):
    client, request, wait_done, requests = held_server
    t0 = time.monotonic()
    answer = service_calls.call(client, request, 20.0, wait_done, resend_after=0.3)
    assert answer.current_state.label == "active"
    assert len(requests) >= 2 and time.monotonic() - t0 < 10.0
    assert 1 not in client._pending_requests  # the unanswered first copy was dropped


def test_without_resend_one_request_and_the_timeout(held_server):
    client, request, wait_done, requests = held_server
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not answer in 1\.5 s"):
        service_calls.call(client, request, 1.5, wait_done)
    assert 1.4 < time.monotonic() - t0 < 5.0
    assert len(requests) == 1
