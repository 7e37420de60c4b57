"""A real Prometheus server scrapes a worker and the ledger; PromQL checks what they export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import seed_customers, wait_for, write_sqlite_spec
from tombstone.broker.local import free_port
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _query(port: int, expression: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            result = json.load(response)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def _prometheus_config(path: Path, worker_port: int, ledger_port: int) -> None:
    path.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ROOT / 'deploy' / 'prometheus' / 'rules'}/*.yml
scrape_configs:
  - job_name: tombstone-workers
    static_configs: [{{targets: ["127.0.0.1:{worker_port}"]}}]
  - job_name: tombstone-ledger
    static_configs: [{{targets: ["127.0.0.1:{ledger_port}"]}}]
""", encoding="utf-8")


def test_prometheus_sees_deletes_match_ledger(tmp_path: Path, pipeline_topics: dict[str, str],
                                               processes: list[subprocess.Popen[bytes]]) -> None:
    server = shutil.which("prometheus")
    assert server, "The prometheus server binary is missing; run `make services` to install it."
    spec = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 7))
    worker_port, ledger_port, prometheus_port = free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    _prometheus_config(config, worker_port, ledger_port)
    cli = [sys.executable, "-m", "tombstone.cli"]
    processes.append(_spawn([*cli, "worker", str(spec), "--metrics-port", str(worker_port)], tmp_path / "worker.log"))
    processes.append(_spawn([*cli, "ledger", "--metrics-port", str(ledger_port), "--interval-s", "1"],
                            tmp_path / "ledger.log"))
    processes.append(_spawn([server, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prometheus_port}"], tmp_path / "prometheus.log"))
    wait_for(lambda: _query(prometheus_port, 'sum(up{job=~"tombstone-.*"})') == 2, what="both targets up")

    requester = Requester(KafkaSettings())
    try:
        requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                          for i in range(1, 7)])
    finally:
        requester.close()

    wait_for(lambda: _query(prometheus_port, 'tombstone_ledger_requests{state="complete"}') == 6,
             what="the ledger's complete count in Prometheus")
    wait_for(lambda: _query(prometheus_port, 'sum(tombstone_deletes_total{status="DELETED"})') == 6,
             what="the worker's delete count in Prometheus")
    wait_for(lambda: _query(prometheus_port, "max(tombstone_consumer_lag_records)") == 0,
             what="lag back to 0")
    assert _query(prometheus_port, 'tombstone_ledger_requests{state="pending"}') == 0
    assert _query(prometheus_port, "tombstone_ledger_overdue_requests") == 0
    assert _query(prometheus_port, 'count(ALERTS{alertstate="firing"})') is None
