"""Copy the runtime dependencies of a POM into a cache directory with Maven, once.

The broker, the Kafka Connect worker and the Debezium plugin each resolve their jars this
way. A directory is complete once it contains a ``.complete`` marker; otherwise it is wiped
and filled again, because a half-copied or mixed-version set of jars fails later with
linkage errors that do not name the cause.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from tombstone.errors import TombstoneError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"


def copy_dependencies(pom: Path, target: Path, *, what: str, expected_prefix: str,
                      error: type[TombstoneError], missing_hint: str, profile: str | None = None,
                      timeout_s: float = 900) -> Path:
    """Fill ``target`` with the runtime jars of ``pom`` (and ``profile``) unless it is complete.

    ``what`` names the jars in messages, ``expected_prefix`` a jar that must be among them,
    and ``missing_hint`` what to do when Maven is not installed.

    Raises:
        error: Maven is missing, fails, times out, or copies no ``expected_prefix`` jar.
    """
    if (target / COMPLETE_MARKER).exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise error(f"Maven (mvn) is not installed; it fetches the {what} jars. {missing_hint}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    command = [mvn, "-B", "-q", "-f", str(pom), *([f"-P{profile}"] if profile else []),
               "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={target.resolve()}"]
    logger.info("Fetching the %s jars into %s", what, target)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise error(f"Maven did not finish fetching the {what} jars within {timeout_s:.0f} s. "
                    "Check that the Maven repository is reachable, then run the command again.") from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise error(f"Maven failed to fetch the {what} jars (exit {result.returncode}) with "
                    f"`{' '.join(command)}`:\n{tail}")
    jars = list(target.glob("*.jar"))
    if not any(jar.name.startswith(expected_prefix) for jar in jars):
        raise error(f"Maven ran, but {target} contains no {expected_prefix}*.jar. Delete {target} and run again.")
    (target / COMPLETE_MARKER).write_text(f"{len(jars)} jars\n", encoding="utf-8")
    logger.info("Fetched %d %s jars", len(jars), what)
    return target
