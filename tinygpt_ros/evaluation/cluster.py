"""Bag replays on a Ray cluster: one task per bag.

Why: a robot fleet records hundreds of hours of bags, more than one machine replays in a useful
time. Each bag is the same `BagJob` the local process pool runs, executed by the same
`replay.evaluate_bag` on a Ray worker, and the results come back in job order, so scoring and the
report are exactly those of a local run. Ray is optional (requirements-ray.txt) and imported only
here, only when `--ray` is given: the node and the local evaluation never import it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tinygpt_ros.evaluation.replay import evaluate_bag
from tinygpt_ros.evaluation.results import BagJob, BagResult

log = logging.getLogger(__name__)

LOCAL = "local"  # --ray local: start a private Ray instance on this machine


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install -r requirements-ray.txt") from None
    return ray


def _init(ray: Any, address: str, kwargs: dict[str, Any], attempts: int = 2) -> None:
    """ray.init; a private local instance gets a second try, since Ray gives its raylet a fixed
    30 s to start, which a busy machine can miss."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            return
        except ConnectionError as exc:
            raise RuntimeError(f"--ray {address}: no Ray cluster reachable ({exc})") from None
        except Exception as exc:  # Ray raises a bare Exception when its node does not start
            if address != LOCAL or attempt == attempts:
                raise RuntimeError(f"--ray {address}: Ray did not start ({exc})") from exc
            log.warning("local Ray instance did not start (%s); trying again", exc)
            ray.shutdown()


def replay_ray(jobs: Sequence[BagJob], address: str, workers: int,
               threads: int | None = None) -> list[BagResult]:
    """Run every job as one Ray task of `threads` CPUs (default 1; torch in each task uses
    that many threads) and return the results in job order.

    `address`: "auto" joins the cluster this machine belongs to (`ray start` ran here),
    "ray://host:10001" or "host:6379" joins a remote one, "local" starts a private instance with
    `workers` CPUs that is shut down afterwards. A Ray runtime already initialised in this
    process is used as it is."""
    ray = _import_ray()
    if not address:
        raise ValueError("--ray needs 'auto', 'local' or a cluster address")
    per_task = threads or 1
    for j in jobs:
        j.threads = per_task
    started = False
    if not ray.is_initialized():
        # configure_logging=False: Ray's own dictConfig would disable every logger that exists
        # in this process (ours included) and the caller's logging setup with them.
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True, "configure_logging": False}
        if address == LOCAL:
            kwargs["num_cpus"] = workers
        else:
            kwargs["address"] = address
        _init(ray, address, kwargs)
        started = True
    try:
        resources = ray.cluster_resources()
        log.info("Ray cluster: %s CPU(s); %d bag task(s) of %d CPU(s) each",
                 resources.get("CPU", "?"), len(jobs), per_task)
        task = ray.remote(num_cpus=per_task, max_retries=1)(evaluate_bag)
        pending = [task.remote(job) for job in jobs]
        return list(ray.get(pending))
    finally:
        if started:
            ray.shutdown()
