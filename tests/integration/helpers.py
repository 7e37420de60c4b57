"""Helpers for tests that run workers against the real broker."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path


from confluent_kafka import Consumer, TopicPartition

from tombstone.inventory import Inventory
from tombstone.kafka.reader import TopicReader
from tombstone.models import DeadLetter, DeletionAck
from tombstone.pseudonym import Pseudonymizer
from tombstone.serde import AckSerde, DeadLetterSerde
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec
from tombstone.stores import build_store
from tombstone.worker.loop import Worker


def write_sqlite_spec(directory: Path, name: str = "operational-db", batch_size: int = 100) -> Path:
    """A SQLite consumer spec with one customer table, under ``directory``."""
    spec = directory / f"{name}.toml"
    spec.write_text(f"""
name = "{name}"
data_classes = ["customer_profile"]
group_id = "test.{name}.{time.time_ns()}"
batch_size = {batch_size}
poll_timeout_s = 0.2
state_dir = "{directory / 'state'}"

[retry]
initial_backoff_s = 0.1
max_backoff_s = 1.0
jitter_s = 0.1

[store]
kind = "sqlite"
path = "{directory / 'operational.sqlite'}"

[[store.tables]]
table = "customer"
data_class = "customer_profile"
subject_type = "customer"
subject_column = "customer_id"
subject_id_type = "integer"
""", encoding="utf-8")
    return spec


def seed_customers(database: Path, ids: range, updated_at_ms: int = 1) -> None:
    db = sqlite3.connect(database)
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS customer (customer_id INTEGER, name TEXT, updated_at_ms INTEGER)")
        db.executemany("INSERT INTO customer VALUES (?, ?, ?)", [(i, f"name {i}", updated_at_ms) for i in ids])
    db.close()


def count_customers(database: Path, ids: range | None = None) -> int:
    db = sqlite3.connect(database)
    try:
        if ids is None:
            return db.execute("SELECT count(*) FROM customer").fetchone()[0]
        marks = ",".join("?" * len(ids))
        return db.execute(f"SELECT count(*) FROM customer WHERE customer_id IN ({marks})", list(ids)).fetchone()[0]
    finally:
        db.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"Timed out after {timeout_s:.0f} s waiting for {what}")


class ProofReader:
    """Reads acks and dead letters of the test's topics as they arrive."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.acks: list[DeletionAck] = []
        self.dead_letters: list[DeadLetter] = []
        self._proofs = TopicReader(kafka, [kafka.proofs_topic])
        self._dlq = TopicReader(kafka, [kafka.dead_letter_topic])
        self._ack_serde, self._dlq_serde = AckSerde(), DeadLetterSerde()

    def refresh(self) -> None:
        self.acks.extend(self._ack_serde.deserialize(m.value()) for m in self._proofs.read_new())
        self.dead_letters.extend(self._dlq_serde.deserialize(m.value()) for m in self._dlq.read_new())

    def close(self) -> None:
        self._proofs.close()
        self._dlq.close()


class WorkerThread:
    """A worker running in a thread of the test process."""

    def __init__(self, spec: ConsumerSpec, inventory: Inventory | None = None) -> None:
        kafka = KafkaSettings()
        self.stop = threading.Event()
        self.worker = Worker(spec, kafka, build_store(spec, kafka), Pseudonymizer.from_settings(), stop=self.stop,
                             inventory=inventory)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def join(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker thread did not stop"
        if self.error is not None:
            raise self.error


def committed_offsets(group: str, kafka: KafkaSettings) -> dict[int, int]:
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    try:
        metadata = consumer.list_topics(kafka.requests_topic, timeout=10)
        partitions = [TopicPartition(kafka.requests_topic, p) for p in metadata.topics[kafka.requests_topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    consumer = Consumer({**kafka.client_config(), "group.id": "end-offsets"})
    try:
        metadata = consumer.list_topics(kafka.requests_topic, timeout=10)
        return {p: consumer.get_watermark_offsets(TopicPartition(kafka.requests_topic, p), timeout=10)[1]
                for p in metadata.topics[kafka.requests_topic].partitions}
    finally:
        consumer.close()


def caught_up(group: str, kafka: KafkaSettings) -> bool:
    """True when the group committed the end offset of every partition that has records."""
    committed = committed_offsets(group, kafka)
    return all(committed.get(p) == end for p, end in end_offsets(kafka).items() if end > 0)

