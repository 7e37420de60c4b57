"""A single Kafka Connect worker in distributed mode, with the Debezium PostgreSQL plugin.

The worker runs as a detached ``java`` process so that ``tombstone connect start`` can
return while it keeps running. Its state directory contains ``state.json`` (pid, REST
URL, broker) and the worker's configuration and log. Connectors, their configs and source
offsets live in the worker group's internal topics on the broker, not in that directory.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tombstone.connect.rest import ConnectClient
from tombstone.connect.runtime import connect_config_dir, ensure_connect_jars
from tombstone.errors import ConnectRuntimeError
from tombstone.processes import read_state, free_port, pid_alive, port_open, tail, terminate
from tombstone.settings import cache_dir

logger = logging.getLogger(__name__)

_JVM_OPTIONS = ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]
_MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"


@dataclass(frozen=True)
class ConnectState:
    pid: int
    rest_url: str
    rest_port: int
    bootstrap: str
    group_id: str
    log_file: str


class LocalConnect:
    """Start, inspect and stop the local Kafka Connect worker in ``state_dir``.

    ``group_id`` names the worker group and prefixes its internal topics
    (``<group_id>.configs``, ``.offsets`` and ``.status``).
    """

    def __init__(self, state_dir: Path | None = None, heap_mb: int = 512,
                 group_id: str = "tombstone-connect") -> None:
        self.state_dir = Path(state_dir) if state_dir else cache_dir() / "connect"
        self.heap_mb = heap_mb
        self.group_id = group_id

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def state(self) -> ConnectState | None:
        """State of a worker started from this directory, or None."""
        return read_state(self._state_file, ConnectState)

    def running_url(self) -> str | None:
        """REST URL of the worker when its process is alive and its REST port accepts connections."""
        state = self.state()
        if state and pid_alive(state.pid) and port_open(state.rest_port):
            return state.rest_url
        return None

    def start(self, bootstrap: str, timeout_s: float = 120.0) -> str:
        """Start the worker against ``bootstrap`` unless it already runs; return its REST URL.

        Steps: fetch jars, write the worker config, launch, wait until the worker joined
        its group.

        Raises:
            ConnectRuntimeError: Java or Maven is missing, the worker exited, or it was not
                ready within ``timeout_s``. A worker that already runs against another
                broker is an error too.
        """
        running = self._running_against(bootstrap)
        if running:
            return running
        _check_java()

        # Step 1: jars, and a fresh configuration with a free REST port.
        jars = ensure_connect_jars()
        run_dir = self.state_dir / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        rest_port = free_port()
        config = self._write_config(run_dir, bootstrap, rest_port, jars.plugin_path)

        # Step 2: launch detached, so the CLI can return while the worker runs.
        log_file = run_dir / "connect.log"
        with open(log_file, "ab") as out:
            process = subprocess.Popen(
                ["java", f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", *_JVM_OPTIONS,
                 f"-Dlog4j2.configurationFile={run_dir / 'log4j2.properties'}",
                 "-cp", f"{jars.worker_libs}/*", _MAIN_CLASS, str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state = ConnectState(process.pid, f"http://127.0.0.1:{rest_port}", rest_port, bootstrap,
                             self.group_id, str(log_file))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(json.dumps(state.__dict__), encoding="utf-8")

        # Step 3: ready when the REST API reports that the worker finished its start-up.
        self._wait_ready(process, state, timeout_s)
        logger.info("Kafka Connect pid %d ready at %s", process.pid, state.rest_url)
        return state.rest_url

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the worker with SIGTERM, then SIGKILL after ``timeout_s``; True if one ran.

        Its connectors stay registered in the worker group's topics, so a worker started
        again against the same broker and group id resumes them.
        """
        state = self.state()
        if state is None or not pid_alive(state.pid):
            self._state_file.unlink(missing_ok=True)
            return False
        terminate(state.pid, timeout_s, "Kafka Connect")
        self._state_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, object]:
        """Dictionary for ``tombstone connect status``."""
        state = self.state()
        if state is None:
            return {"running": False, "state_dir": str(self.state_dir)}
        return {
            "running": pid_alive(state.pid) and port_open(state.rest_port),
            "pid": state.pid,
            "rest_url": state.rest_url,
            "bootstrap": state.bootstrap,
            "group_id": state.group_id,
            "log_file": state.log_file,
            "state_dir": str(self.state_dir),
        }

    def _running_against(self, bootstrap: str) -> str | None:
        """Return the REST URL of a running worker on ``bootstrap``, or None when none runs."""
        running = self.running_url()
        state = self.state()
        if running is None or state is None:
            return None
        if state.bootstrap != bootstrap:
            raise ConnectRuntimeError(
                f"The Kafka Connect worker at {running} already runs against {state.bootstrap}, "
                f"not {bootstrap}. Stop it with `tombstone connect stop` first."
            )
        logger.info("Kafka Connect already running at %s", running)
        return running

    def _write_config(self, run_dir: Path, bootstrap: str, rest_port: int, plugin_path: Path) -> Path:
        template = (connect_config_dir() / "connect-distributed.properties").read_text(encoding="utf-8")
        config = run_dir / "connect-distributed.properties"
        config.write_text(
            template.format(bootstrap=bootstrap, group_id=self.group_id, rest_port=rest_port,
                            plugin_path=plugin_path),
            encoding="utf-8",
        )
        shutil.copy(connect_config_dir() / "log4j2.properties", run_dir / "log4j2.properties")
        return config

    def _wait_ready(self, process: subprocess.Popen[bytes], state: ConnectState, timeout_s: float) -> None:
        """Wait until ``GET /health`` reports the worker healthy.

        Connect reports it so once the worker joined its group and read its config topic.
        """
        client = ConnectClient(state.rest_url, timeout_s=5)
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._state_file.unlink(missing_ok=True)
                raise ConnectRuntimeError(
                    f"Kafka Connect exited with status {process.returncode} during start-up. "
                    f"Last lines of {state.log_file}:\n{tail(Path(state.log_file))}"
                )
            if port_open(state.rest_port):
                try:
                    health = client.health()
                    if health.get("status") == "healthy":
                        return
                    last_error = json.dumps(health)
                except ConnectRuntimeError as exc:
                    last_error = str(exc)
            time.sleep(0.25)
        self.stop()
        raise ConnectRuntimeError(
            f"Kafka Connect at {state.rest_url} was not ready within {timeout_s:.0f} s "
            f"(last health check: {last_error}). Last lines of {state.log_file}:\n{tail(Path(state.log_file))}"
        )


def _check_java() -> None:
    if shutil.which("java") is None:
        raise ConnectRuntimeError(
            "Java is not installed; Kafka Connect needs Java 17 or later. Install OpenJDK 17 "
            "(Debian: apt-get install openjdk-17-jre-headless)."
        )
