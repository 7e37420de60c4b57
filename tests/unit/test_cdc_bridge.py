"""The bridge's batch handling with a fake consumer and producer: what becomes a request."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from tests.unit import cdc_events as ev
from tombstone.cdc.bridge import CdcBridge
from tombstone.cdc.config import BridgeConfig
from tombstone.cdc.events import NEW_KEY_HEADER, OLD_KEY_HEADER
from tombstone.errors import DeliveryError
from tombstone.serde import DeadLetterSerde, RequestSerde
from tombstone.settings import KafkaSettings

REQUESTS = "deletion.requests"
DEAD = "deletion.dead-letters"


class Message:
    def __init__(self, offset: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None, partition: int = 0,
                 timestamp_ms: int = 1_764_000_010_000, topic: str = ev.TOPIC) -> None:
        self._fields = (topic, partition, offset, key, value, headers, timestamp_ms)

    def topic(self) -> str: return self._fields[0]
    def partition(self) -> int: return self._fields[1]
    def offset(self) -> int: return self._fields[2]
    def key(self) -> bytes | None: return self._fields[3]
    def value(self) -> bytes | None: return self._fields[4]
    def headers(self) -> list[tuple[str, bytes]] | None: return self._fields[5]
    def timestamp(self) -> tuple[int, int]: return (1, self._fields[6])
    def error(self) -> None: return None


class Consumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []
        self.paused = False

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def assignment(self) -> list[TopicPartition]: return []
    def committed(self, partitions: Any, timeout: float) -> list[TopicPartition]: return []
    def pause(self, partitions: Any) -> None: self.paused = True
    def resume(self, partitions: Any) -> None: self.paused = False
    def poll(self, timeout: float) -> None: return None
    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]: return (0, 0)


class Producer:
    """Records sends; ``fail`` confirms fail that many times first."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.confirmed: list[tuple[str, bytes | None, bytes]] = []
        self._queued: list[tuple[str, bytes | None, bytes]] = []
        self.fail = fail

    def send(self, topic: str, key: Any, value: bytes, headers: Any = None) -> None:
        record = (topic, key.encode() if isinstance(key, str) else key, value)
        self.sent.append(record)
        self._queued.append(record)

    def confirm(self, timeout_s: float) -> None:
        if self.fail:
            self.fail -= 1
            self._queued.clear()
            raise DeliveryError("broker unreachable (test)")
        self.confirmed.extend(self._queued)
        self._queued.clear()


class NoLookback:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = False

    def delete_before(self, topic: str, partition: int, start: int, end: int, key: bytes) -> bool:
        self.calls.append((start, end))
        return self.answer

    def close(self) -> None: pass


def make_bridge(producer: Producer | None = None, **table: Any) -> tuple[CdcBridge, Consumer, Producer]:
    config = BridgeConfig.model_validate({
        "bridge": {"name": "chinook", "requested_by": "cdc:chinook",
                   "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.02, "jitter_s": 0}},
        "tables": [{"topic": ev.TOPIC, "subject_type": "customer", "data_class": "customer_profile",
                    "key_columns": ["customer_id"], **table}],
    })
    bridge = CdcBridge(config, KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    bridge.consumer = Consumer()
    bridge._producer = producer or Producer()
    bridge._lookback = NoLookback()
    return bridge, bridge.consumer, bridge._producer


def requests_of(producer: Producer) -> list[Any]:
    serde = RequestSerde()
    return [serde.deserialize(value) for topic, _, value in producer.confirmed if topic == REQUESTS]


def dead_letters_of(producer: Producer) -> list[Any]:
    serde = DeadLetterSerde()
    return [serde.deserialize(value) for topic, _, value in producer.confirmed if topic == DEAD]


def test_delete_then_its_tombstone_make_exactly_one_request() -> None:
    bridge, consumer, producer = make_bridge()
    bridge.process([Message(10, ev.key(17), ev.delete(17)), Message(11, ev.key(17), None)])
    requests = requests_of(producer)
    assert [r.subject_key for r in requests] == ["customer:17"]
    assert consumer.commits == [[(ev.TOPIC, 0, 12)]]
    assert bridge._lookback.calls == []


def test_tombstone_in_the_next_batch_is_still_matched_to_its_delete() -> None:
    bridge, _, producer = make_bridge()
    bridge.process([Message(10, ev.key(17), ev.delete(17))])
    bridge.process([Message(11, ev.key(17), None)])
    assert len(requests_of(producer)) == 1
    assert bridge._lookback.calls == []  # the bridge read offset 10 itself


def test_tombstone_without_its_delete_still_makes_one_request() -> None:
    # The connector crashed between the delete and the tombstone, and the delete event
    # was never written; the tombstone is the first record the bridge reads.
    bridge, _, producer = make_bridge()
    bridge.process([Message(40, ev.key(23), None, timestamp_ms=1_764_000_020_000)])
    [request] = requests_of(producer)
    assert request.subject_key == "customer:23"
    assert int(request.cutoff_at.timestamp() * 1000) == 1_764_000_020_000
    assert bridge._lookback.calls == [(0, 40)]


def test_tombstone_after_restart_is_skipped_when_lookback_finds_its_delete() -> None:
    bridge, _, producer = make_bridge()
    bridge._lookback.answer = True
    bridge.process([Message(100, ev.key(23), None)])
    assert requests_of(producer) == []
    assert bridge._lookback.calls == [(36, 100)]


def test_flattened_rewrite_deletes_are_requests() -> None:
    bridge, _, producer = make_bridge()
    bridge.process([
        Message(1, ev.key(5), ev.flattened(5, deleted=False)),
        Message(2, ev.key(6), ev.flattened(6, deleted=True, __source_ts_ms=ev.SOURCE_TS_MS, __lsn=ev.LSN)),
    ])
    assert [r.subject_key for r in requests_of(producer)] == ["customer:6"]


def test_primary_key_change_is_not_an_erasure() -> None:
    bridge, consumer, producer = make_bridge()
    bridge.process([
        Message(1, ev.key(17), ev.delete(17), headers=[(NEW_KEY_HEADER, ev.key(1017))]),
        Message(2, ev.key(17), None),
        Message(3, ev.key(1017), ev.envelope("c", None, ev.row(1017)), headers=[(OLD_KEY_HEADER, ev.key(17))]),
    ])
    assert requests_of(producer) == []
    assert consumer.commits == [[(ev.TOPIC, 0, 4)]]


def test_delete_without_identity_goes_to_the_dead_letter_topic_not_a_none_key() -> None:
    bridge, consumer, producer = make_bridge()
    bridge.process([Message(7, None, ev.envelope("d", None, None)), Message(8, None, None)])
    assert requests_of(producer) == []
    # The delete is dead-lettered; its keyless tombstone names nothing and is skipped.
    reasons = [d.reason for d in dead_letters_of(producer)]
    assert reasons == ["cdc_missing_identity"]
    assert all(b"None" not in key for _, key, _ in producer.sent if key is not None)
    assert consumer.commits == [[(ev.TOPIC, 0, 9)]]


def test_garbage_is_dead_lettered_and_the_batch_goes_on() -> None:
    bridge, _, producer = make_bridge()
    bridge.process([Message(1, ev.key(1), b"\x00garbage"), Message(2, ev.key(2), ev.delete(2))])
    assert [d.reason for d in dead_letters_of(producer)] == ["cdc_undecodable"]
    assert [r.subject_key for r in requests_of(producer)] == ["customer:2"]


def test_offsets_are_committed_only_after_requests_are_confirmed() -> None:
    producer = Producer(fail=2)
    bridge, consumer, _ = make_bridge(producer)
    commits_during_failures: list[int] = []
    original = producer.confirm

    def confirm(timeout_s: float) -> None:
        commits_during_failures.append(len(consumer.commits))
        original(timeout_s)

    producer.confirm = confirm  # type: ignore[method-assign]
    bridge.process([Message(10, ev.key(17), ev.delete(17))])
    assert commits_during_failures == [0, 0, 0]
    assert len(requests_of(producer)) == 1
    assert consumer.commits == [[(ev.TOPIC, 0, 11)]]


def test_same_change_delivered_twice_in_a_batch_is_produced_once() -> None:
    bridge, _, producer = make_bridge()
    bridge.process([Message(1, ev.key(9), ev.delete(9)), Message(2, ev.key(9), ev.delete(9))])
    assert len(requests_of(producer)) == 1


@pytest.mark.parametrize("schemas", [False, True])
def test_schema_envelope_on_and_off(schemas: bool) -> None:
    bridge, _, producer = make_bridge()
    bridge.process([Message(1, ev.key(3, schemas), ev.delete(3, schemas=schemas))])
    assert [r.subject_key for r in requests_of(producer)] == ["customer:3"]


def test_dead_letter_log_does_not_carry_the_subject_id(caplog: pytest.LogCaptureFixture) -> None:
    bridge, _, _ = make_bridge()
    bridge.process([Message(1, ev.key("secret\x07id"), ev.delete("secret\x07id"))])
    assert "secret" not in caplog.text


def test_a_record_that_breaks_the_bridge_is_dead_lettered_and_the_batch_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tombstone.cdc.bridge as bridge_module

    real = bridge_module.build_request

    def explode_on_17(settings: Any, table: Any, event: Any, source: Any) -> Any:
        if event.key == {"customer_id": 17}:
            raise OverflowError("unforeseen")
        return real(settings, table, event, source)

    monkeypatch.setattr(bridge_module, "build_request", explode_on_17)
    bridge, consumer, producer = make_bridge()
    bridge.process([Message(1, ev.key(17), ev.delete(17)), Message(2, ev.key(18), ev.delete(18))])
    assert [d.reason for d in dead_letters_of(producer)] == ["cdc_unprocessable"]
    assert [r.subject_key for r in requests_of(producer)] == ["customer:18"]
    assert consumer.commits == [[(ev.TOPIC, 0, 3)]]
