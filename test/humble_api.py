"""Hide the rclpy APIs Humble does not have, so the fallbacks in `tinygpt_ros.ros.compat` run
on a newer distro. `TINYGPT_ROS_EMULATE_HUMBLE=1` applies this to a whole pytest run (conftest);
`hidden_newer_api()` applies it inside one test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# (module, class, attribute): added after Humble (rclpy 3.3)
NEWER_API = (
    ("rclpy.node", "Node", "add_post_set_parameters_callback"),
    ("rclpy.node", "Node", "remove_post_set_parameters_callback"),
    ("rclpy.node", "Node", "add_pre_set_parameters_callback"),
    ("rclpy.node", "Node", "remove_pre_set_parameters_callback"),
)


def _owners(module: str, cls: str, attr: str) -> list[tuple[type, object]]:
    import importlib

    klass = getattr(importlib.import_module(module), cls)
    return [(k, k.__dict__[attr]) for k in klass.__mro__ if attr in k.__dict__]


def hide() -> list[tuple[type, str, object]]:
    removed = []
    for module, cls, attr in NEWER_API:
        for owner, value in _owners(module, cls, attr):
            delattr(owner, attr)
            removed.append((owner, attr, value))
    return removed


def restore(removed: list[tuple[type, str, object]]) -> None:
    for owner, attr, value in removed:
        setattr(owner, attr, value)


@contextmanager
def hidden_newer_api() -> Iterator[None]:
    removed = hide()
    try:
        yield
    finally:
        restore(removed)
