"""A single-node Kafka broker for the fault suite, with a second listener behind the fault proxy.

The broker has two client listeners:

- ``PLAINTEXT`` (the direct listener) is for the suite's producer and oracle, and for
  the broker itself (inter-broker listener). No fault is ever injected on it.
- ``FAULTY`` listens on its own port but advertises the fault proxy's port. A client that
  bootstraps through the proxy gets metadata for the listener it connected to, so every
  later connection it opens also goes through the proxy. Workers use only this listener.

Unlike ``tombstone.broker.local.LocalBroker``, this class keeps the data directory when the
broker is killed and starts it again on the same ports, so a test can SIGKILL, SIGSTOP and
restart it. It reuses LocalBroker's jars and ``server.properties`` template.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tombstone.broker.local import _JVM_OPTIONS, random_cluster_id
from tombstone.broker.runtime import ensure_jars, runtime_config_dir
from tombstone.processes import free_port, pid_alive, port_open, tail

from tests.faults.proxy import FaultProxy

logger = logging.getLogger(__name__)

FAULTY_LISTENER = "FAULTY"


def two_listener_config(template: str, direct_port: int, faulty_port: int, proxy_port: int,
                        controller_port: int, data_dir: Path) -> str:
    """Fill the broker template and add the FAULTY listener that advertises the proxy.

    Raises:
        ValueError: the template has no ``listeners``, ``advertised.listeners`` or
            ``listener.security.protocol.map`` line to extend.
    """
    text = template.format(broker_port=direct_port, controller_port=controller_port, data_dir=data_dir)
    replacements = {
        "listeners": f"{FAULTY_LISTENER}://127.0.0.1:{faulty_port}",
        "advertised.listeners": f"{FAULTY_LISTENER}://127.0.0.1:{proxy_port}",
        "listener.security.protocol.map": f"{FAULTY_LISTENER}:PLAINTEXT",
    }
    for key, addition in replacements.items():
        pattern = re.compile(rf"^{re.escape(key)}=(.*)$", re.MULTILINE)
        if not pattern.search(text):
            raise ValueError(f"The broker template {runtime_config_dir() / 'server.properties'} has no "
                             f"{key}= line, so the {FAULTY_LISTENER} listener cannot be added.")
        text = pattern.sub(lambda match, addition=addition: f"{match.group(0)},{addition}", text, count=1)
    return text


class FaultBroker:
    """Start, kill, pause and restart one broker whose FAULTY listener sits behind a proxy."""

    def __init__(self, state_dir: Path, heap_mb: int = 512) -> None:
        self.state_dir = Path(state_dir)
        self.heap_mb = heap_mb
        self.direct_port = free_port()
        self.faulty_port = free_port()
        self.controller_port = free_port()
        self.proxy = FaultProxy("127.0.0.1", self.faulty_port)
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = self.state_dir / "server.properties"
        self.log_path = self.state_dir / "broker.log"
        self._command: list[str] = []

    @property
    def direct_bootstrap(self) -> str:
        return f"127.0.0.1:{self.direct_port}"

    @property
    def faulty_bootstrap(self) -> str:
        return self.proxy.address

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("The fault broker is not started.")
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> None:
        """Format a fresh data directory, start the proxy and the broker, and wait for both listeners."""
        if shutil.which("java") is None:
            raise RuntimeError("Java is not installed; the fault suite's Kafka broker needs Java 17 or later.")
        libs = ensure_jars()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        data_dir = self.state_dir / "data"
        data_dir.mkdir(parents=True)
        self.proxy.start()
        template = (runtime_config_dir() / "server.properties").read_text(encoding="utf-8")
        self.config_path.write_text(
            two_listener_config(template, self.direct_port, self.faulty_port, self.proxy.port,
                                self.controller_port, data_dir), encoding="utf-8")
        shutil.copy(runtime_config_dir() / "log4j2.properties", self.state_dir / "log4j2.properties")
        common = [*_JVM_OPTIONS, f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
                  f"-Dkafka.logs.dir={self.state_dir}", "-cp", f"{libs}/*"]
        formatted = subprocess.run(
            ["java", "-Xmx256m", *common, "kafka.tools.StorageTool", "format", "--standalone",
             "-t", random_cluster_id(), "-c", str(self.config_path)],
            capture_output=True, text=True, timeout=120)
        if formatted.returncode != 0:
            raise RuntimeError(f"Formatting KRaft storage failed (exit {formatted.returncode}):\n"
                               f"{(formatted.stdout + formatted.stderr)[-3000:]}")
        self._command = ["java", f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", *common, "kafka.Kafka",
                         str(self.config_path)]
        self._launch(timeout_s)

    def _launch(self, timeout_s: float) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self._command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The fault broker exited with status {self.process.returncode} during "
                                   f"start-up. Last lines of {self.log_path}:\n{tail(self.log_path)}")
            if port_open(self.direct_port) and port_open(self.faulty_port):
                logger.info("Fault broker pid %d ready: direct %s, faulty %s through the proxy",
                            self.process.pid, self.direct_bootstrap, self.faulty_bootstrap)
                return
            time.sleep(0.2)
        raise RuntimeError(f"The fault broker did not listen on ports {self.direct_port} and {self.faulty_port} "
                           f"within {timeout_s:.0f} s. Last lines of {self.log_path}:\n{tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL the broker, as a power cut would, and collect its exit status."""
        process = self._running()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        logger.info("Fault broker pid %d killed with SIGKILL", process.pid)

    def restart(self, timeout_s: float = 120.0) -> None:
        """Start the broker again on the same ports and data directory, without formatting."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("The fault broker still runs; kill or stop it before a restart.")
        self._launch(timeout_s)

    def terminate(self, timeout_s: float = 60.0) -> None:
        """Stop the broker with SIGTERM (a controlled shutdown), SIGKILL after ``timeout_s``."""
        process = self._running()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("Fault broker pid %d ignored SIGTERM for %.0f s; killing it", process.pid, timeout_s)
            process.kill()
            process.wait(30)

    def pause(self) -> None:
        """SIGSTOP the broker: it keeps its sockets open but sends no responses until ``resume``."""
        os.kill(self._running().pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._running().pid, signal.SIGCONT)

    def _running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("The fault broker is not running.")
        return self.process

    def stop(self) -> None:
        """Stop the broker (resuming it first if paused) and the proxy."""
        if self.process is not None and self.process.poll() is None and pid_alive(self.process.pid):
            os.kill(self.process.pid, signal.SIGCONT)
            self.terminate(30)
        self.proxy.stop()
