"""Bad input on the requests topic must not break "no deletion is lost and no proof is false".

Each test states one promise as assertions, found by attacking a worker on a real broker.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from tests.integration.helpers import (
    ProofReader,
    WorkerThread,
    count_customers,
    seed_customers,
    wait_for,
    write_sqlite_spec,
)
from tombstone.kafka.admin import ensure_topics
from tombstone.kafka.admin import pipeline_topics as topic_specs
from tombstone.models import AckStatus
from tombstone.pseudonym import Pseudonymizer
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _submit(requests: list) -> None:
    requester = Requester(KafkaSettings())
    try:
        requester.submit(requests)
    finally:
        requester.close()


def _rows_of(database: Path, customer_id: int) -> int:
    db = sqlite3.connect(database)
    try:
        return db.execute("SELECT count(*) FROM customer WHERE customer_id = ?", (customer_id,)).fetchone()[0]
    finally:
        db.close()


def test_shared_request_id_gives_no_false_proof(
    kafka_env: dict[str, str], tmp_path: Path, start_worker: Callable[[Path], WorkerThread]
) -> None:
    # One partition, and both records written before the worker starts, so they share a batch.
    kafka = KafkaSettings()
    ensure_topics(AdminClient(kafka.client_config()), topic_specs(kafka, partitions=1))
    reader = ProofReader(kafka)
    spec = write_sqlite_spec(tmp_path)
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 3))
    first = new_request("customer:1", "customer_profile", "user_request", "test")
    second = new_request("customer:2", "customer_profile", "user_request", "test")
    second = second.model_copy(update={"request_id": first.request_id})
    _submit([first, second])

    worker = start_worker(spec)
    try:
        wait_for(lambda: reader.refresh() or len(reader.acks) + len(reader.dead_letters) >= 2,
                 what="an ack or a dead letter for both records")
    finally:
        reader.close()
    worker.join()

    pseudonyms = Pseudonymizer.from_settings()
    for customer_id in (1, 2):
        pseudonym = pseudonyms.pseudonym(f"customer:{customer_id}")
        proofs = [a for a in reader.acks if a.subject_pseudonym == pseudonym and a.remaining == 0
                  and a.status in (AckStatus.DELETED, AckStatus.ABSENT)]
        rows_left = _rows_of(database, customer_id)
        assert not (proofs and rows_left), (
            f"customer:{customer_id} has a {proofs[0].status.value} ack with remaining 0 "
            f"but {rows_left} rows are still in the store")


def test_future_cutoff_spares_data_written_later(
    pipeline_topics: dict[str, str], proof_reader: ProofReader, tmp_path: Path,
    start_worker: Callable[[Path], WorkerThread],
) -> None:
    spec = write_sqlite_spec(tmp_path)
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 2))
    # requested_at moves with cutoff_at, so the model's "cut-off not after the request" check passes.
    next_year = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
    request = new_request("customer:1", "customer_profile", "user_request", "test")
    request = request.model_copy(update={"requested_at": next_year, "cutoff_at": next_year})
    _submit([request])

    # The subject signs up again after the request was written to Kafka.
    time.sleep(0.01)
    written_later_ms = int(time.time() * 1000)
    seed_customers(database, range(1, 2), updated_at_ms=written_later_ms)

    worker = start_worker(spec)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) + len(proof_reader.dead_letters) >= 1,
             what="an ack or a dead letter for the request")
    worker.join()

    db = sqlite3.connect(database)
    try:
        later_rows = db.execute("SELECT count(*) FROM customer WHERE customer_id = 1 AND updated_at_ms = ?",
                                (written_later_ms,)).fetchone()[0]
    finally:
        db.close()
    assert later_rows == 1, (
        "a request whose cut-off lies a year after its Kafka record deleted a row written after "
        "the request was made")


def test_oversized_poison_does_not_stop_worker(
    pipeline_topics: dict[str, str], proof_reader: ProofReader, kafka_bootstrap: str, tmp_path: Path,
    start_worker: Callable[[Path], WorkerThread],
) -> None:
    kafka = KafkaSettings()
    admin = AdminClient(kafka.client_config())
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, kafka.requests_topic,
        incremental_configs=[ConfigEntry("max.message.bytes", "5000000",
                                         incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)

    spec = write_sqlite_spec(tmp_path)
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 2))
    valid = new_request("customer:1", "customer_profile", "user_request", "test")
    # The same key as the valid request, so both land on one partition with the poison first.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000_000,
                         "partitioner": "murmur2_random", "enable.idempotence": True})
    producer.produce(kafka.requests_topic, key=valid.kafka_key.encode(), value=b"\xc3\x01" + b"\x00" * 2_000_000)
    assert producer.flush(30) == 0
    _submit([valid])

    worker = start_worker(spec)
    wait_for(lambda: not worker.thread.is_alive() or proof_reader.refresh() or len(proof_reader.acks) >= 1,
             timeout_s=90, what="an ack for the valid request or the worker to stop")
    assert worker.error is None, f"the worker stopped on a 2 MB poison record: {worker.error}"
    assert [a.request_id for a in proof_reader.acks] == [valid.request_id]
    assert count_customers(database) == 0
    assert len(proof_reader.dead_letters) == 1
