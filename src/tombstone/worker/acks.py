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
    reconcile: bool = False,
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
        legal_basis=outcome.legal_basis,
        retained_until=outcome.retained_until,
        reconcile=reconcile,
    )


def rejected_outcome(reason: str) -> Outcome:
    return Outcome(AckStatus.REJECTED, 0, reason_code=reason)


# Dead letters must fit librdkafka's default 1,000,000-byte record limit with the envelope
# around them, whatever record the broker accepted (its own limit is 1,048,588 bytes).
MAX_DEAD_LETTER_VALUE_BYTES = 512 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 16 * 1024
MAX_DEAD_LETTER_HEADER_BYTES = 128 * 1024


def _cut_headers(headers: list[tuple[str, bytes | None]]) -> tuple[list[DeadLetterHeader], int]:
    """Keep headers in order within the byte budget; return them and the original total size."""
    kept: list[DeadLetterHeader] = []
    total = sum(len(k.encode()) + len(v or b"") for k, v in headers)
    room = MAX_DEAD_LETTER_HEADER_BYTES
    for key, value in headers:
        name = key.encode()[:1024].decode("utf-8", "ignore")
        room -= len(name)
        if room < 0:
            break
        cut = value[: max(0, room)] if value is not None else None
        room -= len(cut or b"")
        kept.append(DeadLetterHeader(key=name, value=cut))
    return kept, total


def build_dead_letter(
    message: Message, position: Position, reason: str, error: str, worker: str
) -> tuple[DeadLetter, bytes | None, Headers]:
    """Envelope with the raw key, value and headers, its record key, and context headers.

    Parts over their budget keep their first bytes so the dead letter can be written at
    all. The value keeps its size and SHA-256 digest in the envelope, the header
    ``tombstone.dlq.cut`` lists the original sizes of the parts that were cut, and the
    source position names the whole record while the requests topic retains it.
    """
    value = message.value()
    key = message.key()
    value_size = value_sha256 = None
    cut: list[str] = []
    if value is not None and len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        value_size, value_sha256 = len(value), hashlib.sha256(value).hexdigest()
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
        cut.append(f"value={value_size}")
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        cut.append(f"key={len(key)}")
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    headers, header_bytes = _cut_headers(message.headers() or [])
    if header_bytes > MAX_DEAD_LETTER_HEADER_BYTES:
        cut.append(f"headers={header_bytes}")
    timestamp_type, timestamp_ms = message.timestamp()
    envelope = DeadLetter(
        reason=reason,
        error=error,
        source_topic=position.topic,
        source_partition=position.partition,
        source_offset=position.offset,
        source_timestamp=None if timestamp_type == 0 else datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        key=key,
        value=value,
        value_size=value_size,
        value_sha256=value_sha256,
        headers=headers,
        worker=worker,
    )
    context: Headers = [
        ("tombstone.dlq.reason", reason.encode()),
        ("tombstone.dlq.source.topic", position.topic.encode()),
        ("tombstone.dlq.source.partition", str(position.partition).encode()),
        ("tombstone.dlq.source.offset", str(position.offset).encode()),
        ("tombstone.dlq.worker", worker.encode()),
    ]
    if cut:
        context.append(("tombstone.dlq.cut", ",".join(cut).encode()))
    return envelope, key, context
