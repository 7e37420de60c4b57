"""Fetch the Kafka broker's runtime jars with Maven, once, into the cache directory."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from tombstone.errors import BrokerRuntimeError
from tombstone.settings import cache_dir

logger = logging.getLogger(__name__)

_COMPLETE_MARKER = ".complete"


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

    The directory is wiped before copying, because jars of two Kafka versions on one
    class path fail with confusing linkage errors.

    Raises:
        BrokerRuntimeError: Maven is missing, fails, or times out.
    """
    target = libs_dir()
    if (target / _COMPLETE_MARKER).exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerRuntimeError(
            "Maven (mvn) is not installed; it fetches the Kafka broker jars. "
            "Install it (Debian: apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS "
            "to an existing broker."
        )
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    command = [
        mvn, "-B", "-q", "-f", str(runtime_config_dir() / "pom.xml"),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={target.resolve()}",
    ]
    logger.info("Fetching Kafka %s broker jars into %s", kafka_version(), target)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BrokerRuntimeError(
            f"Maven did not finish fetching the Kafka jars within {timeout_s:.0f} s. "
            "Check that the Maven repository is reachable, then run the command again."
        ) from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise BrokerRuntimeError(
            f"Maven failed to fetch the Kafka jars (exit {result.returncode}):\n{tail}"
        )
    jars = list(target.glob("*.jar"))
    if not any(jar.name.startswith("kafka_2.13-") for jar in jars):
        raise BrokerRuntimeError(f"Maven ran, but {target} contains no kafka_2.13 jar. Delete it and run again.")
    (target / _COMPLETE_MARKER).write_text(f"{len(jars)} jars\n", encoding="utf-8")
    logger.info("Fetched %d jars", len(jars))
    return target
