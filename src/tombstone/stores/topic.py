"""Downstream compacted topic store: deletes a subject by writing a Kafka tombstone.

The topic (for example ``customer.profiles``) is keyed by subject key. A tombstone is the
key with a null value. Compaction then removes every earlier value of that key from the
partition the tombstone lands on.

To know what is present, the store keeps a view of the topic in memory: for each key and
partition, whether the latest value is null and that record's timestamp in epoch ms. Each
call refreshes the view by reading from the last position up to the high watermarks seen
at the start of the refresh, without a consumer group. The topic's record timestamps are
the update times that the cut-off is compared with.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message

from tombstone.errors import KafkaClientError, RetriableKafkaError, StoreUnavailableError
from tombstone.kafka.errors import RETRIABLE_CODES, from_kafka_exception
from tombstone.kafka.producer import Delivery, DurableProducer, producer_config
from tombstone.kafka.reader import TopicReader
from tombstone.models import DeletionRequest
from tombstone.settings import KafkaSettings
from tombstone.spec import TopicStoreConfig
from tombstone.stores.base import Outcome, ReceiptBook, Store, cutoff_ms

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyState:
    """Latest record of one key in one partition."""

    is_null: bool
    timestamp_ms: int


class TopicStore(Store):
    """A compacted topic keyed by subject key, holding one data class.

    NOTE: Kafka has no conditional write, so a value produced for a subject between the
    refresh and the tombstone is deleted too, even if it is newer than the cut-off.

    NOTE: the view keeps every key of the topic in memory and is rebuilt from the start of
    the topic when the process starts.
    """

    kind = "topic"

    def __init__(self, name: str, config: TopicStoreConfig, kafka: KafkaSettings, state_dir: Path) -> None:
        super().__init__(name)
        self.config = config
        self.kafka = kafka
        self.receipts = ReceiptBook(Path(state_dir) / f"{name}.receipts.sqlite")
        self._producer: DurableProducer | None = None
        self._reader: TopicReader | None = None
        self._view: dict[bytes, dict[int, KeyState]] = {}

    def open(self) -> None:
        """Open the receipt book and create the producer and the reader."""
        try:
            self.receipts.open()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(
                f"Topic store {self.name} cannot open its receipts at {self.receipts.path}: {exc}"
            ) from exc
        self._producer = DurableProducer(producer_config(self.kafka, f"tombstone.store.{self.name}"))
        self._reader = TopicReader(self.kafka, [self.config.topic], client_id=f"tombstone.store.{self.name}.view")
        self._view = {}

    def close(self) -> None:
        if self._producer is not None:
            undelivered = self._producer.close(self.kafka.delivery_timeout_s)
            if undelivered:
                logger.warning("Topic store %s closed with %d records to %s undelivered",
                               self.name, undelivered, self.config.topic)
            self._producer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.receipts.close()

    @property
    def producer(self) -> DurableProducer:
        if self._producer is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._producer

    @property
    def reader(self) -> TopicReader:
        if self._reader is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._reader

    def publish(self, records: Iterable[tuple[str, bytes]]) -> list[Delivery]:
        """Produce ``(subject key, value)`` records and wait until each one is confirmed."""
        try:
            for key, value in records:
                self.producer.send(self.config.topic, key, value)
            return self.producer.confirm(self.kafka.delivery_timeout_s)
        except KafkaClientError as exc:
            self._raise_translated(exc, f"producing to {self.config.topic}")

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Write a tombstone for each subject whose latest value is at or before the cut-off.

        Steps: look up receipts, refresh the view, send tombstones, wait for every delivery
        report, record receipts. A request with a receipt has its tombstone sent again when
        its value is present, but reports the receipt.
        """
        unique = list({r.request_id: r for r in requests}.values())
        try:
            receipts = self.receipts.lookup(r.request_id for r in unique)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"Topic store {self.name}: receipt lookup failed: {exc}") from exc

        self.refresh()

        deleted, sent = self._send_tombstones(unique)
        try:
            deliveries = self.producer.confirm(self.kafka.delivery_timeout_s)
        except KafkaClientError as exc:
            self._raise_translated(exc, f"writing tombstones to {self.config.topic}")
        self._check_partitions(deliveries, sent)

        outcomes = {
            r.request_id: receipts.get(r.request_id) or Outcome.from_count(deleted[r.request_id])
            for r in unique
        }
        try:
            self.receipts.record(outcomes)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"Topic store {self.name}: receipt write failed: {exc}") from exc
        return outcomes

    def _send_tombstones(self, requests: list[DeletionRequest]) -> tuple[dict[str, int], dict[bytes, set[int]]]:
        """Queue one tombstone per present key.

        Returns the deleted count by request id and the live partitions of each key sent.
        """
        deleted: dict[str, int] = {}
        sent: dict[bytes, set[int]] = {}
        for request in requests:
            key = request.subject_key.encode("utf-8")
            live = self._live_partitions(request, key)
            if not live or key in sent:
                deleted[request.request_id] = 0
                continue
            try:
                self.producer.send_tombstone(self.config.topic, key)
            except KafkaClientError as exc:
                self._raise_translated(exc, f"writing a tombstone to {self.config.topic}")
            sent[key] = live
            deleted[request.request_id] = 1
        return deleted, sent

    def _check_partitions(self, deliveries: list[Delivery], sent: dict[bytes, set[int]]) -> None:
        for delivery in deliveries:
            live = sent.get(delivery.key or b"", set())
            if live - {delivery.partition}:
                # Compaction works per partition, so these values stay. count_remaining reports them.
                logger.error(
                    "Topic store %s: a tombstone went to %s[%s], but a value of the same key is in "
                    "partition(s) %s. Was the topic written with another partitioner, or were "
                    "partitions added? Delete that value by hand.",
                    self.name, self.config.topic, delivery.partition, sorted(live - {delivery.partition}),
                )

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        self.refresh()
        return {r.request_id: len(self._live_partitions(r, r.subject_key.encode("utf-8"))) for r in requests}

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        if data_class is not None and data_class != self.config.data_class:
            return 0
        self.refresh()
        states = self._view.get(subject_key.encode("utf-8"), {})
        return sum(1 for state in states.values() if not state.is_null)

    def _live_partitions(self, request: DeletionRequest, key: bytes) -> set[int]:
        """Partitions whose latest value of the key is non-null and at or before the cut-off."""
        if request.data_class != self.config.data_class:
            return set()
        cutoff = cutoff_ms(request)
        return {
            partition for partition, state in self._view.get(key, {}).items()
            if not state.is_null and state.timestamp_ms <= cutoff
        }

    def refresh(self) -> None:
        """Read the records written since the last refresh into the view."""
        action = f"reading {self.config.topic}"
        try:
            for message in self.reader.read_new(self.config.refresh_timeout_s):
                self._remember(message)
        except KafkaException as exc:
            self._raise_translated(from_kafka_exception(exc, action), action, cause=exc)
        except KafkaClientError as exc:
            self._raise_translated(exc, action)

    def _remember(self, message: Message) -> None:
        key = message.key()
        if key is None:
            return
        _, timestamp_ms = message.timestamp()
        self._view.setdefault(key, {})[message.partition()] = KeyState(message.value() is None, timestamp_ms)

    def _raise_translated(self, exc: KafkaClientError, action: str,
                          cause: BaseException | None = None) -> NoReturn:
        """Raise StoreUnavailableError for a retriable Kafka error, else the error itself."""
        if isinstance(exc, RetriableKafkaError) or _error_code(exc, cause) in RETRIABLE_CODES:
            raise StoreUnavailableError(f"Topic store {self.name} failed while {action}: {exc}") from (cause or exc)
        if cause is not None:
            raise exc from cause
        raise exc


def _error_code(exc: KafkaClientError, cause: BaseException | None) -> str | None:
    """Kafka error code of an error, from its ``code`` or else from the exception it wraps.

    TopicReader wraps a failed metadata request without a code, so the cause is checked.
    """
    if exc.code is not None:
        return exc.code
    cause = cause or exc.__cause__
    if isinstance(cause, KafkaException) and cause.args and isinstance(cause.args[0], KafkaError):
        return cause.args[0].name()
    return None
