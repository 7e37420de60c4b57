"""Turn one classified change event into a deletion request, a skip, or a dead letter.

Request ids are derived from the source event, not drawn at random. Debezium delivers at
least once, and the bridge may replay after a crash. The same source change therefore gets
the same request id every time, and workers report the replay's first outcome again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tombstone.cdc.config import BridgeSettings, TableMapping
from tombstone.cdc.events import ChangeEvent, EventKind, ms_to_datetime
from tombstone.errors import describe_validation_error
from tombstone.models import DeletionRequest, utc_now

# Namespace of the bridge's deterministic request ids (uuid5 of the source coordinates).
REQUEST_ID_NAMESPACE = uuid.UUID("6f1c2b0e-4d55-5d7a-9a39-0c3e8f6b2a71")

IDENTITY_FIX = (
    "Map the table's primary key columns, or give the table a primary key that contains them. "
    "Under REPLICA IDENTITY FULL, set identity = \"full\" for the table in the bridge config; "
    "without a primary key, also set message.key.columns in the connector."
)

# Epoch milliseconds that datetime can hold (years 1 to 9999); anything else is not a time.
_MAX_MS = 253_402_300_799_999


@dataclass(frozen=True)
class Source:
    """Position and timestamp of a record on the change-event topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Emit:
    request: DeletionRequest


@dataclass(frozen=True)
class Skip:
    reason: str  # bounded label: upsert, key_change, tombstone_after_delete, other


@dataclass(frozen=True)
class Reject:
    reason: str  # reason code of the dead letter
    message: str


Decision = Emit | Skip | Reject


def _column_value(event: ChangeEvent, column: str, full_identity: bool) -> Any:
    # Under REPLICA IDENTITY DEFAULT, Debezium fills the non-key columns of a delete's
    # before image with defaults (0, "", null), so only the record key is trusted then.
    sources = (event.key, event.row) if full_identity else (event.key,)
    for columns in sources:
        if columns and columns.get(column) not in (None, ""):
            return columns[column]
    return None


def _escape(part: str) -> str:
    # Composite ids join parts with ':', so a ':' inside a part must not look like a joint.
    return part.replace("\\", "\\\\").replace(":", "\\:")


def subject_id(event: ChangeEvent, table: TableMapping) -> str | Reject:
    """Build the subject id from the key columns, joined with ':' when there are several."""
    parts: list[str] = []
    for column in table.key_columns:
        value = _column_value(event, column, table.identity == "full")
        if value is None:
            full = table.identity == "full" and event.kind is EventKind.DELETE
            where = "the record key and the before image" if full else "the record key"
            return Reject("cdc_missing_identity",
                          f"Column {column} is missing from {where} of a delete on {table.source_table}. "
                          + IDENTITY_FIX.format(table=table.source_table))
        if isinstance(value, bool) or not isinstance(value, int | str):
            return Reject("cdc_unsupported_key",
                          f"Column {column} of {table.source_table} holds a JSON {type(value).__name__}; "
                          "key columns must be integers or strings.")
        parts.append(str(value))
    return parts[0] if len(parts) == 1 else ":".join(_escape(part) for part in parts)


def request_id(settings: BridgeSettings, table: TableMapping, subject: str, event: ChangeEvent,
               source: Source) -> str:
    """Same source change, same id: the LSN and transaction identify it; else its position."""
    if event.lsn is not None:
        identity = f"lsn|{event.lsn}|{event.tx_id or ''}|{event.source_ts_ms or ''}"
    elif event.source_ts_ms is not None:
        # Without the LSN, a re-sent change still has its commit time. A row deleted twice
        # in one millisecond gets one request, which covers both deletes.
        identity = f"ts|{event.source_ts_ms}"
    else:
        identity = f"pos|{source.partition}|{source.offset}"
    name = "|".join([settings.name, table.topic, table.data_class, subject, identity])
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, name))


def cutoff(event: ChangeEvent, source: Source) -> tuple[datetime, str] | Reject:
    """Take the source's commit time, else the record's timestamp; never the bridge's clock."""
    if event.source_ts_ms is not None and 0 < event.source_ts_ms <= _MAX_MS:
        return ms_to_datetime(event.source_ts_ms), "source.ts_ms"
    if source.timestamp_ms is not None and 0 < source.timestamp_ms <= _MAX_MS:
        return ms_to_datetime(source.timestamp_ms), "record timestamp"
    return Reject("cdc_no_source_time",
                  "The event has neither source.ts_ms nor a record timestamp, so no cut-off can "
                  "be set. Add source.ts_ms with ExtractNewRecordState's add.fields.")


def build_request(settings: BridgeSettings, table: TableMapping, event: ChangeEvent,
                  source: Source) -> Decision:
    """Build the request for a delete or a lone tombstone, or the reason it cannot be one."""
    subject = subject_id(event, table)
    if isinstance(subject, Reject):
        return subject
    when = cutoff(event, source)
    if isinstance(when, Reject):
        return when
    cutoff_at, _ = when
    try:
        request = DeletionRequest(
            request_id=request_id(settings, table, subject, event, source),
            subject_type=table.subject_type,
            subject_id=subject,
            data_class=table.data_class,
            reason=settings.reason,
            requested_at=utc_now(),
            cutoff_at=cutoff_at,
            cutoff_version=event.lsn,
            requested_by=settings.requested_by,
            trace_id=str(source),
        )
    except ValidationError as exc:
        return Reject("cdc_invalid_request",
                      f"The delete on {table.source_table} cannot become a request: "
                      f"{describe_validation_error(exc)}.")
    return Emit(request)
