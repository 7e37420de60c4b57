"""A real Prometheus server scrapes a worker, the ledger and the CDC bridge, and PromQL checks their metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.integration.helpers import seed_customers, wait_for, write_sqlite_spec
from tests.unit import cdc_events as ev
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


def _prometheus_config(path: Path, worker_port: int, ledger_port: int, bridge_port: int) -> None:
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
  - job_name: tombstone-cdc
    static_configs: [{{targets: ["127.0.0.1:{bridge_port}"]}}]
""", encoding="utf-8")


def _bridge_config(path: Path, topic: str, group_id: str) -> None:
    path.write_text(f"""
[bridge]
name = "test"
group_id = "{group_id}"
poll_timeout_s = 0.2

[[tables]]
topic = "{topic}"
subject_type = "customer"
data_class = "customer_profile"
key_columns = ["customer_id"]
""", encoding="utf-8")


def _produce_delete(topic: str, customer_id: int) -> None:
    """Write a Debezium delete event and its tombstone, as the connector does for a DELETE."""
    producer = Producer(KafkaSettings().client_config())
    errors: list = []
    commit_ms = int(time.time() * 1000)
    for value in (ev.delete(customer_id, ts_ms=commit_ms), None):
        producer.produce(topic, key=ev.key(customer_id), value=value,
                         on_delivery=lambda error, _message: errors.append(error))
    assert producer.flush(10) == 0
    assert errors == [None, None]


def test_prometheus_sees_deletes_match_ledger(tmp_path: Path, pipeline_topics: dict[str, str],
                                               create_topic: Callable[..., str], unique_name: Callable[[str], str],
                                               processes: list[subprocess.Popen[bytes]]) -> None:
    server = shutil.which("prometheus")
    assert server, "The prometheus server binary is missing; run `make services` to install it."
    spec = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 8))
    cdc_topic = create_topic(unique_name("chinook.public.customer"), 1)
    bridge_config = tmp_path / "bridge.toml"
    _bridge_config(bridge_config, cdc_topic, unique_name("cdc-group"))
    worker_port, ledger_port, bridge_port, prometheus_port = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    _prometheus_config(config, worker_port, ledger_port, bridge_port)
    cli = [sys.executable, "-m", "tombstone.cli"]
    processes.append(_spawn([*cli, "worker", str(spec), "--metrics-port", str(worker_port)], tmp_path / "worker.log"))
    processes.append(_spawn([*cli, "ledger", "--metrics-port", str(ledger_port), "--interval-s", "1"],
                            tmp_path / "ledger.log"))
    processes.append(_spawn([*cli, "cdc-bridge", str(bridge_config), "--metrics-port", str(bridge_port)],
                            tmp_path / "bridge.log"))
    processes.append(_spawn([server, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prometheus_port}"], tmp_path / "prometheus.log"))
    wait_for(lambda: _query(prometheus_port, 'sum(up{job=~"tombstone-.*"})') == 3, what="all three targets up")

    # Customers 1 to 6 through the requests topic, customer 7 through a Debezium delete event.
    requester = Requester(KafkaSettings())
    try:
        requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                          for i in range(1, 7)])
    finally:
        requester.close()
    _produce_delete(cdc_topic, 7)

    wait_for(lambda: _query(prometheus_port, 'tombstone_ledger_requests{state="complete"}') == 7,
             what="the ledger's complete count in Prometheus")
    wait_for(lambda: _query(prometheus_port, 'sum(tombstone_deletes_total{status="DELETED"})') == 7,
             what="the worker's delete count in Prometheus")
    wait_for(lambda: _query(prometheus_port, "max(tombstone_consumer_lag_records)") == 0,
             what="lag back to 0")
    # Prometheus scrapes the bridge on its own schedule, so its counts may trail the ledger's.
    wait_for(lambda: _query(prometheus_port, 'sum(tombstone_cdc_requests_total{bridge="test"})') == 1,
             what="the bridge's request count in Prometheus")
    wait_for(lambda: _query(prometheus_port, 'sum(tombstone_cdc_skipped_total{reason="tombstone_after_delete"})') == 1,
             what="the bridge's skipped tombstone in Prometheus")
    wait_for(lambda: _query(prometheus_port, "max(tombstone_cdc_consumer_lag_records)") == 0,
             what="the bridge's lag back to 0")
    assert _query(prometheus_port, "sum(tombstone_cdc_source_delay_seconds_count)") == 1
    assert _query(prometheus_port, 'tombstone_ledger_requests{state="pending"}') == 0
    assert _query(prometheus_port, "tombstone_ledger_overdue_requests") == 0
    assert _query(prometheus_port, 'count(ALERTS{alertstate="firing"})') is None
