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

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from tombstone.errors import RetriableKafkaError
from tombstone.kafka.errors import ErrorClass, classify, from_kafka_exception, to_exception
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)


class TopicReader:
    """Assign every partition of some topics and read them up to their high watermarks."""

    def __init__(self, kafka: KafkaSettings, topics: list[str], client_id: str = "tombstone-reader") -> None:
        self._topics = topics
        config = kafka.client_config()
        config.update({
            # A group id is required by the client, but nothing is ever committed to it.
            "group.id": f"tombstone-reader-{uuid.uuid4()}",
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
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
                if classify(message.error()) in (ErrorClass.INFO, ErrorClass.RETRIABLE):
                    continue
                raise to_exception(message.error(), f"reading {message.topic()}")
            key = (message.topic(), message.partition())
            self._positions[key] = message.offset() + 1
            yield message
            # Transaction markers and compacted gaps can skip offsets, so compare with >=.
            if key in targets and self._positions[key] >= targets[key]:
                del targets[key]
        consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
