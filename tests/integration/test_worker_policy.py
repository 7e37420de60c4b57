"""Deletion policies on the real broker: hide then purge, cancel, legal holds, anonymize, retain."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ProofReader, WorkerThread, seed_customers, wait_for, write_sqlite_spec
from tombstone.cancel import cancel_request
from tombstone.errors import InvalidRequestError
from tombstone.inventory import Inventory
from tombstone.ledger.ledger import Ledger
from tombstone.models import AckStatus
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec
from tombstone.worker.holds import Hold, place_hold, release_hold


def inventory(**policy: Any) -> Inventory:
    return Inventory.model_validate({"data_classes": {"customer_profile": {
        "subject_types": ["customer"], "stores": [{"store": "operational-db", "max_delay_s": 3600, **policy}]}}})


def start(tmp_path: Path, policy: Inventory) -> WorkerThread:
    spec = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 6))
    return WorkerThread(load_spec(spec), policy).start()


def submit(subject: str, grace_s: float = 0) -> str:
    request = new_request(subject, "customer_profile", "user_request", "test", grace_period_ms=int(grace_s * 1000))
    requester = Requester(KafkaSettings())
    try:
        requester.submit([request])
    finally:
        requester.close()
    return request.request_id


def statuses(reader: ProofReader, request_id: str) -> list[AckStatus]:
    reader.refresh()
    return [ack.status for ack in reader.acks if ack.request_id == request_id]


def rows(tmp_path: Path, table: str, where: str) -> int:
    db = sqlite3.connect(tmp_path / "operational.sqlite")
    try:
        return db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
    finally:
        db.close()


def view(policy: Inventory, request_id: str) -> Any:
    ledger = Ledger(policy, KafkaSettings())
    try:
        ledger.refresh()
        return ledger.state.view(request_id)
    finally:
        ledger.close()


def test_hide_then_purge_after_the_delay(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="hide", purge_after_s=3)
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:2")
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.HIDDEN], 60, "HIDDEN")
        assert rows(tmp_path, "customer", "customer_id = 2") == 0
        assert rows(tmp_path, "customer__hidden", "customer_id = 2") == 1
        assert not view(policy, request_id).complete  # hidden is not the end of the promise
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.HIDDEN, AckStatus.PURGED], 60, "PURGED")
        assert rows(tmp_path, "customer__hidden", "customer_id = 2") == 0
        done = view(policy, request_id)
        assert done.complete
        assert [step[0] for step in done.rows[0].steps] == [AckStatus.HIDDEN, AckStatus.PURGED]
    finally:
        worker.join()


def test_purge_survives_a_worker_restart(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="hide", purge_after_s=4)
    worker = start(tmp_path, policy)
    request_id = submit("customer:3")
    wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.HIDDEN], 60, "HIDDEN")
    worker.join()
    worker = WorkerThread(load_spec(tmp_path / "operational-db.toml"), policy).start()
    try:
        wait_for(lambda: AckStatus.PURGED in statuses(proof_reader, request_id), 60, "PURGED after restart")
        assert rows(tmp_path, "customer__hidden", "customer_id = 3") == 0
    finally:
        worker.join()


def test_cancel_within_the_grace_period_restores_hidden_data(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="hide", purge_after_s=3600)
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:4", grace_s=600)
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.HIDDEN], 60, "HIDDEN")
        plan = cancel_request(KafkaSettings(), policy, request_id, "test")
        assert plan.restorable == ["operational-db"]
        assert plan.gone == []
        wait_for(lambda: AckStatus.CANCELLED in statuses(proof_reader, request_id), 60, "CANCELLED")
        assert rows(tmp_path, "customer", "customer_id = 4") == 1
        cancelled = view(policy, request_id)
        assert cancelled.cancelled and cancelled.complete
        with pytest.raises(InvalidRequestError, match="already cancelled"):
            cancel_request(KafkaSettings(), policy, request_id, "test")
    finally:
        worker.join()


def test_cancel_after_the_purge_is_refused_naming_the_store(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="hide", purge_after_s=1)
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:5", grace_s=600)
        wait_for(lambda: AckStatus.PURGED in statuses(proof_reader, request_id), 60, "PURGED")
        with pytest.raises(InvalidRequestError, match="already purged in operational-db"):
            cancel_request(KafkaSettings(), policy, request_id, "test")
    finally:
        worker.join()


def test_cancel_after_the_grace_period_is_refused(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="hide", purge_after_s=3600)
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:1", grace_s=0)
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.HIDDEN], 60, "HIDDEN")
        with pytest.raises(InvalidRequestError, match="grace period .* ended"):
            cancel_request(KafkaSettings(), policy, request_id, "test")
    finally:
        worker.join()


def test_held_subject_is_retained_until_the_hold_is_released(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="delete")
    kafka = KafkaSettings()
    place_hold(kafka, "customer:2", Hold(legal_basis="litigation hold 2026-17", placed_by="legal"))
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:2")
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.RETAINED], 60, "RETAINED")
        [ack] = [a for a in proof_reader.acks if a.request_id == request_id]
        assert ack.legal_basis == "litigation hold 2026-17"
        assert rows(tmp_path, "customer", "customer_id = 2") == 1
        release_hold(kafka, "customer:2")
        wait_for(lambda: AckStatus.DELETED in statuses(proof_reader, request_id), 60, "DELETED after release")
        assert rows(tmp_path, "customer", "customer_id = 2") == 0
    finally:
        worker.join()


def test_anonymize_keeps_rows_without_the_fields(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="anonymize", fields=["name"], legal_basis="aggregate statistics")
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:3")
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.ANONYMIZED], 60, "ANONYMIZED")
        assert rows(tmp_path, "customer", "customer_id = 3 AND name IS NULL") == 1
        assert rows(tmp_path, "customer", "customer_id = 4 AND name IS NOT NULL") == 1
        [ack] = [a for a in proof_reader.acks if a.request_id == request_id]
        assert (ack.legal_basis, ack.remaining) == ("aggregate statistics", 0)
    finally:
        worker.join()


def test_retention_that_has_ended_deletes_after_acking_retained(tmp_path: Path, proof_reader: ProofReader) -> None:
    policy = inventory(action="retain", legal_basis="tax law", retain_until="2020-01-01")
    worker = start(tmp_path, policy)
    try:
        request_id = submit("customer:5")
        wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.RETAINED, AckStatus.DELETED], 60,
                 "RETAINED then DELETED")
        retained = [a for a in proof_reader.acks if a.request_id == request_id][0]
        assert retained.legal_basis == "tax law"
        assert retained.retained_until is not None
        assert rows(tmp_path, "customer", "customer_id = 5") == 0
    finally:
        worker.join()


def test_reconcile_deletes_restored_rows_and_marks_its_acks(tmp_path: Path, proof_reader: ProofReader) -> None:
    from tombstone.pseudonym import Pseudonymizer
    from tombstone.stores import build_store
    from tombstone.worker.reconcile import Reconciler

    policy = inventory(action="delete")
    worker = start(tmp_path, policy)
    request_id = submit("customer:4")
    wait_for(lambda: statuses(proof_reader, request_id) == [AckStatus.DELETED], 60, "DELETED")
    worker.join()
    seed_customers(tmp_path / "operational.sqlite", range(4, 5))  # the backup brings the row back
    spec = load_spec(tmp_path / "operational-db.toml")
    kafka = KafkaSettings()
    counts = Reconciler(spec, kafka, build_store(spec, kafka), Pseudonymizer.from_settings(),
                        inventory=policy).reconcile(progress=None)
    # The receipt survived this partial restore, so the step reports a replay, but it ran.
    assert (counts.applied, counts.replayed) == (1, 1)
    assert rows(tmp_path, "customer", "customer_id = 4") == 0
    proof_reader.refresh()
    last = [a for a in proof_reader.acks if a.request_id == request_id][-1]
    assert (last.status, last.reconcile, last.remaining) == (AckStatus.DELETED, True, 0)
