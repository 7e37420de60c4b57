"""A single-node Apache Kafka broker (KRaft, combined broker and controller) on loopback.

The broker runs as a detached ``java`` process so that ``tombstone broker start`` can
return while it keeps running. Its state directory contains ``state.json`` (pid and
addresses), the KRaft data directory and the broker's log.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tombstone.broker.runtime import ensure_jars, runtime_config_dir
from tombstone.errors import BrokerRuntimeError
from tombstone.processes import read_state, free_port, pid_alive, port_open, tail, terminate
from tombstone.settings import cache_dir

logger = logging.getLogger(__name__)

_JVM_OPTIONS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def random_cluster_id() -> str:
    """Return a cluster id in Kafka's format: 16 random bytes, base64url without padding."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if "-" not in value:
            return value


@dataclass(frozen=True)
class BrokerState:
    pid: int
    bootstrap: str
    broker_port: int
    controller_port: int
    data_dir: str
    log_file: str


class LocalBroker:
    """Start, inspect and stop the local development broker in ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, heap_mb: int = 512) -> None:
        self.state_dir = Path(state_dir) if state_dir else cache_dir() / "broker"
        self.heap_mb = heap_mb

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def state(self) -> BrokerState | None:
        """State of a broker started from this directory, or None."""
        return read_state(self._state_file, BrokerState)

    def running_bootstrap(self) -> str | None:
        """Bootstrap address of the broker when its process is alive and listening."""
        state = self.state()
        if state and pid_alive(state.pid) and port_open(state.broker_port):
            return state.bootstrap
        return None

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the broker unless it already runs; return its bootstrap address.

        Steps: fetch jars, write config, format KRaft storage, launch, wait for the port.
        """
        running = self.running_bootstrap()
        if running:
            logger.info("Broker already running at %s", running)
            return running
        self._check_java()

        # Step 1: jars and a fresh configuration with two free ports.
        libs = ensure_jars()
        run_dir = self.state_dir / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        (run_dir / "data").mkdir(parents=True)
        broker_port, controller_port = free_port(), free_port()
        config = self._write_config(run_dir, broker_port, controller_port)

        # Step 2: format storage as a standalone KRaft voter.
        classpath = f"{libs}/*"
        common = [*_JVM_OPTIONS, f"-Dlog4j2.configurationFile={run_dir / 'log4j2.properties'}",
                  f"-Dkafka.logs.dir={run_dir}", "-cp", classpath]
        self._format(common, config)

        # Step 3: launch detached, so the CLI can return while the broker runs.
        log_file = run_dir / "broker.log"
        with open(log_file, "ab") as out:
            process = subprocess.Popen(
                ["java", f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", *common,
                 "kafka.Kafka", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        bootstrap = f"127.0.0.1:{broker_port}"
        state = BrokerState(process.pid, bootstrap, broker_port, controller_port,
                            str(run_dir / "data"), str(log_file))
        self._state_file.write_text(json.dumps(state.__dict__), encoding="utf-8")

        # Step 4: ready when the broker port accepts connections.
        self._wait_ready(process, state, timeout_s)
        logger.info("Kafka broker pid %d ready at %s", process.pid, bootstrap)
        return bootstrap

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker with SIGTERM, then SIGKILL after ``timeout_s``; True if one ran."""
        state = self.state()
        if state is None or not pid_alive(state.pid):
            self._state_file.unlink(missing_ok=True)
            return False
        terminate(state.pid, timeout_s, "Broker")
        self._state_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, object]:
        """Dictionary for ``tombstone broker status``."""
        state = self.state()
        if state is None:
            return {"running": False, "state_dir": str(self.state_dir)}
        alive = pid_alive(state.pid)
        return {
            "running": alive and port_open(state.broker_port),
            "pid": state.pid,
            "bootstrap": state.bootstrap,
            "log_file": state.log_file,
            "state_dir": str(self.state_dir),
        }

    @staticmethod
    def _check_java() -> None:
        if shutil.which("java") is None:
            raise BrokerRuntimeError(
                "Java is not installed; the local Kafka broker needs Java 17 or later. "
                "Install OpenJDK 17 or set KAFKA_BOOTSTRAP_SERVERS to an existing broker."
            )

    @staticmethod
    def _write_config(run_dir: Path, broker_port: int, controller_port: int) -> Path:
        template = (runtime_config_dir() / "server.properties").read_text(encoding="utf-8")
        config = run_dir / "server.properties"
        config.write_text(
            template.format(broker_port=broker_port, controller_port=controller_port,
                            data_dir=run_dir / "data"),
            encoding="utf-8",
        )
        shutil.copy(runtime_config_dir() / "log4j2.properties", run_dir / "log4j2.properties")
        return config

    @staticmethod
    def _format(common: list[str], config: Path) -> None:
        command = ["java", "-Xmx256m", *common, "kafka.tools.StorageTool", "format",
                   "--standalone", "-t", random_cluster_id(), "-c", str(config)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise BrokerRuntimeError(
                f"Formatting KRaft storage failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )

    def _wait_ready(self, process: subprocess.Popen[bytes], state: BrokerState, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._state_file.unlink(missing_ok=True)
                raise BrokerRuntimeError(
                    f"The Kafka broker exited with status {process.returncode} during start-up. "
                    f"Last lines of {state.log_file}:\n{tail(Path(state.log_file))}"
                )
            if port_open(state.broker_port):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerRuntimeError(
            f"The Kafka broker did not accept connections on {state.bootstrap} within "
            f"{timeout_s:.0f} s. Last lines of {state.log_file}:\n{tail(Path(state.log_file))}"
        )
