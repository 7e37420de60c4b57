"""Consumer-group plumbing shared by the store workers and the CDC bridge.

A member consumes a batch, handles it, and commits synchronously only the offsets after
records it finished. While a step retries with backoff, it pauses its partitions and keeps
polling so that the group keeps it. Partitions revoked meanwhile are dropped from the
batch. It also keeps lag gauges per partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_never, wait_exponential_jitter

from tombstone.errors import (
    DeliveryError,
    FatalKafkaError,
    KafkaClientError,
    RetriableKafkaError,
    StoreUnavailableError,
    TombstoneError,
    VerificationError,
)
from tombstone.kafka.errors import ErrorClass, classify, code_name, is_permanent, to_exception
from tombstone.settings import KafkaSettings
from tombstone.spec import RetryPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")

LAG_REFRESH_S = 5.0
RETRIABLE_ERRORS = (StoreUnavailableError, RetriableKafkaError, DeliveryError, VerificationError)


def worth_retrying(error: BaseException) -> bool:
    """Retry transient failures, and Kafka errors that are not fatal to the client.

    A permanent Kafka error while writing an ack or a dead letter (authorization revoked,
    topic deleted) stalls the batch with backoff instead of ending the process. Nothing is
    committed past it, and its lag and retries alert until an operator fixes it.
    """
    if isinstance(error, RETRIABLE_ERRORS):
        return True
    return isinstance(error, KafkaClientError) and not isinstance(error, FatalKafkaError)


class ShutdownRequested(TombstoneError):
    """The process was asked to stop while a batch waited for a retry."""


class OffsetTracker(Protocol):
    """A batch's last offsets and their timestamps, ready to commit."""

    last_offsets: dict[tuple[str, int], int]
    last_timestamps: dict[tuple[str, int], int]

    def drop_partitions(self, revoked: set[tuple[str, int]]) -> None: ...

    def commit_offsets(self) -> list[TopicPartition]: ...


class GroupMember:
    """Base of a consumer-group process. Subclasses set ``consumer`` and run the loop.

    ``metrics`` needs the attributes retries, commits, lag_records, lag_seconds and paused,
    labelled by ``label`` first, and ``forget_partition(topic, partition)``.
    """

    def __init__(self, label: str, kafka: KafkaSettings, retry_policy: RetryPolicy, metrics: Any,
                 source_topics: list[str], stop: threading.Event | None = None) -> None:
        self.label = label
        self.kafka = kafka
        self.retry_policy = retry_policy
        self.metrics = metrics
        self.source_topics = source_topics
        self.stop = stop or threading.Event()
        self.consumer: Any = None
        self._revoked: set[tuple[str, int]] = set()
        self._paused = False
        # Last committed offset and its record's timestamp per (topic, partition).
        self._committed: dict[tuple[str, int], tuple[int, int | None]] = {}
        self._fresh: list[TopicPartition] = []
        # Partitions owned now, kept by the rebalance callbacks; safe to read from other threads.
        self.assignment: set[tuple[str, int]] = set()
        self._lag_refreshed = 0.0

    def _consume(self, batch_size: int, timeout_s: float) -> list[Any]:
        """Wait up to ``timeout_s`` for one record, then take those already fetched, up to ``batch_size``.

        ``consume(n, timeout)`` returns only once n records arrived or the timeout passed,
        so at a low rate every record would wait the whole timeout. Here a batch contains
        what arrived while the previous batch was processed.
        """
        first = self.consumer.poll(timeout_s)
        if first is None:
            return []
        if batch_size == 1:
            return [first]
        return [first, *self.consumer.consume(batch_size - 1, 0)]

    def _on_retry_error(self, error: BaseException) -> None:
        """Hook for a subclass to record a failed attempt (for example, store down)."""

    def _commit(self, batch: OffsetTracker) -> None:
        batch.drop_partitions(self._revoked)
        offsets = batch.commit_offsets()
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if code_name(error) == "_NO_OFFSET":
                return
            # The records stay uncommitted, so the next owner of the partitions replays them.
            logger.warning("Offset commit failed (%s: %s); the batch will be replayed",
                           code_name(error), error.str())
            if classify(error) is ErrorClass.FATAL:
                raise FatalKafkaError(str(exc), code_name(error)) from exc
            return
        self.metrics.commits.labels(self.label).inc()
        self._remember_commit(batch)

    def _remember_commit(self, batch: OffsetTracker) -> None:
        for key, offset in batch.last_offsets.items():
            self._committed[key] = (offset + 1, batch.last_timestamps.get(key))
        self._refresh_lag(force=True)

    def _refresh_lag(self, force: bool = False) -> None:
        """Update lag gauges from cached high watermarks, at most every few seconds.

        Lag in seconds is the age of the last committed record when records are waiting,
        an upper bound on the age of the oldest unprocessed one, so that it errs toward
        alerting before ``min.compaction.lag.ms`` runs out.
        """
        now = time.monotonic()
        if not force and now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        self._load_committed()
        for (topic, partition), (committed, timestamp_ms) in list(self._committed.items()):
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high < 0:
                continue
            lag = max(0, high - committed)
            labels = (self.label, topic, str(partition))
            self.metrics.lag_records.labels(*labels).set(lag)
            if timestamp_ms is None and lag:
                continue  # no committed record seen yet: the age is unknown, not zero
            age_s = time.time() - timestamp_ms / 1000 if lag and timestamp_ms else 0.0
            self.metrics.lag_seconds.labels(*labels).set(max(0.0, age_s))

    def _load_committed(self) -> None:
        """Learn the committed offsets of partitions this worker has not committed yet."""
        missing = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in self._committed]
        if not missing:
            return
        try:
            committed = self.consumer.committed(missing, timeout=self.kafka.connect_timeout_s)
        except KafkaException as exc:
            logger.debug("Cannot read committed offsets for lag: %s", exc)
            return
        for tp in committed:
            offset = tp.offset
            if offset < 0:
                offset, _ = self.consumer.get_watermark_offsets(tp, cached=True)
            if offset >= 0:
                self._committed[(tp.topic, tp.partition)] = (offset, None)

    # Retries, pausing and rebalances

    def _retry(self, step: str, call: Callable[[], T]) -> T:
        policy = self.retry_policy
        retrying = Retrying(
            retry=retry_if_exception(worth_retrying),
            wait=wait_exponential_jitter(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s,
                                         jitter=policy.jitter_s),
            stop=stop_after_attempt(policy.max_attempts) if policy.max_attempts else stop_never,
            sleep=self._wait_in_group,
            before_sleep=lambda state: self._log_retry(step, state),
            reraise=True,
        )
        try:
            return retrying(call)
        finally:
            if self._paused:
                self._resume()

    def _log_retry(self, step: str, state: Any) -> None:
        error = state.outcome.exception()
        self.metrics.retries.labels(self.label, step).inc()
        self._on_retry_error(error)
        # A DeliveryError can carry a permanent code, such as TOPIC_AUTHORIZATION_FAILED.
        transient = isinstance(error, RETRIABLE_ERRORS) and not is_permanent(getattr(error, "code", None))
        level = logging.WARNING if transient else logging.ERROR
        logger.log(level, "Step %s failed (attempt %d), retrying in %.1f s: %s",
                   step, state.attempt_number, state.upcoming_sleep, error)

    def _wait_in_group(self, seconds: float) -> None:
        """Sleep for a retry while paused, polling so that the group keeps this member."""
        if self.consumer is None:
            self._sleep_or_stop(seconds)
            return
        if not self._paused:
            self._pause()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.is_set():
                raise ShutdownRequested("stop requested during a retry wait")
            self._refresh_lag()
            message = self.consumer.poll(min(left, 0.5))
            if message is not None and message.error() is None:
                # A partition assigned during the pause delivered a record: rewind so that it
                # is consumed again after the batch, and pause it too.
                tp = TopicPartition(message.topic(), message.partition(), message.offset())
                self.consumer.seek(tp)
                self.consumer.pause([tp])

    def _sleep_or_stop(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise ShutdownRequested("stop requested during a retry wait")

    def _resume_fresh(self) -> None:
        if not self._fresh or self._paused:
            return
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        fresh = [tp for tp in self._fresh if (tp.topic, tp.partition) in assigned]
        self._fresh = []
        if fresh:
            self.consumer.resume(fresh)

    def _pause(self) -> None:
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        self._paused = True
        self.metrics.paused.labels(self.label).set(len(assignment))
        logger.info("Paused %d partitions while the batch retries", len(assignment))

    def _resume(self) -> None:
        assignment = self.consumer.assignment()
        self.consumer.resume(assignment)
        self._paused = False
        self.metrics.paused.labels(self.label).set(0)
        logger.info("Resumed %d partitions", len(assignment))

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # librdkafka keeps the pause flag of a partition that was revoked while paused and
        # assigned back later, so newly assigned partitions are resumed after the callback.
        self._fresh.extend(partitions)
        for tp in partitions:
            self._revoked.discard((tp.topic, tp.partition))
            self.assignment.add((tp.topic, tp.partition))
        logger.info("Assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing")

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._revoked.add((tp.topic, tp.partition))
            self.assignment.discard((tp.topic, tp.partition))
            self._committed.pop((tp.topic, tp.partition), None)
            self.metrics.forget_partition(tp.topic, tp.partition)
        logger.info("Revoked %s; their in-flight records go to the next owner",
                    ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing")

    def _on_batch_error(self, error: KafkaError) -> None:
        kind = classify(error)
        if kind is ErrorClass.INFO:
            return
        if kind is ErrorClass.RETRIABLE:
            logger.warning("Consumer reported %s: %s", code_name(error), error.str())
            return
        raise to_exception(error, f"consuming from {', '.join(self.source_topics)}")

