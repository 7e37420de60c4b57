"""Sorting one ``consume()`` batch into work, and tracking which offsets may be committed.

Error entries that librdkafka mixes into a batch (``msg.error()`` set) carry no record:
they never count as consumed, so per-partition offsets come from real records only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, TopicPartition

from tombstone.errors import DecodeError
from tombstone.models import MAX_CUTOFF_SKEW, DeletionRequest, RequestAction
from tombstone.serde import RequestSerde

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class Poison:
    """A record that can never be processed, bound for the dead-letter topic."""

    position: Position
    reason: str
    error: str
    message: Message


@dataclass
class Work:
    """A decoded request and where it came from."""

    position: Position
    request: DeletionRequest
    message: Message


@dataclass
class Batch:
    work: list[Work] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    skipped: int = 0
    # Highest offset seen per (topic, partition), over every real record in the batch.
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # Timestamp in epoch ms of the record at each partition's last offset.
    last_timestamps: dict[tuple[str, int], int] = field(default_factory=dict)

    def see(self, position: Position, timestamp_ms: int | None = None) -> None:
        key = (position.topic, position.partition)
        if position.offset > self.last_offsets.get(key, -1):
            self.last_offsets[key] = position.offset
            if timestamp_ms is not None and timestamp_ms > 0:
                self.last_timestamps[key] = timestamp_ms

    def drop_partitions(self, revoked: set[tuple[str, int]]) -> None:
        """Forget records of partitions this worker no longer owns."""
        self.work = [w for w in self.work if (w.position.topic, w.position.partition) not in revoked]
        self.poison = [p for p in self.poison if (p.position.topic, p.position.partition) not in revoked]
        for key in revoked:
            self.last_offsets.pop(key, None)
            self.last_timestamps.pop(key, None)

    def commit_offsets(self) -> list[TopicPartition]:
        """Offsets to commit once every record of the batch is handled: last offset + 1."""
        return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(self.last_offsets.items())]

    @property
    def empty(self) -> bool:
        return not self.last_offsets


def sort_batch(
    messages: Iterable[Message],
    serde: RequestSerde,
    data_classes: frozenset[str],
    on_error: Callable[[KafkaError], None],
) -> Batch:
    """Decode every record; route errors to ``on_error`` and poison to the batch's list."""
    batch = Batch()
    # The request taken as work for each (request id, action), so that duplicate checks
    # cost one lookup each instead of a scan of the batch.
    taken: dict[tuple[str, RequestAction], DeletionRequest] = {}
    for message in messages:
        if message.error() is not None:
            on_error(message.error())
            continue
        position = Position(message.topic(), message.partition(), message.offset())
        batch.see(position, message.timestamp()[1])
        value = message.value()
        if value is None:
            # A Kafka tombstone: housekeeping removed a fully proven request.
            logger.debug("%s is a tombstone of a closed request; skipping", position)
            batch.skipped += 1
            continue
        try:
            request = serde.deserialize(value)
        except DecodeError as exc:
            # The message can quote the subject id (a validation error names the value), so
            # only the dead letter, which is access-controlled, carries it.
            logger.warning("%s cannot be decoded (%s); the dead letter has the details", position, exc.reason)
            batch.poison.append(Poison(position, exc.reason, str(exc), message))
            continue
        key = message.key()
        if key != request.kafka_key.encode("utf-8"):
            size = len(key) if key is not None else 0
            logger.warning("%s has a %d-byte key that is not its request's key; dead-lettering",
                           position, size)
            batch.poison.append(Poison(position, "key_mismatch",
                                       f"The {size}-byte record key is not the request's subject/data-class key.",
                                       message))
            continue
        if request.data_class not in data_classes:
            logger.debug("%s is for data class %s, not held here; skipping", position, request.data_class)
            batch.skipped += 1
            continue
        earlier = taken.get((request.request_id, request.action))
        problem = _check_request(request, message, earlier)
        if problem is not None:
            reason, text = problem
            logger.warning("%s rejected before apply (%s): %s", position, reason, text)
            batch.poison.append(Poison(position, reason, text, message))
            continue
        if earlier is not None:
            logger.debug("%s repeats request %s in this batch; applying it once", position, request.request_id)
            batch.skipped += 1
            continue
        taken[(request.request_id, request.action)] = request
        batch.work.append(Work(position, request, message))
    return batch


def _check_request(request: DeletionRequest, message: Message,
                   earlier: DeletionRequest | None) -> tuple[str, str] | None:
    """Reason code and message for a request that must not be applied, else None.

    ``earlier`` is the batch's work with the same request id and action, if any. Two
    different requests under one id would share one outcome and one proof, so the later
    one is rejected. A cancel carries the id of the request it cancels, so only the same
    action clashes. A cut-off later than the moment the record was written (or later than
    now) would delete data written after the promise was made.
    """
    if earlier is not None and earlier != request:
        return ("duplicate_request_id",
                f"Request id {request.request_id} already names a different request in this batch.")
    _, timestamp_ms = message.timestamp()
    written_at = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms and timestamp_ms > 0 else None
    limit = min(filter(None, [written_at, datetime.now(UTC)])) + MAX_CUTOFF_SKEW
    if request.cutoff_at > limit:
        return ("future_cutoff",
                f"The cut-off {request.cutoff_at.isoformat()} is later than the record's write time "
                f"plus {MAX_CUTOFF_SKEW}; it would delete data written after the request.")
    return None
