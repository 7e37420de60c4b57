"""A worker that cannot read the legal-holds topic must not delete a held subject's data.

``HoldBook.refresh`` logs "none apply until it can be read" and returns when reading the
holds topic fails with a retriable error, such as the read timing out on a slow broker
(the fault suite sees this under broker restarts, SIGSTOP, blackholes and latency). The
worker then deletes subjects whose hold it has not read. A malformed hold is treated as
a hold ("keeping data is the safe side of a doubt"); an unreadable topic should be too.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import ProofReader, WorkerThread, seed_customers, wait_for, write_sqlite_spec
from tombstone.errors import RetriableKafkaError
from tombstone.inventory import Inventory
from tombstone.kafka.reader import TopicReader
from tombstone.models import AckStatus
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec
from tombstone.worker import holds
from tombstone.worker.holds import Hold, place_hold

pytestmark = pytest.mark.integration

# How long the held subject's row must survive while the holds topic cannot be read.
WATCH_S = 20.0


class UnreadableHolds(TopicReader):
    """A reader of the holds topic whose every read times out, as on an overloaded broker."""

    def read_new(self, timeout_s: float = 30.0) -> Iterator:
        raise RetriableKafkaError(f"Reading {', '.join(self._topics)} did not reach the end within "
                                  f"{timeout_s:.0f} s.")
        yield  # a generator, like TopicReader.read_new


def test_unreadable_holds_keep_held_data(tmp_path: Path, proof_reader: ProofReader,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = KafkaSettings()
    place_hold(kafka, "customer:2", Hold(legal_basis="litigation hold 2026-17", placed_by="legal"))
    monkeypatch.setattr(holds, "TopicReader", UnreadableHolds)
    policy = Inventory.model_validate({"data_classes": {"customer_profile": {
        "subject_types": ["customer"], "stores": [{"store": "operational-db", "action": "delete"}]}}})
    spec = write_sqlite_spec(tmp_path)
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 4))
    worker = WorkerThread(load_spec(spec), policy).start()
    try:
        wait_for(lambda: worker.worker.health.ready, what="the worker to start")
        request = new_request("customer:2", "customer_profile", "user_request", "test")
        requester = Requester(kafka)
        try:
            requester.submit([request])
        finally:
            requester.close()

        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            proof_reader.refresh()
            statuses = [a.status for a in proof_reader.acks if a.request_id == request.request_id]
            assert AckStatus.DELETED not in statuses, (
                "the worker acked DELETED for a subject under a legal hold that it could not read")
            assert _rows(database, 2) == 1, "the held subject's row was deleted while the holds were unreadable"
            time.sleep(0.5)
    finally:
        worker.join()


def _rows(database: Path, customer_id: int) -> int:
    db = sqlite3.connect(database)
    try:
        return db.execute("SELECT count(*) FROM customer WHERE customer_id = ?", (customer_id,)).fetchone()[0]
    finally:
        db.close()
