"""Deterministic crash points for fault tests.

``TOMBSTONE_FAULT_CRASH_AT=<point>`` makes the process kill itself with SIGKILL the first
time it reaches that point, as a power cut would: no ``finally`` blocks, no flushes, no
commits. Unset in production, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

CRASH_POINTS = frozenset({
    "after_dead_letter", "after_apply", "after_ack", "before_commit", "after_commit",
    # CDC bridge: requests confirmed, offsets not yet committed.
    "bridge_after_requests",
})

_armed = os.environ.get("TOMBSTONE_FAULT_CRASH_AT")


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when ``name`` is the armed crash point."""
    if _armed is None or _armed != name:
        return
    logger.error("Crash point %s reached: killing this process with SIGKILL", name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
