"""Read topics without a consumer group: from the beginning up to the high watermark.

The ledger, audits and tests read whole compacted topics this way. No offsets are ever
committed, and the reader remembers its position so that a later ``read_new`` returns only
what arrived since.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from tombstone.errors import KafkaClientError, RetriableKafkaError
from tombstone.kafka.errors import (
    ErrorClass,
    authorization_hint,
    classify,
    error_text,
    from_kafka_exception,
    principal_of,
    to_exception,
)
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

# Prefix of the reader's throwaway consumer group. librdkafka looks up the group's
# coordinator, and Kafka checks DESCRIBE on the group for that, so an ACL that allows
# DESCRIBE on groups with this prefix lets a principal use TopicReader.
READER_GROUP_PREFIX = "tombstone-reader-"


class TopicReader:
    """Assign every partition of some topics and read them up to their high watermarks."""

    def __init__(self, kafka: KafkaSettings, topics: list[str], client_id: str = "tombstone-reader") -> None:
        self._topics = topics
        config = kafka.client_config()
        config.update({
            # A group id is required by the client, but nothing is ever committed to it.
            "group.id": f"{READER_GROUP_PREFIX}{uuid.uuid4()}",
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            # After assign(), a fetch can wait at the broker for up to this long even though
            # the partitions have records to read, and each read_new waits with it.
            # librdkafka's default is 500 ms. The reader unassigns at the end, so the short
            # wait costs no extra fetches while it is idle.
            "fetch.wait.max.ms": 10,
        })
        self._config: dict[str, Any] = config
        self._consumer: Consumer | None = None
        self._positions: dict[tuple[str, int], int] = {}
        self._timeout_s = kafka.connect_timeout_s

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer

    def _partitions(self, consumer: Consumer) -> list[TopicPartition]:
        partitions: list[TopicPartition] = []
        for topic in self._topics:
            try:
                metadata = consumer.list_topics(topic, timeout=self._timeout_s)
            except KafkaException as exc:
                raise from_kafka_exception(exc, f"reading metadata of topic {topic}") from exc
            entry = metadata.topics.get(topic)
            if entry is not None and entry.error is not None:
                # Waiting cannot fix a missing ACL, so a denied topic is a permanent error.
                denied = authorization_hint(entry.error.name(), principal_of(self._config), "READ", "topic", topic)
                if denied:
                    raise KafkaClientError(f"Cannot read topic {topic}: {error_text(entry.error)}.{denied}",
                                           entry.error.name())
            if entry is None or entry.error is not None:
                error = entry.error if entry is not None else None
                raise RetriableKafkaError(
                    f"Topic {topic} is not available"
                    f"{': ' + error.str() if error is not None else ''}. Create it first; "
                    "`tombstone topics create` creates the pipeline's own topics.",
                    error.name() if error is not None else "UNKNOWN_TOPIC_OR_PART",
                )
            partitions.extend(TopicPartition(topic, p) for p in sorted(entry.partitions))
        return partitions

    def read_new(self, timeout_s: float = 30.0) -> Iterator[Message]:
        """Yield every record after the last position, up to the watermarks seen at the start.

        Raises:
            RetriableKafkaError: the end was not reached within ``timeout_s``.
        """
        consumer = self._open()
        targets: dict[tuple[str, int], int] = {}
        for tp in self._partitions(consumer):
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout_s)
            except KafkaException as exc:
                raise from_kafka_exception(exc, f"reading the offsets of {tp.topic}[{tp.partition}]") from exc
            start = max(self._positions.get((tp.topic, tp.partition), low), low)
            if high > start:
                targets[(tp.topic, tp.partition)] = high
                self._positions[(tp.topic, tp.partition)] = start
        if not targets:
            return
        consumer.assign([TopicPartition(t, p, self._positions.get((t, p), OFFSET_BEGINNING))
                         for (t, p) in targets])
        deadline = time.monotonic() + timeout_s
        while targets:
            if time.monotonic() > deadline:
                raise RetriableKafkaError(
                    f"Reading {', '.join(self._topics)} did not reach the end within {timeout_s:.0f} s."
                )
            message = consumer.poll(0.2)
            if message is None:
                # Control records (transaction markers) advance the position without a message.
                for tp in consumer.position([TopicPartition(t, p) for (t, p) in targets]):
                    if tp.offset >= targets[(tp.topic, tp.partition)]:
                        self._positions[(tp.topic, tp.partition)] = tp.offset
                        del targets[(tp.topic, tp.partition)]
                continue
            if message.error() is not None:
                error = message.error()
                if classify(error) in (ErrorClass.INFO, ErrorClass.RETRIABLE):
                    continue
                raise self._read_error(error, message.topic())
            key = (message.topic(), message.partition())
            self._positions[key] = message.offset() + 1
            yield message
            # Transaction markers and compacted gaps can skip offsets, so compare with >=.
            if key in targets and self._positions[key] >= targets[key]:
                del targets[key]
        consumer.unassign()

    def _read_error(self, error: KafkaError, topic: str | None) -> KafkaClientError:
        """Translate a consumer error. The message for a denied topic or group names the missing ACL."""
        # Group errors carry no topic.
        action = f"reading {topic or ', '.join(self._topics)}"
        principal = principal_of(self._config)
        if error.name() == "GROUP_AUTHORIZATION_FAILED":
            hint = authorization_hint(error.name(), principal, "DESCRIBE", "group", READER_GROUP_PREFIX,
                                      prefixed=True)
        elif error.name() == "TOPIC_AUTHORIZATION_FAILED" and topic:
            hint = authorization_hint(error.name(), principal, "READ", "topic", topic)
        else:
            return to_exception(error, action)
        return KafkaClientError(f"Kafka error while {action}: {error.name()}: {error_text(error)}.{hint}",
                                error.name())

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
