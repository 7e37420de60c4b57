"""Read Debezium change events written by Kafka Connect's JSON converter.

Four value shapes reach the bridge:

- the full envelope, ``{"before", "after", "source", "op", "ts_ms"}``;
- the same inside the converter's schema envelope, ``{"schema": ..., "payload": ...}``;
- a row flattened by ExtractNewRecordState, where ``__deleted`` = "true" marks a delete
  (rewrite mode) and ``__op``, ``__source_ts_ms`` and ``__lsn`` appear when ``add.fields``
  names them;
- a null value: the Kafka tombstone that follows a delete.

Keys are the primary key columns as a JSON object, with or without the schema envelope,
or null for a table without a primary key.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tombstone.errors import DecodeError

# Debezium sets these headers on the delete and create events of a primary-key change.
NEW_KEY_HEADER = "__debezium.newkey"
OLD_KEY_HEADER = "__debezium.oldkey"

_ENVELOPE_KEYS = {"schema", "payload"}
_OPS = frozenset({"c", "u", "d", "r", "t", "m"})


class EventKind(enum.StrEnum):
    DELETE = "delete"
    KEY_CHANGE = "key_change"  # the delete half of a primary-key update: not an erasure
    TOMBSTONE = "tombstone"
    UPSERT = "upsert"  # create, update, snapshot read
    OTHER = "other"  # truncate, logical message, heartbeat: no subject to erase


@dataclass(frozen=True)
class ChangeEvent:
    kind: EventKind
    op: str | None
    key: dict[str, Any] | None
    row: dict[str, Any] | None  # the "before" image of a delete, or the flattened row
    source_ts_ms: int | None
    lsn: int | None
    tx_id: str | None


def _json(data: bytes, part: str) -> Any:
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise DecodeError("cdc_undecodable", f"The record's {part} is not UTF-8 text; "
                          "the bridge expects Kafka Connect's JsonConverter.") from None
    except json.JSONDecodeError as exc:
        raise DecodeError("cdc_undecodable", f"The record's {part} is not JSON ({exc.msg} at "
                          f"character {exc.pos}); the bridge expects Kafka Connect's JsonConverter.") from None
    except (ValueError, RecursionError) as exc:  # an integer over Python's digit limit, deep nesting
        raise DecodeError("cdc_undecodable", f"The record's {part} cannot be read as JSON "
                          f"({type(exc).__name__}).") from None


def unwrap(document: Any) -> Any:
    """Payload of a JsonConverter schema envelope, or the document itself."""
    if isinstance(document, dict) and set(document) == _ENVELOPE_KEYS:
        return document["payload"]
    return document


def parse_key(data: bytes | None) -> dict[str, Any] | None:
    """Key columns of a record, or None for a null key or a key without columns.

    Raises:
        DecodeError: the key is not JSON, or not an object.
    """
    if data is None:
        return None
    document = unwrap(_json(data, "key"))
    if document is None:
        return None
    if not isinstance(document, dict):
        raise DecodeError("cdc_unexpected_shape", f"The record key is JSON {type(document).__name__}, "
                          "not an object of key columns.")
    return document or None


def _header(headers: list[tuple[str, bytes | None]] | None, name: str) -> bool:
    return any(key == name for key, _ in headers or [])


# Source positions and times are non-negative 64-bit integers; anything else is not one.
_MAX_INT64 = 2**63 - 1


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_INT64:
        return value
    return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def parse_event(key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes | None]] | None = None) -> ChangeEvent:
    """Classify one record of a change-event topic.

    Raises:
        DecodeError: with reason ``cdc_undecodable`` or ``cdc_unexpected_shape``.
    """
    key_columns = parse_key(key)
    if value is None:
        # Debezium marks the tombstone of a primary-key change with the new key too.
        kind = EventKind.KEY_CHANGE if _header(headers, NEW_KEY_HEADER) else EventKind.TOMBSTONE
        return ChangeEvent(kind, None, key_columns, None, None, None, None)
    document = unwrap(_json(value, "value"))
    if not isinstance(document, dict):
        raise DecodeError("cdc_unexpected_shape", f"The record value is JSON {type(document).__name__}, "
                          "not a Debezium change event object.")
    # A flattened row may have columns named op or source, so the envelope needs both,
    # with a known operation code and a source object.
    if document.get("op") in _OPS and isinstance(document.get("source"), dict):
        return _envelope_event(document, key_columns, headers)
    return _flattened_event(document, key_columns, headers)


def _envelope_event(document: dict[str, Any], key_columns: dict[str, Any] | None,
                    headers: list[tuple[str, bytes | None]] | None) -> ChangeEvent:
    op = document.get("op")
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    before = document.get("before") if isinstance(document.get("before"), dict) else None
    tx = source.get("txId")
    common = dict(op=op, key=key_columns, source_ts_ms=_int(source.get("ts_ms")),
                  lsn=_int(source.get("lsn")), tx_id=None if tx is None else str(tx))
    if op == "d":
        kind = EventKind.KEY_CHANGE if _header(headers, NEW_KEY_HEADER) else EventKind.DELETE
        return ChangeEvent(kind, row=before, **common)
    if op in ("c", "u", "r"):
        return ChangeEvent(EventKind.UPSERT, row=None, **common)
    return ChangeEvent(EventKind.OTHER, row=None, **common)


def _flattened_event(document: dict[str, Any], key_columns: dict[str, Any] | None,
                     headers: list[tuple[str, bytes | None]] | None) -> ChangeEvent:
    op = document.get("__op")
    deleted = _truthy(document.get("__deleted")) or op == "d"
    lsn = _int(document.get("__lsn", document.get("__source_lsn")))
    source_ts = _int(document.get("__source_ts_ms"))
    tx = document.get("__source_txId", document.get("__txId"))
    row = {name: item for name, item in document.items() if not name.startswith("__")}
    common = dict(op=op if isinstance(op, str) else None, key=key_columns, source_ts_ms=source_ts,
                  lsn=lsn, tx_id=None if tx is None else str(tx))
    if deleted:
        kind = EventKind.KEY_CHANGE if _header(headers, NEW_KEY_HEADER) else EventKind.DELETE
        return ChangeEvent(kind, row=row, **common)
    return ChangeEvent(EventKind.UPSERT, row=None, **common)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
