"""``GroupMember._consume`` (worker and CDC bridge): a batch contains the records already fetched, and never waits to fill up."""

from __future__ import annotations

from pathlib import Path

from tombstone.pseudonym import Pseudonymizer
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec, NullStoreConfig
from tombstone.stores.null import NullStore
from tombstone.worker.loop import Worker


class FakeConsumer:
    """Hands out queued records; records each call's timeout."""

    def __init__(self, queued: list[str]) -> None:
        self.queued = list(queued)
        self.calls: list[tuple[str, int | None, float]] = []

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", None, timeout))
        return self.queued.pop(0) if self.queued else None

    def consume(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append(("consume", num_messages, timeout))
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken


def make_worker(tmp_path: Path, batch_size: int, queued: list[str]) -> tuple[Worker, FakeConsumer]:
    spec = ConsumerSpec(name="null", data_classes=["customer_profile"], batch_size=batch_size,
                        poll_timeout_s=0.7, state_dir=str(tmp_path), store=NullStoreConfig(kind="null"))
    worker = Worker(spec, KafkaSettings(bootstrap_servers="127.0.0.1:9"), NullStore("null", spec.store),
                    Pseudonymizer(b"k" * 32, "k1"))
    consumer = FakeConsumer(queued)
    worker.consumer = consumer
    return worker, consumer


def test_consume_waits_only_for_first_record(tmp_path: Path) -> None:
    worker, consumer = make_worker(tmp_path, 500, ["a", "b", "c"])

    batch = worker._consume(worker.spec.batch_size, worker.spec.poll_timeout_s)

    assert batch == ["a", "b", "c"]
    assert consumer.calls == [("poll", None, 0.7), ("consume", 499, 0)]


def test_consume_stops_at_batch_size(tmp_path: Path) -> None:
    worker, _ = make_worker(tmp_path, 2, ["a", "b", "c"])

    assert worker._consume(worker.spec.batch_size, worker.spec.poll_timeout_s) == ["a", "b"]
    assert worker._consume(worker.spec.batch_size, worker.spec.poll_timeout_s) == ["c"]


def test_consume_empty_after_timeout(tmp_path: Path) -> None:
    worker, consumer = make_worker(tmp_path, 500, [])

    assert worker._consume(worker.spec.batch_size, worker.spec.poll_timeout_s) == []
    assert consumer.calls == [("poll", None, 0.7)]


def test_consume_batch_size_one(tmp_path: Path) -> None:
    worker, consumer = make_worker(tmp_path, 1, ["a", "b"])

    assert worker._consume(worker.spec.batch_size, worker.spec.poll_timeout_s) == ["a"]
    assert consumer.calls == [("poll", None, 0.7)]
