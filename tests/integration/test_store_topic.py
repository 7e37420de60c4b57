"""TopicStore against a real broker: null-value tombstones on a compacted topic."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tombstone.kafka.reader import TopicReader
from tombstone.models import AckStatus, DeletionRequest
from tombstone.settings import KafkaSettings
from tombstone.spec import TopicStoreConfig
from tombstone.stores.topic import TopicStore

pytestmark = pytest.mark.integration

CUTOFF_MS = 1_700_000_000_000


def at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def make_request(subject_id: str, data_class: str = "customer_profile", cutoff: int = CUTOFF_MS) -> DeletionRequest:
    return DeletionRequest(
        subject_type="customer", subject_id=subject_id, data_class=data_class,
        reason="user_request", requested_by="test", cutoff_at=at_ms(cutoff),
    )


@pytest.fixture
def kafka(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    return KafkaSettings()


@pytest.fixture
def topic(create_topic: Callable[..., str], unique_name: Callable[[str], str]) -> str:
    return create_topic(unique_name("customer.profiles"), partitions=3, config={"cleanup.policy": "compact"})


@pytest.fixture
def store(topic: str, kafka: KafkaSettings, tmp_path: Path) -> Iterator[TopicStore]:
    config = TopicStoreConfig(kind="topic", topic=topic, data_class="customer_profile")
    store = TopicStore("profiles-topic", config, kafka, state_dir=tmp_path / "state")
    store.open()
    yield store
    store.close()


@pytest.fixture
def produce(kafka_bootstrap: str, topic: str) -> Callable[..., None]:
    """Write values with chosen record timestamps, as a Java producer would partition them."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})

    def send(subject_key: str, timestamp_ms: int, value: bytes = b'{"name": "Ada"}') -> None:
        producer.produce(topic, key=subject_key.encode(), value=value, timestamp=timestamp_ms)
        assert producer.flush(30) == 0

    return send


def read_topic(kafka: KafkaSettings, topic: str) -> list[tuple[bytes, bytes | None, int]]:
    reader = TopicReader(kafka, [topic])
    try:
        return [(m.key(), m.value(), m.partition()) for m in reader.read_new(30)]
    finally:
        reader.close()


def tombstones(kafka: KafkaSettings, topic: str, subject_key: str) -> list[int]:
    """Partitions that carry a null-value record for the key."""
    return [p for key, value, p in read_topic(kafka, topic) if key == subject_key.encode() and value is None]


def test_apply_writes_null_value_tombstone(store: TopicStore, produce, kafka: KafkaSettings, topic: str) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    records = read_topic(kafka, topic)
    value_partition = next(p for key, value, p in records if value is not None)
    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 1
    assert outcome.replayed is False
    assert tombstones(kafka, topic, "customer:17") == [value_partition]


def test_apply_deletes_value_at_cutoff(store: TopicStore, produce, kafka: KafkaSettings, topic: str) -> None:
    produce("customer:17", CUTOFF_MS)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert len(tombstones(kafka, topic, "customer:17")) == 1


def test_apply_keeps_value_after_cutoff(store: TopicStore, produce, kafka: KafkaSettings, topic: str) -> None:
    produce("customer:17", CUTOFF_MS + 1)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert tombstones(kafka, topic, "customer:17") == []
    assert store.scan_subject("customer:17") == 1


def test_apply_keeps_recreated_subject(store: TopicStore, produce, kafka: KafkaSettings, topic: str) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    produce("customer:17", CUTOFF_MS + 1000, b'{"name": "Ada, again"}')
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert tombstones(kafka, topic, "customer:17") == []


def test_apply_replay_returns_receipt(store: TopicStore, produce) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    request = make_request("17")
    first = store.apply([request])[request.request_id]

    second = store.apply([request])[request.request_id]

    assert second.replayed is True
    assert second.status is first.status is AckStatus.DELETED
    assert second.items_affected == first.items_affected == 1


def test_apply_replay_writes_no_second_tombstone(store: TopicStore, produce, kafka: KafkaSettings,
                                                 topic: str) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    request = make_request("17")
    store.apply([request])

    store.apply([request])

    assert len(tombstones(kafka, topic, "customer:17")) == 1


def test_apply_new_request_after_delete_is_absent(store: TopicStore, produce) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    store.apply([make_request("17")])
    again = make_request("17")

    outcome = store.apply([again])[again.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.items_affected == 0
    assert outcome.replayed is False


def test_count_remaining_zero_after_apply(store: TopicStore, produce) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    request = make_request("17")
    before = store.count_remaining([request])

    store.apply([request])

    assert before == {request.request_id: 1}
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_deletes_only_request_data_class(store: TopicStore, produce, kafka: KafkaSettings,
                                               topic: str) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    other_class = make_request("17", data_class="customer_invoices")

    outcome = store.apply([other_class])[other_class.request_id]

    profile = make_request("17")
    assert outcome.status is AckStatus.ABSENT
    assert tombstones(kafka, topic, "customer:17") == []
    assert store.count_remaining([profile]) == {profile.request_id: 1}


def test_apply_batch_of_many_requests(store: TopicStore, produce, kafka: KafkaSettings, topic: str) -> None:
    for customer in range(60):
        produce(f"customer:{customer}", CUTOFF_MS - 1000)
    requests = [make_request(str(customer)) for customer in range(60)]

    outcomes = store.apply(requests)

    nulls = [key for key, value, _ in read_topic(kafka, topic) if value is None]
    assert len(outcomes) == 60
    assert {o.status for o in outcomes.values()} == {AckStatus.DELETED}
    assert set(store.count_remaining(requests).values()) == {0}
    assert len(nulls) == 60


def test_apply_batch_same_subject_twice(store: TopicStore, produce, kafka: KafkaSettings, topic: str) -> None:
    produce("customer:17", CUTOFF_MS - 1000)
    first, second = make_request("17"), make_request("17")

    outcomes = store.apply([first, second])

    assert outcomes[first.request_id].status is AckStatus.DELETED
    assert outcomes[second.request_id].status is AckStatus.ABSENT
    assert len(tombstones(kafka, topic, "customer:17")) == 1


def test_scan_subject_counts_present_value(store: TopicStore, produce) -> None:
    produce("customer:17", CUTOFF_MS + 1000)
    produce("customer:18", CUTOFF_MS - 1000)

    assert store.scan_subject("customer:17") == 1
    assert store.scan_subject("customer:19") == 0


def test_publish_then_apply_at_now(store: TopicStore) -> None:
    store.publish([("customer:17", b'{"name": "Ada"}'), ("customer:18", b'{"name": "Bo"}')])
    request = DeletionRequest(subject_type="customer", subject_id="17", data_class="customer_profile",
                              reason="user_request", requested_by="test")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert store.scan_subject("customer:17") == 0
    assert store.scan_subject("customer:18") == 1


def test_count_remaining_reports_value_on_other_partition(store: TopicStore, kafka_bootstrap: str,
                                                          topic: str) -> None:
    # Values written to every partition, as by a producer with another partitioner: the one
    # tombstone reaches a single partition, and the other two values must still be counted.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition in range(3):
        producer.produce(topic, key=b"customer:17", value=b"{}", partition=partition, timestamp=CUTOFF_MS - 1000)
    assert producer.flush(30) == 0
    request = make_request("17")

    store.apply([request])

    assert store.count_remaining([request]) == {request.request_id: 2}
