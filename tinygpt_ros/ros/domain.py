"""Which ROS domain a command that starts its own graph should use.

On a shared machine other people's graphs run on other domains; a user separates them by setting
ROS_DOMAIN_ID. A command that brings up a private graph (demo, live eval, soak) must honour that
and only pick a random domain when the user set none.
"""

from __future__ import annotations

import os
import random

# Fast DDS's default port mapping overlaps Linux's ephemeral ports above domain 101.
RANDOM_DOMAIN_RANGE = (1, 101)
MAX_DOMAIN_ID = 232


def ros_domain_id(environ: dict[str, str] | None = None) -> int:
    """The user's ROS_DOMAIN_ID when set, else a random domain in RANDOM_DOMAIN_RANGE.

    Raises ValueError naming the variable when it is set to something that is not a domain id,
    rather than silently using another domain."""
    env = os.environ if environ is None else environ
    chosen = env.get("ROS_DOMAIN_ID", "").strip()
    if not chosen:
        return random.SystemRandom().randint(*RANDOM_DOMAIN_RANGE)
    try:
        value = int(chosen)
    except ValueError:
        raise ValueError(f"ROS_DOMAIN_ID={chosen!r} is not an integer") from None
    if not 0 <= value <= MAX_DOMAIN_ID:
        raise ValueError(f"ROS_DOMAIN_ID={value} is outside 0..{MAX_DOMAIN_ID}")
    return value
