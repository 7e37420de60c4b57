"""Building acks and dead-letter records from a worker's results."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from confluent_kafka import Message

from tombstone.models import AckStatus, DeadLetter, DeadLetterHeader, DeletionAck, DeletionRequest
from tombstone.pseudonym import Pseudonymizer
from tombstone.stores.base import Outcome
from tombstone.worker.batch import Position

Headers = list[tuple[str, bytes]]


def build_ack(
    request: DeletionRequest,
    outcome: Outcome,
    remaining: int,
    store: str,
    worker: str,
    pseudonymizer: Pseudonymizer,
) -> DeletionAck:
    """Proof of one request in one store; carries a pseudonym, never the subject id."""
    return DeletionAck(
        request_id=request.request_id,
        store=store,
        worker=worker,
        status=outcome.status,
        items_affected=outcome.items_affected,
        remaining=remaining,
        data_class=request.data_class,
        policy_version=request.policy_version,
        subject_pseudonym=pseudonymizer.pseudonym(request.subject_key),
        pseudonym_key_id=pseudonymizer.key_id,
        reason_code=outcome.reason_code,
    )


def rejected_outcome(reason: str) -> Outcome:
    return Outcome(AckStatus.REJECTED, 0, reason_code=reason)


# Dead letters must fit the broker's default 1 MB record limit with the envelope around them.
MAX_DEAD_LETTER_VALUE_BYTES = 512 * 1024


def build_dead_letter(
    message: Message, position: Position, reason: str, error: str, worker: str
) -> tuple[DeadLetter, Headers]:
    """Envelope with the raw key, value and headers, and context headers for tools.

    A value larger than ``MAX_DEAD_LETTER_VALUE_BYTES`` keeps its first bytes, its size
    and its SHA-256 digest, so the dead letter can be written at all; the source position
    names the whole record while the requests topic retains it.
    """
    original_headers = message.headers() or []
    value = message.value()
    value_size = value_sha256 = None
    if value is not None and len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        value_size, value_sha256 = len(value), hashlib.sha256(value).hexdigest()
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
    timestamp_type, timestamp_ms = message.timestamp()
    envelope = DeadLetter(
        reason=reason,
        error=error,
        source_topic=position.topic,
        source_partition=position.partition,
        source_offset=position.offset,
        source_timestamp=None if timestamp_type == 0 else datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        key=message.key(),
        value=value,
        value_size=value_size,
        value_sha256=value_sha256,
        headers=[DeadLetterHeader(key=k, value=v) for k, v in original_headers],
        worker=worker,
    )
    context: Headers = [
        ("tombstone.dlq.reason", reason.encode()),
        ("tombstone.dlq.source.topic", position.topic.encode()),
        ("tombstone.dlq.source.partition", str(position.partition).encode()),
        ("tombstone.dlq.source.offset", str(position.offset).encode()),
        ("tombstone.dlq.worker", worker.encode()),
    ]
    return envelope, context

