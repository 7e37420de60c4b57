"""Fetch the Kafka Connect worker's jars and the Debezium PostgreSQL plugin with Maven, once.

Both come from ``deploy/connect/pom.xml``: the ``worker`` profile resolves the worker's
class path, the ``debezium`` profile the plugin's own jars. Each set goes to its own
directory in the cache, which contains a ``.complete`` marker once Maven has succeeded.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tombstone.errors import ConnectRuntimeError
from tombstone.maven import copy_dependencies
from tombstone.settings import cache_dir

logger = logging.getLogger(__name__)

PLUGIN_NAME = "debezium-connector-postgres"


@dataclass(frozen=True)
class ConnectJars:
    """Directories that a Connect worker needs: its class path and its ``plugin.path``."""

    worker_libs: Path
    plugin_path: Path


def connect_config_dir() -> Path:
    """Directory with the Connect pom.xml, worker properties template and log4j2 config."""
    packaged = resources.files("tombstone") / "_connect_runtime"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "deploy" / "connect"


def _pom_property(name: str) -> str:
    pom = connect_config_dir() / "pom.xml"
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text(encoding="utf-8"))
    if not match:
        raise ConnectRuntimeError(f"No <{name}> property in {pom}.")
    return match.group(1)


def kafka_version() -> str:
    """Kafka version of the Connect worker pinned in the POM."""
    return _pom_property("kafka.version")


def debezium_version() -> str:
    """Debezium version pinned in the POM."""
    return _pom_property("debezium.version")


def worker_libs_dir() -> Path:
    return cache_dir() / f"connect-{kafka_version()}" / "libs"


def plugin_path_dir() -> Path:
    """Return the worker's ``plugin.path``, a directory with one subdirectory per plugin."""
    return cache_dir() / f"debezium-{debezium_version()}" / "plugins"


def ensure_connect_jars(timeout_s: float = 900) -> ConnectJars:
    """Return the worker's jar directory and plugin path, running Maven for what is missing.

    Raises:
        ConnectRuntimeError: Maven is missing, fails, or times out.
    """
    worker_libs = worker_libs_dir()
    _ensure_profile("worker", worker_libs, "connect-runtime-", timeout_s)
    plugin_path = plugin_path_dir()
    _ensure_profile("debezium", plugin_path / PLUGIN_NAME, "debezium-connector-postgres-", timeout_s)
    return ConnectJars(worker_libs, plugin_path)


def _ensure_profile(profile: str, target: Path, expected_prefix: str, timeout_s: float) -> None:
    """Copy the runtime dependencies of one POM profile into ``target`` unless it is complete."""
    copy_dependencies(connect_config_dir() / "pom.xml", target, what=profile, expected_prefix=expected_prefix,
                      error=ConnectRuntimeError, profile=profile, timeout_s=timeout_s,
                      missing_hint="Install it (Debian: apt-get install maven) and run the command again.")
