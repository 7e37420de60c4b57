"""Helpers for the detached Java processes that tombstone starts on loopback.

The local Kafka broker and the local Kafka Connect worker share them: pick a free port,
check whether a pid is still alive, stop a process, and read the end of its log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)


T = TypeVar("T")


def free_port() -> int:
    """Return a port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Return True while ``pid`` names a process that has not exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # kill(0) succeeds on a zombie child too, so its state in /proc decides.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def port_open(port: int) -> bool:
    """Return True when 127.0.0.1:``port`` accepts a TCP connection."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is an exited child of this process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pid: int, timeout_s: float, name: str) -> None:
    """Stop ``pid`` with SIGTERM, then SIGKILL when it still runs after ``timeout_s``."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        reap(pid)
        time.sleep(0.2)
    if pid_alive(pid):
        logger.warning("%s pid %d ignored SIGTERM for %.0f s; killing it", name, pid, timeout_s)
        os.kill(pid, signal.SIGKILL)
        reap(pid)


def tail(path: Path, size: int = 3000) -> str:
    """Return the last ``size`` characters of a log file, or "(no log)"."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-size:]
    except OSError:
        return "(no log)"


def read_state(path: Path, cls: type[T]) -> T | None:
    """Load a dataclass saved as JSON at ``path``, or None when it is missing or unreadable."""
    try:
        return cls(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
