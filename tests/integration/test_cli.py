"""The command line against a real broker: request, proof show, topics, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.helpers import ProofReader, seed_customers, wait_for, write_sqlite_spec
from tombstone.kafka.reader import TopicReader
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _tombstone(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tombstone.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ))


def test_topics_create_is_idempotent(kafka_env: dict[str, str]) -> None:
    first = _tombstone("topics", "create")
    second = _tombstone("topics", "create")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.count("created") == 4  # requests, proofs, dead letters, holds
    assert second.stdout.count("exists") == 4


def test_request_prints_id_of_confirmed_record(pipeline_topics: dict[str, str]) -> None:
    result = _tombstone("request", "--subject", "customer:17", "--data-class", "customer_profile",
                        "--reason", "user_request")

    assert result.returncode == 0, result.stderr
    request_id = result.stdout.strip()
    assert str(uuid.UUID(request_id)) == request_id
    reader = TopicReader(KafkaSettings(), [pipeline_topics["TOMBSTONE_REQUESTS_TOPIC"]])
    records = list(reader.read_new())
    reader.close()
    assert len(records) == 1
    assert records[0].key() == b"customer:17/customer_profile"
    assert RequestSerde().deserialize(records[0].value()).request_id == request_id


def test_request_to_missing_topic_fails_clearly(kafka_env: dict[str, str]) -> None:
    result = _tombstone("request", "--subject", "customer:17", "--data-class", "customer_profile",
                        "--reason", "user_request")

    assert result.returncode == 1
    assert kafka_env["TOMBSTONE_REQUESTS_TOPIC"] in result.stderr
    assert result.stdout == ""


def test_proof_show_lists_every_store(tmp_path: Path, pipeline_topics: dict[str, str],
                                      proof_reader: ProofReader, start_worker) -> None:
    spec = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(7, 8))
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        '[data_classes.customer_profile]\nsubject_types = ["customer"]\n'
        'stores = [{ store = "operational-db", action = "delete" }, { store = "search", action = "delete" }]\n', encoding="utf-8")
    request_id = _tombstone("request", "--subject", "customer:7", "--data-class", "customer_profile",
                            "--reason", "user_request").stdout.strip()
    worker = start_worker(spec)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 1, what="one ack")
    worker.join()

    by_id = _tombstone("proof", "show", request_id, "--json", "--inventory", str(inventory))
    by_subject = _tombstone("proof", "show", "customer:7", "--inventory", str(inventory))

    assert by_id.returncode == 0, by_id.stderr
    view = json.loads(by_id.stdout)[0]
    assert view["complete"] is False
    assert {row["store"]: row["status"] for row in view["stores"]} == {"operational-db": "DELETED",
                                                                      "search": "PENDING"}
    assert by_subject.returncode == 0, by_subject.stderr
    assert request_id in by_subject.stdout
    assert "customer:7" not in by_id.stdout


def test_demo_json_contract(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    result = _tombstone("demo", "--json", timeout_s=400)

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["customers_loaded"] == 59
    assert summary["requests"] == summary["complete"]
    assert summary["requests"] > 0
    assert summary["remaining_after_scan"] == 0
    assert len(summary["stores"]) >= 5
    for name, store in summary["stores"].items():
        assert store["remaining_after_scan"] == 0, name
        # Every ack counts in the metrics; a hidden then purged request acks twice.
        assert store["metrics"]["deletes_total"] >= sum(store["status_counts"].values()), name
        assert store["metrics"]["lag_records"] == 0, name
    # The inventory's policy: hidden then purged, anonymized, retained.
    stores = summary["stores"]
    assert stores["operational-db"]["status_by_data_class"] == {
        "customer_profile": {"PURGED": 8}, "customer_invoices": {"ANONYMIZED": 8}}
    assert stores["warehouse"]["status_by_data_class"] == {
        "customer_profile": {"ANONYMIZED": 8}, "customer_invoices": {"ANONYMIZED": 8}}
    assert stores["exports"]["status_by_data_class"] == {
        "customer_profile": {"DELETED": 8}, "customer_invoices": {"RETAINED": 8}}
    assert stores["search"]["status_counts"] == {"DELETED": 8}


def test_demo_all_stores_includes_servers(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    result = _tombstone("demo", "--stores", "all", "--json", "--customers", "5", timeout_s=400)

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["requests"] == summary["complete"] == 10
    assert summary["remaining_after_scan"] == 0
    assert {"crm-db", "cache"} <= set(summary["stores"])
    assert summary["stores"]["crm-db"]["status_counts"] == {"DELETED": 5, "RETAINED": 5}
    assert summary["stores"]["cache"]["status_counts"] == {"DELETED": 5}
