"""Worker faults on a real broker: SIGKILL between apply and commit, a locked store, SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import (
    ProofReader,
    caught_up,
    committed_offsets,
    count_customers,
    seed_customers,
    wait_for,
    write_sqlite_spec,
)
from tombstone.inventory import Inventory
from tombstone.ledger.ledger import Ledger
from tombstone.models import AckStatus
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec

pytestmark = pytest.mark.integration


def _request(ids: range) -> list:
    requester = Requester(KafkaSettings())
    try:
        return requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                                 for i in ids])
    finally:
        requester.close()


def _worker_process(spec: Path, log: Path, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("TOMBSTONE_FAULT_CRASH_AT", None)
    if crash_at:
        env["TOMBSTONE_FAULT_CRASH_AT"] = crash_at
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tombstone.cli", "worker", str(spec), "--metrics-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _ledger(store: str) -> Ledger:
    inventory = Inventory.model_validate(
        {"data_classes": {"customer_profile": {"subject_types": ["customer"], "stores": [{"store": store, "action": "delete"}]}}})
    return Ledger(inventory, KafkaSettings())


@pytest.mark.parametrize("crash_at", ["after_apply", "after_ack", "before_commit"])
def test_sigkill_before_commit_applies_once(crash_at: str, tmp_path: Path, proof_reader: ProofReader) -> None:
    spec = write_sqlite_spec(tmp_path)
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 6))
    requests = _request(range(1, 6))

    crashed = _worker_process(spec, tmp_path / "crash.log", crash_at)
    assert crashed.wait(60) == -signal.SIGKILL
    # The first batch may hold one partition's records only; at least it was applied.
    assert count_customers(database, range(1, 6)) < 5

    restart_log = tmp_path / "restart.log"
    restarted = _worker_process(spec, restart_log)
    ledger = _ledger("operational-db")
    kafka = KafkaSettings()
    try:
        wait_for(lambda: ledger.refresh() >= 0 and ledger.summary()["complete"] == 5, what="5 complete requests")
        wait_for(lambda: caught_up(load_spec(spec).consumer_group, kafka),
                 what="the restarted worker's commit")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0
        ledger.close()

    rows = [row for r in requests for row in ledger.state.rows(r)]
    assert len(rows) == 5
    assert {row.status for row in rows} == {AckStatus.DELETED}
    assert sum(row.items_affected for row in rows) == 5
    proof_reader.refresh()
    assert {(a.request_id, a.status, a.items_affected) for a in proof_reader.acks} == \
        {(row_request.request_id, AckStatus.DELETED, 1) for row_request in requests}


def _lock_after_start(database: Path) -> sqlite3.Connection:
    """Hold SQLite's write lock, as a long-running writer would."""
    locker = sqlite3.connect(database, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    return locker


def test_locked_store_pauses_then_completes(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    spec = write_sqlite_spec(tmp_path)
    spec.write_text(spec.read_text().replace('path = "', 'busy_timeout_s = 0.2\npath = "', 1))
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 4))
    worker = start_worker(spec)
    wait_for(lambda: worker.worker.health.ready, what="the worker to join its group")
    locker = _lock_after_start(database)
    _request(range(1, 4))

    registry = worker.worker.metrics.registry
    wait_for(lambda: (registry.get_sample_value("tombstone_retries_total",
                                                {"store": "operational-db", "step": "apply"}) or 0) >= 2,
             what="two retries of the apply step")
    proof_reader.refresh()
    assert proof_reader.acks == []
    assert registry.get_sample_value("tombstone_partitions_paused", {"store": "operational-db"}) >= 1
    wait_for(lambda: sum(s.value for s in _samples(registry, "tombstone_consumer_lag_records")) >= 3,
             what="lag of 3 records while the store is locked")
    locker.execute("ROLLBACK")
    locker.close()

    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 3, what="3 acks after the lock")
    worker.join()
    assert count_customers(database) == 0
    assert registry.get_sample_value("tombstone_partitions_paused", {"store": "operational-db"}) == 0
    assert sum(s.value for s in _samples(registry, "tombstone_consumer_lag_records")) == 0
    assert sum(s.value for s in _samples(registry, "tombstone_consumer_lag_seconds")) == 0


def _samples(registry, name: str) -> list:
    return [sample for metric in registry.collect() for sample in metric.samples if sample.name == name]


def test_sigterm_during_retry_commits_nothing(tmp_path: Path, proof_reader: ProofReader) -> None:
    spec = write_sqlite_spec(tmp_path)
    spec.write_text(spec.read_text().replace('path = "', 'busy_timeout_s = 0.2\npath = "', 1))
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 3))
    log = tmp_path / "worker.log"
    process = _worker_process(spec, log)
    wait_for(lambda: "Assigned" in log.read_text(), what="the worker to join its group")
    locker = _lock_after_start(database)
    _request(range(1, 3))

    wait_for(lambda: "retrying" in log.read_text(), what="a retry in the worker log")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    locker.execute("ROLLBACK")
    locker.close()

    assert "nothing committed" in log.read_text()
    kafka = KafkaSettings()
    assert all(offset < 0 for offset in committed_offsets(load_spec(spec).consumer_group, kafka).values())
    restarted = _worker_process(spec, tmp_path / "restart.log")
    try:
        wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 2, what="2 acks after restart")
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    assert count_customers(database) == 0
