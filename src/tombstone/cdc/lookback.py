"""Find the delete event that came before a tombstone, when the bridge did not see it.

Debezium writes a delete event and then a tombstone with the same key. The bridge turns
the delete into a request and skips the tombstone. After a restart between the two, the
tombstone is the first record the bridge reads, so it reads back a few offsets of the same
partition to tell "its delete was already handled" from "the connector crashed before the
tombstone's delete was written" (then the tombstone alone must become a request).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tombstone.cdc.events import EventKind, parse_event
from tombstone.errors import DecodeError
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

DELETE_KINDS = frozenset({EventKind.DELETE, EventKind.KEY_CHANGE})


class DeleteMemory:
    """Delete events seen and still waiting for their tombstone, bounded in size."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: OrderedDict[tuple[str, int, bytes], int] = OrderedDict()
        self._limit = limit

    def remember(self, topic: str, partition: int, key: bytes, offset: int) -> None:
        entry = (topic, partition, key)
        self._seen[entry] = offset
        self._seen.move_to_end(entry)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def take(self, topic: str, partition: int, key: bytes) -> int | None:
        """Offset of the delete event this tombstone follows, removing it; None if unseen."""
        return self._seen.pop((topic, partition, key), None)

    def forget(self, topic: str, partition: int, key: bytes) -> None:
        self._seen.pop((topic, partition, key), None)

    def forget_partition(self, topic: str, partition: int) -> None:
        for entry in [e for e in self._seen if e[0] == topic and e[1] == partition]:
            del self._seen[entry]


class Lookback:
    """Read a range of offsets of one partition with a consumer outside any group."""

    def __init__(self, kafka: KafkaSettings, client_id: str, timeout_s: float = 10.0,
                 factory: Callable[[dict[str, Any]], Any] = Consumer) -> None:
        self._config = kafka.client_config()
        self._config.update({
            # librdkafka wants a group id; this consumer only assigns and never commits.
            "group.id": f"{client_id}.lookback",
            "client.id": f"{client_id}.lookback",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        })
        self._timeout_s = timeout_s
        self._factory = factory
        self._consumer: Any = None

    def delete_before(self, topic: str, partition: int, start: int, end: int, key: bytes) -> bool | None:
        """Tell whether the last record with ``key`` in [start, end) is a delete event.

        Returns None when the range could not be read in time. The caller then treats the
        tombstone as a deletion of its own. That is safe, because a duplicate request finds
        nothing and reports ABSENT.
        """
        if start >= end:
            return False
        try:
            last = self._last_with_key(topic, partition, start, end, key)
        except (KafkaException, TimeoutError) as exc:
            logger.warning("Cannot read %s[%d] offsets %d to %d before a tombstone: %s",
                           topic, partition, start, end - 1, exc)
            return None
        if last is None:
            return False
        try:
            return parse_event(last.key(), last.value(), last.headers()).kind in DELETE_KINDS
        except DecodeError:
            return False

    def _last_with_key(self, topic: str, partition: int, start: int, end: int, key: bytes) -> Any:
        if self._consumer is None:
            self._consumer = self._factory(self._config)
        consumer = self._consumer
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + self._timeout_s
        last = None
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(500, 0.5):
                    if message.error() is not None:
                        if message.error().code() == KafkaError._PARTITION_EOF:
                            return last
                        continue
                    if message.offset() >= end:
                        return last
                    if message.key() == key:
                        last = message
            raise TimeoutError(f"no record at or after offset {end} within {self._timeout_s:.0f} s")
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
