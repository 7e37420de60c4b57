"""``DurableProducer`` against a fake confluent_kafka.Producer passed as ``factory``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError

from tombstone.errors import DeliveryError, FatalKafkaError
from tombstone.kafka.producer import DurableProducer

TOPIC = "deletion.proofs"
CONFIG = {"bootstrap.servers": "127.0.0.1:1", "enable.idempotence": True, "acks": "all"}


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Any
    on_delivery: Callable[[KafkaError | None, Any], None]


class FakeMessage:
    def __init__(self, record: Produced, offset: int) -> None:
        self._record = record
        self._offset = offset

    def topic(self) -> str:
        return self._record.topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._record.key

    def value(self) -> bytes | None:
        return self._record.value


@dataclass
class Behaviour:
    """What a fake producer does on ``flush``.

    ``deliver`` records are confirmed first. Then a fatal error fires through ``error_cb``
    (``fatal_error_cb``) or as the next record's delivery report (``fatal_delivery``), and
    ``delivery_error`` is the delivery report of the next record. ``flush`` returns the
    number of records left without a report plus ``extra_undelivered``.
    """

    deliver: int | None = None
    fatal_error_cb: bool = False
    fatal_delivery: bool = False
    delivery_error: KafkaError | None = None
    extra_undelivered: int = 0


class FakeProducer:
    def __init__(self, config: dict[str, Any], behaviour: Behaviour) -> None:
        self.config = config
        self.behaviour = behaviour
        self.produced: list[Produced] = []
        self.queue: list[Produced] = []
        self.flush_calls = 0
        self.purged = False

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                headers: Any = None, on_delivery: Any = None) -> None:
        record = Produced(topic, key, value, headers, on_delivery)
        self.produced.append(record)
        self.queue.append(record)

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def purge(self) -> None:
        self.purged = True

    def flush(self, timeout: float = -1) -> int:
        self.flush_calls += 1
        behaviour = self.behaviour
        count = len(self.queue) if behaviour.deliver is None else behaviour.deliver
        for record in self.queue[:count]:
            record.on_delivery(None, FakeMessage(record, len(self.produced)))
        self.queue = self.queue[count:]
        if behaviour.fatal_error_cb:
            self.config["error_cb"](
                KafkaError(KafkaError._FATAL, "idempotence failed", fatal=True)
            )
        elif behaviour.fatal_delivery and self.queue:
            record = self.queue.pop(0)
            record.on_delivery(
                KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence gap", fatal=True),
                FakeMessage(record, -1),
            )
        elif behaviour.delivery_error is not None and self.queue:
            record = self.queue.pop(0)
            record.on_delivery(behaviour.delivery_error, FakeMessage(record, -1))
        return len(self.queue) + behaviour.extra_undelivered


@dataclass
class Factory:
    """Build fake producers. The n-th build uses ``behaviours[n]``, or else the last one."""

    behaviours: list[Behaviour]
    built: list[FakeProducer] = field(default_factory=list)

    def __call__(self, config: dict[str, Any]) -> FakeProducer:
        index = min(len(self.built), len(self.behaviours) - 1)
        producer = FakeProducer(config, self.behaviours[index])
        self.built.append(producer)
        return producer


def make_producer(*behaviours: Behaviour, max_rebuilds: int = 3) -> tuple[DurableProducer, Factory]:
    factory = Factory(list(behaviours) or [Behaviour()])
    return DurableProducer(dict(CONFIG), factory=factory, max_rebuilds=max_rebuilds), factory


# --- send and send_tombstone ------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b"", bytearray()])
def test_send_rejects_missing_value(value: Any) -> None:
    producer, factory = make_producer()

    with pytest.raises(ValueError, match="send_tombstone"):
        producer.send(TOPIC, b"r-1/search", value)

    assert factory.built[0].produced == []


def test_send_rejects_missing_value_before_confirm() -> None:
    producer, _ = make_producer()

    with pytest.raises(ValueError):
        producer.send(TOPIC, b"r-1/search", None)  # type: ignore[arg-type]

    assert producer.confirm(timeout_s=1.0) == []


def test_send_encodes_str_key() -> None:
    producer, factory = make_producer()

    producer.send(TOPIC, "customer:17/ä", b"value")

    assert factory.built[0].produced[0].key == "customer:17/ä".encode()


def test_send_tombstone_produces_null_value() -> None:
    producer, factory = make_producer()

    producer.send_tombstone("customer.profiles", "customer:17")
    confirmed = producer.confirm(timeout_s=1.0)

    produced = factory.built[0].produced
    assert len(produced) == 1
    assert produced[0].value is None
    assert produced[0].key == b"customer:17"
    assert confirmed[0].confirmed


@pytest.mark.parametrize("key", [b"", ""])
def test_send_tombstone_rejects_empty_key(key: bytes | str) -> None:
    producer, factory = make_producer()

    with pytest.raises(ValueError):
        producer.send_tombstone("customer.profiles", key)

    assert factory.built[0].produced == []


def test_producer_config_gets_error_cb() -> None:
    _, factory = make_producer()

    assert callable(factory.built[0].config["error_cb"])
    assert factory.built[0].config["bootstrap.servers"] == CONFIG["bootstrap.servers"]


# --- confirm ----------------------------------------------------------------------------


def test_confirm_returns_confirmed_records() -> None:
    producer, _ = make_producer()
    first = producer.send(TOPIC, b"r-1/search", b"ack-1")
    second = producer.send(TOPIC, b"r-2/search", b"ack-2")

    confirmed = producer.confirm(timeout_s=1.0)

    assert confirmed == [first, second]
    assert all(record.confirmed for record in confirmed)
    assert first.offset is not None


def test_confirm_starts_afresh() -> None:
    producer, _ = make_producer()
    producer.send(TOPIC, b"r-1/search", b"ack-1")
    producer.confirm(timeout_s=1.0)

    assert producer.confirm(timeout_s=1.0) == []


def test_confirm_raises_when_flush_leaves_records() -> None:
    producer, _ = make_producer(Behaviour(deliver=1))
    producer.send(TOPIC, b"r-1/search", b"ack-1")
    producer.send(TOPIC, b"r-2/search", b"ack-2")

    with pytest.raises(DeliveryError) as caught:
        producer.confirm(timeout_s=0.1)

    assert caught.value.code == "_MSG_TIMED_OUT"
    assert "1 of 2 records" in str(caught.value)


def test_confirm_raises_on_nonzero_flush_count() -> None:
    # Every delivery report arrived, but flush returns 1 queued record. The return value
    # alone must stop the caller from committing.
    producer, _ = make_producer(Behaviour(extra_undelivered=1))
    producer.send(TOPIC, b"r-1/search", b"ack-1")

    with pytest.raises(DeliveryError):
        producer.confirm(timeout_s=0.1)


def test_confirm_raises_on_delivery_error() -> None:
    rejected = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "record too large")
    producer, _ = make_producer(Behaviour(deliver=1, delivery_error=rejected))
    producer.send(TOPIC, b"r-1/search", b"ack-1")
    producer.send(TOPIC, b"r-2/search", b"ack-2")

    with pytest.raises(DeliveryError) as caught:
        producer.confirm(timeout_s=1.0)

    assert caught.value.code == "MSG_SIZE_TOO_LARGE"
    assert TOPIC in str(caught.value)


def test_confirm_delivery_error_is_not_confirmed() -> None:
    rejected = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "record too large")
    producer, _ = make_producer(Behaviour(delivery_error=rejected, deliver=0))
    record = producer.send(TOPIC, b"r-1/search", b"ack-1")

    with pytest.raises(DeliveryError):
        producer.confirm(timeout_s=1.0)

    assert not record.confirmed
    assert record.error is rejected


def test_confirm_rebuilds_after_fatal_error_cb() -> None:
    producer, factory = make_producer(Behaviour(deliver=1, fatal_error_cb=True), Behaviour())
    records = [producer.send(TOPIC, f"r-{i}/search".encode(), f"ack-{i}".encode()) for i in range(3)]

    confirmed = producer.confirm(timeout_s=1.0)

    assert len(factory.built) == 2
    assert [p.value for p in factory.built[1].produced] == [b"ack-1", b"ack-2"]
    assert confirmed == records
    assert all(record.confirmed for record in confirmed)


def test_confirm_rebuild_purges_failed_producer() -> None:
    producer, factory = make_producer(Behaviour(deliver=0, fatal_error_cb=True), Behaviour())
    producer.send(TOPIC, b"r-1/search", b"ack-1")

    producer.confirm(timeout_s=1.0)

    assert factory.built[0].purged


def test_confirm_rebuilds_after_fatal_delivery_error() -> None:
    producer, factory = make_producer(Behaviour(deliver=1, fatal_delivery=True), Behaviour())
    records = [producer.send(TOPIC, f"r-{i}/search".encode(), f"ack-{i}".encode()) for i in range(3)]

    confirmed = producer.confirm(timeout_s=1.0)

    assert len(factory.built) == 2
    assert [p.value for p in factory.built[1].produced] == [b"ack-1", b"ack-2"]
    assert confirmed == records
    assert all(record.confirmed for record in confirmed)


def test_confirm_resends_headers_and_tombstones() -> None:
    producer, factory = make_producer(Behaviour(deliver=0, fatal_error_cb=True), Behaviour())
    producer.send(TOPIC, b"r-1/search", b"ack-1", headers=[("trace", b"t-1")])
    producer.send_tombstone("customer.profiles", b"customer:17")

    producer.confirm(timeout_s=1.0)

    resent = factory.built[1].produced
    assert resent[0].headers == [("trace", b"t-1")]
    assert resent[1].value is None
    assert resent[1].key == b"customer:17"


def test_confirm_gives_up_after_max_rebuilds() -> None:
    producer, factory = make_producer(Behaviour(deliver=0, fatal_error_cb=True), max_rebuilds=2)
    producer.send(TOPIC, b"r-1/search", b"ack-1")

    with pytest.raises(FatalKafkaError) as caught:
        producer.confirm(timeout_s=1.0)

    assert len(factory.built) == 3
    assert caught.value.code == "_FATAL"


def test_confirm_succeeds_at_max_rebuilds() -> None:
    failing = Behaviour(deliver=0, fatal_error_cb=True)
    producer, factory = make_producer(failing, failing, Behaviour(), max_rebuilds=2)
    record = producer.send(TOPIC, b"r-1/search", b"ack-1")

    assert producer.confirm(timeout_s=1.0) == [record]
    assert len(factory.built) == 3


def test_error_cb_nonfatal_does_not_rebuild() -> None:
    producer, factory = make_producer()
    record = producer.send(TOPIC, b"r-1/search", b"ack-1")

    factory.built[0].config["error_cb"](KafkaError(KafkaError._TRANSPORT, "connection refused"))
    confirmed = producer.confirm(timeout_s=1.0)

    assert confirmed == [record]
    assert len(factory.built) == 1


def test_close_returns_flush_count() -> None:
    producer, _ = make_producer(Behaviour(deliver=0))
    producer.send(TOPIC, b"r-1/search", b"ack-1")

    assert producer.close(timeout_s=0.1) == 1
