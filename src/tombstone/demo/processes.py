"""Child processes of the demo: one worker per consumer spec."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    name: str
    spec: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    metrics_port: int

    def tail(self, size: int = 2000) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-size:]
        except OSError:
            return "(no log)"


def start_worker(name: str, spec: Path, env: dict[str, str], log_dir: Path, metrics_port: int) -> WorkerProcess:
    """Start ``tombstone worker SPEC`` as a child process logging to ``log_dir/NAME.log``."""
    log_file = log_dir / f"{name}.log"
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tombstone.cli", "worker", str(spec), "--metrics-port", str(metrics_port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env},
        )
    logger.info("Started worker %s (pid %d), log %s", name, process.pid, log_file)
    return WorkerProcess(name, spec, process, log_file, metrics_port)


def stop_workers(workers: list[WorkerProcess], timeout_s: float = 30.0) -> dict[str, int]:
    """SIGTERM every worker, wait, SIGKILL stragglers; return exit codes by name."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int] = {}
    for worker in workers:
        try:
            codes[worker.name] = worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("Worker %s ignored SIGTERM for %.0f s; killing it", worker.name, timeout_s)
            worker.process.kill()
            codes[worker.name] = worker.process.wait()
    return codes


def failed_workers(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    return [w for w in workers if w.process.poll() is not None]
