"""A poison record that the broker accepted must always fit in the dead-letter topic.

With the broker's default record limit (1,048,588 bytes), the requests topic accepts a
record of about 1.03 MB. librdkafka's producer rejects records above its own default
``message.max.bytes`` of 1,000,000 bytes, so a dead letter that copies a large key or
large headers whole can never be written, and the worker's batch retries forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.integration.helpers import ProofReader, WorkerThread, seed_customers, wait_for, write_sqlite_spec
from tombstone.requester import new_request
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("key_bytes", "headers"),
    [
        (600_000, None),
        (10, [(f"h{i}", b"\x00" * 100_000) for i in range(10)]),
    ],
    ids=["large-key", "large-headers"],
)
def test_near_limit_poison_is_dead_lettered(
    key_bytes: int, headers: list[tuple[str, bytes]] | None, pipeline_topics: dict[str, str],
    proof_reader: ProofReader, kafka_bootstrap: str, tmp_path: Path,
    start_worker: Callable[[Path], WorkerThread],
) -> None:
    kafka = KafkaSettings()
    spec = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 2))
    valid = new_request("customer:1", "customer_profile", "user_request", "test")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000,
                         "partitioner": "murmur2_random", "enable.idempotence": True})
    partitions: list[int] = []
    producer.produce(kafka.requests_topic, key=valid.kafka_key.encode(), value=RequestSerde().serialize(valid),
                     on_delivery=lambda error, message: partitions.append(message.partition()))
    assert producer.flush(30) == 0
    # The poison follows the valid request on its partition, so both arrive in one batch.
    value_bytes = 430_000 if headers is None else 100
    producer.produce(kafka.requests_topic, key=b"k" * key_bytes, value=b"\x00" * value_bytes,
                     headers=headers, partition=partitions[0])
    assert producer.flush(30) == 0, "the broker rejected the poison record; it must stay under its limit"

    worker = start_worker(spec)
    wait_for(lambda: proof_reader.refresh() or (proof_reader.acks and proof_reader.dead_letters),
             timeout_s=60, what="the poison's dead letter and the valid request's ack")
    worker.join()

    assert [(d.source_partition, d.source_offset) for d in proof_reader.dead_letters] == [(partitions[0], 1)]
    assert [a.request_id for a in proof_reader.acks] == [valid.request_id]
