"""Child processes of the demo: one worker per consumer spec, and the CDC bridge."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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
    started = start_process(name, ["worker", str(spec), "--metrics-port", str(metrics_port)], env, log_dir)
    return dataclasses.replace(started, spec=spec, metrics_port=metrics_port)


def start_process(name: str, arguments: list[str], env: dict[str, str], log_dir: Path) -> WorkerProcess:
    """Start ``tombstone ARGUMENTS...`` as a child process logging to ``log_dir/NAME.log``."""
    log_file = log_dir / f"{name}.log"
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tombstone.cli", *arguments],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env},
        )
    logger.info("Started %s (pid %d), log %s", name, process.pid, log_file)
    return WorkerProcess(name, Path(arguments[1]) if len(arguments) > 1 else Path(), process, log_file, 0)


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


def scrape_worker(worker: WorkerProcess, timeout_s: float = 5.0) -> dict[str, int]:
    """Read lag and delete counts from a worker's /metrics endpoint."""
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback only
        text = response.read().decode("utf-8")
    totals = {"lag_records": 0.0, "deletes_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tombstone_consumer_lag_records":
                totals["lag_records"] += sample.value
            elif sample.name == "tombstone_deletes_total":
                totals["deletes_total"] += sample.value
    return {key: int(value) for key, value in totals.items()}


def failed_workers(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    return [w for w in workers if w.process.poll() is not None]
