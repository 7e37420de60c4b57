"""The CDC bridge: Debezium change events in, deletion requests out.

For each ``consume()`` batch of change events:

1. Classify every record (see ``events``) and decide: a request, a skip, or a dead letter.
   A tombstone right after its delete event is skipped; a tombstone whose delete the
   bridge never saw becomes a request of its own.
2. Write dead letters and wait until the broker confirmed each one.
3. Produce the requests and wait until the broker confirmed each one.
4. Commit the change-event offsets after the batch, synchronously.

So a crash at any point replays change events whose requests may already exist, and the
deterministic request ids make that replay harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from tombstone.cdc.config import BridgeConfig
from tombstone.cdc.events import EventKind, parse_event
from tombstone.cdc.lookback import DeleteMemory, Lookback
from tombstone.cdc.metrics import BridgeMetrics
from tombstone.cdc.translate import Reject, Skip, Source, build_request
from tombstone.errors import DecodeError, TombstoneError
from tombstone.faults import crash_point
from tombstone.kafka.member import GroupMember, ShutdownRequested
from tombstone.kafka.producer import DurableProducer, producer_config
from tombstone.metrics import HealthState
from tombstone.serde import DeadLetterSerde, RequestSerde
from tombstone.settings import KafkaSettings
from tombstone.worker.acks import build_dead_letter
from tombstone.worker.batch import Batch, Poison, Position, Work

logger = logging.getLogger(__name__)

# Reasons whose text names no row value, so it may go to the log as well as the dead letter.
_LOGGABLE = frozenset({"cdc_missing_identity", "cdc_no_source_time", "cdc_undecodable",
                       "cdc_unexpected_shape", "cdc_unsupported_key", "cdc_unprocessable"})


def bridge_consumer_config(config: BridgeConfig, kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    settings = kafka.client_config()
    settings.update({
        "group.id": config.bridge.consumer_group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
    })
    return settings


class CdcBridge(GroupMember):
    """``run`` blocks until ``stop`` is set or a fatal error occurs."""

    def __init__(self, config: BridgeConfig, kafka: KafkaSettings, *,
                 metrics: BridgeMetrics | None = None, health: HealthState | None = None,
                 stop: threading.Event | None = None,
                 consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
                 producer_factory: Callable[[dict[str, Any]], Any] = Producer) -> None:
        name = config.bridge.name
        super().__init__(name, kafka, config.bridge.retry, metrics or BridgeMetrics(name),
                         config.topics, stop)
        self.config = config
        self.bridge_id = f"cdc-{name}@{socket.gethostname()}:{os.getpid()}"
        self.health = health or HealthState()
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._requests = RequestSerde()
        self._dead_letters = DeadLetterSerde()
        self._memory = DeleteMemory()
        self._lookback = Lookback(kafka, self.bridge_id, factory=consumer_factory)
        # First offset read per partition since it was assigned: the bridge saw every
        # record from there on, so a lookback is needed only before it.
        self._first_read: dict[tuple[str, int], int] = {}
        self._producer: DurableProducer | None = None

    def run(self) -> None:
        logger.info("CDC bridge %s starting: group=%s topics=%s -> %s", self.bridge_id,
                    self.config.bridge.consumer_group, ", ".join(self.config.topics), self.kafka.requests_topic)
        try:
            self._producer = DurableProducer(producer_config(self.kafka, self.bridge_id),
                                             factory=self._producer_factory)
            self.consumer = self._consumer_factory(bridge_consumer_config(self.config, self.kafka, self.bridge_id))
            self.consumer.subscribe(self.config.topics, on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_revoke)
            self.health.ready = True
            while not self.stop.is_set():
                self._resume_fresh()
                messages = self._consume(self.config.bridge.batch_size, self.config.bridge.poll_timeout_s)
                if messages:
                    self.process(messages)
                self._refresh_lag()
        except ShutdownRequested:
            logger.info("CDC bridge stopping during a retry wait; nothing committed for the pending batch")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.health.ready = False
        if self.consumer is not None:
            self.consumer.close()
        self._lookback.close()
        if self._producer is not None:
            left = self._producer.close(5.0)
            if left:
                logger.warning("%d records were still undelivered at shutdown", left)
        logger.info("CDC bridge %s stopped", self.bridge_id)

    @property
    def producer(self) -> DurableProducer:
        if self._producer is None:
            raise TombstoneError("The bridge's producer is not created yet; call run() first.")
        return self._producer

    # The batch

    def process(self, messages: Sequence[Message]) -> None:
        """Decide, write dead letters, produce requests, commit; see the module docstring."""
        self._revoked.clear()
        batch = Batch()
        skipped: Counter[str] = Counter()
        for message in messages:
            if message.error() is not None:
                self._on_batch_error(message.error())
                continue
            self._decide(message, batch, skipped)
        if batch.poison:
            self._retry("dead-letter", lambda: self._send_dead_letters(batch.poison))
        if batch.work:
            self._retry("request", lambda: self._send_requests(batch.work))
            crash_point("bridge_after_requests")
        self._commit(batch)
        for reason, count in skipped.items():
            self.metrics.skipped.labels(self.label, reason).inc(count)
        if batch.work or batch.poison:
            logger.info("Batch done: %d requests, %d dead-lettered, %d skipped; offsets committed",
                        len(batch.work), len(batch.poison), sum(skipped.values()))

    def _decide(self, message: Message, batch: Batch, skipped: Counter[str]) -> None:
        position = Position(message.topic(), message.partition(), message.offset())
        _, timestamp_ms = message.timestamp()
        batch.see(position, timestamp_ms)
        self._first_read.setdefault((position.topic, position.partition), position.offset)
        table = self.config.table_for(position.topic)
        if table is None:  # subscribed topics only, so this is a configuration bug
            raise TombstoneError(f"Record from {position.topic}, which no [[tables]] entry maps.")
        source = Source(position.topic, position.partition, position.offset,
                        timestamp_ms if timestamp_ms and timestamp_ms > 0 else None)
        try:
            event = parse_event(message.key(), message.value(), message.headers())
            self.metrics.events.labels(self.label, position.topic, event.kind.value).inc()
            decision = self._classify(event.kind, message, position)
            if decision is None:
                decision = build_request(self.config.bridge, table, event, source)
        except DecodeError as exc:
            decision = Reject(exc.reason, str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd record must not stop the bridge
            # Raising here would crash the bridge on this record at every restart, so the
            # dead letter keeps the record and the bridge goes on.
            logger.exception("%s could not be handled", position)
            decision = Reject("cdc_unprocessable", f"The bridge failed on this record with {type(exc).__name__}.")
        if isinstance(decision, Skip):
            skipped[decision.reason] += 1
        elif isinstance(decision, Reject):
            self._reject(batch, position, message, decision)
        elif not any(w.request.request_id == decision.request.request_id for w in batch.work):
            batch.work.append(Work(position, decision.request, message))
        else:
            skipped["repeated_event"] += 1

    def _classify(self, kind: EventKind, message: Message, position: Position) -> Skip | Reject | None:
        """Skip or reject without building a request; None when the event is an erasure."""
        key = message.key()
        topic, partition = position.topic, position.partition
        if kind in (EventKind.UPSERT, EventKind.OTHER):
            if key is not None:
                self._memory.forget(topic, partition, key)
            return Skip(kind.value)
        if kind is EventKind.KEY_CHANGE:
            if key is not None:
                self._memory.remember(topic, partition, key, position.offset)
            return Skip("key_change")
        if kind is EventKind.DELETE:
            if key is not None:
                self._memory.remember(topic, partition, key, position.offset)
            return None
        # A tombstone. Without a key it names no row; its delete event (if any) was handled.
        if key is None:
            return Skip("keyless_tombstone")
        if self._memory.take(topic, partition, key) is not None:
            return Skip("tombstone_after_delete")
        if self._seen_delete_before(position, key):
            return Skip("tombstone_after_delete")
        return None

    def _seen_delete_before(self, position: Position, key: bytes) -> bool:
        first = self._first_read.get((position.topic, position.partition), position.offset)
        start = max(0, position.offset - self.config.bridge.lookback_records)
        end = min(first, position.offset)
        if start >= end:
            return False
        found = self._lookback.delete_before(position.topic, position.partition, start, end, key)
        self.metrics.lookbacks.labels(self.label, "yes" if found else "no").inc()
        return bool(found)

    def _reject(self, batch: Batch, position: Position, message: Message, decision: Reject) -> None:
        if decision.reason in _LOGGABLE:
            logger.warning("%s dead-lettered (%s): %s", position, decision.reason, decision.message)
        else:
            logger.warning("%s dead-lettered (%s); the dead letter has the details", position, decision.reason)
        batch.poison.append(Poison(position, decision.reason, decision.message, message))

    # Writing

    def _send_dead_letters(self, poison: list[Poison]) -> None:
        for item in poison:
            envelope, key, headers = build_dead_letter(item.message, item.position, item.reason,
                                                       item.error, self.bridge_id)
            self.producer.send(self.kafka.dead_letter_topic, key, self._dead_letters.serialize(envelope), headers)
        self.producer.confirm(self.config.bridge.delivery_timeout_s)
        for item in poison:
            self.metrics.dead_letters.labels(self.label, item.reason).inc()

    def _send_requests(self, work: list[Work]) -> None:
        for item in work:
            request = item.request
            self.producer.send(self.kafka.requests_topic, request.kafka_key, self._requests.serialize(request))
        self.producer.confirm(self.config.bridge.delivery_timeout_s)
        now = time.time()
        for item in work:
            request = item.request
            self.metrics.requests.labels(self.label, request.data_class).inc()
            self.metrics.source_delay.labels(self.label).observe(max(0.0, now - request.cutoff_at.timestamp()))
            logger.info("%s -> request %s (%s)", item.position, request.request_id, request.data_class)

    # Rebalances

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._first_read.pop((tp.topic, tp.partition), None)
        super()._on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._first_read.pop((tp.topic, tp.partition), None)
            self._memory.forget_partition(tp.topic, tp.partition)
        super()._on_revoke(consumer, partitions)
