"""Fetch the Kafka broker's runtime jars with Maven, once, into the cache directory."""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path

from tombstone.errors import BrokerRuntimeError
from tombstone.maven import copy_dependencies
from tombstone.settings import cache_dir

logger = logging.getLogger(__name__)

def runtime_config_dir() -> Path:
    """Directory with the broker's pom.xml, server.properties and log4j2.properties."""
    packaged = resources.files("tombstone") / "_kafka_runtime"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "deploy" / "kafka"


def kafka_version() -> str:
    """Kafka version pinned in the runtime POM."""
    pom = (runtime_config_dir() / "pom.xml").read_text(encoding="utf-8")
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    if not match:
        raise BrokerRuntimeError(f"No <kafka.version> in {runtime_config_dir() / 'pom.xml'}.")
    return match.group(1)


def libs_dir(version: str | None = None) -> Path:
    return cache_dir() / f"kafka-{version or kafka_version()}" / "libs"


def ensure_jars(timeout_s: float = 900) -> Path:
    """Return the directory of broker jars, running Maven first if they are missing.

    Raises:
        BrokerRuntimeError: Maven is missing, fails, or times out.
    """
    return copy_dependencies(
        runtime_config_dir() / "pom.xml", libs_dir(), what=f"Kafka {kafka_version()} broker",
        expected_prefix="kafka_2.13-", error=BrokerRuntimeError, timeout_s=timeout_s,
        missing_hint="Install it (Debian: apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS "
                     "to an existing broker.")
