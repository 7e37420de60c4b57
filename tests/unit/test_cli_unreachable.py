"""The CLI against an address where no broker listens: a clear error in bounded time."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(60)
def test_request_unreachable_broker_names_address(free_tcp_port: int) -> None:
    address = f"127.0.0.1:{free_tcp_port}"
    result = subprocess.run(
        [sys.executable, "-m", "tombstone.cli", "request", "--subject", "customer:17",
         "--data-class", "customer_profile", "--reason", "user_request"],
        capture_output=True, text=True, timeout=50,
        env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": address, "TOMBSTONE_CONNECT_TIMEOUT_S": "3"},
    )

    assert result.returncode == 1
    assert address in result.stderr
    assert result.stdout == ""


@pytest.fixture
def free_tcp_port() -> int:
    from tombstone.broker.local import free_port

    return free_port()
