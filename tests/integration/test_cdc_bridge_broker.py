"""The CDC bridge on the real broker, fed with hand-made Debezium events.

Covers what needs a broker: committing only after confirmed delivery, and a restart between
a delete event and its tombstone, which the bridge resolves by reading back the partition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from tests.integration.helpers import wait_for
from tests.unit import cdc_events as ev
from tombstone.cdc.bridge import CdcBridge
from tombstone.cdc.config import BridgeConfig
from tombstone.kafka.reader import TopicReader
from tombstone.serde import DeadLetterSerde, RequestSerde
from tombstone.settings import KafkaSettings


class BridgeThread:
    def __init__(self, config: BridgeConfig) -> None:
        self.stop = threading.Event()
        self.bridge = CdcBridge(config, KafkaSettings(), stop=self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "bridge thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def cdc_topic(pipeline_topics: dict[str, str], create_topic: Callable[..., str],
              unique_name: Callable[[str], str]) -> str:
    # Not compacted: a compacted topic refuses the null-key record of the dead-letter test.
    return create_topic(unique_name("chinook.public.customer"), 1)


@pytest.fixture
def config(cdc_topic: str, unique_name: Callable[[str], str]) -> BridgeConfig:
    return BridgeConfig.model_validate({
        "bridge": {"name": "test", "group_id": unique_name("cdc-group"), "poll_timeout_s": 0.2,
                   "retry": {"initial_backoff_s": 0.1, "max_backoff_s": 0.5, "jitter_s": 0}},
        "tables": [{"topic": cdc_topic, "subject_type": "customer", "data_class": "customer_profile",
                    "key_columns": ["customer_id"]}],
    })


@pytest.fixture
def produce(cdc_topic: str) -> Iterator[Callable[..., None]]:
    producer = Producer(KafkaSettings().client_config())

    def send(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        errors: list = []
        producer.produce(cdc_topic, key=key, value=value, headers=headers,
                         on_delivery=lambda error, _message: errors.append(error))
        assert producer.flush(10) == 0
        assert errors == [None]

    yield send


def read_all(topic: str) -> list:
    reader = TopicReader(KafkaSettings(), [topic])
    try:
        return list(reader.read_new())
    finally:
        reader.close()


def requests() -> list:
    serde = RequestSerde()
    return [serde.deserialize(m.value()) for m in read_all(KafkaSettings().requests_topic)]


def committed(config: BridgeConfig) -> int:
    consumer = Consumer({**KafkaSettings().client_config(), "group.id": config.bridge.consumer_group})
    try:
        [tp] = consumer.committed([TopicPartition(config.topics[0], 0)], timeout=10)
        return tp.offset
    except KafkaException:  # the group coordinator is still being elected
        return -1
    finally:
        consumer.close()


def test_restart_between_delete_and_tombstone_gives_one_request(config: BridgeConfig, produce) -> None:
    produce(ev.key(17), ev.delete(17))
    bridge = BridgeThread(config)
    wait_for(lambda: committed(config) == 1, 30, "the delete event committed")
    bridge.join()
    assert [r.subject_key for r in requests()] == ["customer:17"]

    # The restarted bridge reads the tombstone first and finds its delete event behind it.
    produce(ev.key(17), None)
    produce(ev.key(23), None)  # a tombstone whose delete event was never written
    bridge = BridgeThread(config)
    wait_for(lambda: committed(config) == 3, 30, "the tombstones committed")
    bridge.join()
    metrics = bridge.bridge.metrics
    assert [r.subject_key for r in requests()] == ["customer:17", "customer:23"]
    assert metrics.lookbacks.labels("test", "yes")._value.get() == 1
    assert metrics.lookbacks.labels("test", "no")._value.get() == 1


def test_replay_from_the_start_reproduces_the_same_request_ids(config: BridgeConfig, produce,
                                                               unique_name: Callable[[str], str]) -> None:
    for customer in (1, 2, 3):
        produce(ev.key(customer), ev.delete(customer, lsn=ev.LSN + customer))
        produce(ev.key(customer), None)
    bridge = BridgeThread(config)
    wait_for(lambda: committed(config) == 6, 30, "all events committed")
    bridge.join()
    first = [r.request_id for r in requests()]
    # A new group replays everything, as after losing the committed offsets.
    replay = config.model_copy(update={"bridge": config.bridge.model_copy(
        update={"group_id": unique_name("cdc-replay")})})
    bridge = BridgeThread(replay)
    wait_for(lambda: committed(replay) == 6, 30, "the replay committed")
    bridge.join()
    ids = [r.request_id for r in requests()]
    assert len(first) == 3
    assert sorted(ids) == sorted(first + first)


def test_undecodable_event_is_dead_lettered_before_its_offset_is_committed(config: BridgeConfig, produce) -> None:
    produce(ev.key(5), b"{not json")
    produce(None, ev.envelope("d", None, None))
    produce(ev.key(6), ev.delete(6))
    bridge = BridgeThread(config)
    wait_for(lambda: committed(config) == 3, 30, "the batch committed")
    bridge.join()
    serde = DeadLetterSerde()
    dead = [serde.deserialize(m.value()) for m in read_all(KafkaSettings().dead_letter_topic)]
    assert sorted((d.source_offset, d.reason) for d in dead) == [(0, "cdc_undecodable"), (1, "cdc_missing_identity")]
    assert [r.subject_key for r in requests()] == ["customer:6"]
