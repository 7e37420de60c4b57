"""Conversion of subject ids to the type of a relational store's subject column."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from tombstone.errors import ConfigError, PermanentRecordError
from tombstone.models import DeletionRequest
from tombstone.spec import TableMapping

# Canonical decimal form only. Python's int() also accepts "+17", " 17", "1_7" and
# non-ASCII digits, which would make a request for one subject delete another's rows.
_CANONICAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)", re.ASCII)


def parse_integer_id(subject_id: str, bits: int = 64) -> int | None:
    """Parse a subject id written as a canonical decimal signed integer of ``bits`` bits, else return None."""
    if not _CANONICAL_INTEGER.fullmatch(subject_id) or subject_id == "-0":
        return None
    value = int(subject_id, 10)
    if not -(2 ** (bits - 1)) <= value <= 2 ** (bits - 1) - 1:
        return None
    return value


def parse_uuid_id(subject_id: str) -> uuid.UUID | None:
    """Parse a subject id written as a UUID in canonical form (lowercase, hyphenated), else return None.

    ``uuid.UUID`` also accepts uppercase, braces, a ``urn:uuid:`` prefix and missing hyphens.
    Those spellings name the same UUID but are different subject keys on the topic and in
    the ledger, so they are rejected rather than merged.
    """
    try:
        value = uuid.UUID(subject_id)
    except ValueError:
        return None
    return value if str(value) == subject_id else None


def bind_integer_id(table: str, request: DeletionRequest, bits: int = 64) -> int:
    """Convert a subject id for an integer column of ``bits`` bits.

    Raises:
        PermanentRecordError: the subject id is not a canonical decimal integer in that range.
    """
    value = parse_integer_id(request.subject_id, bits)
    if value is None:
        raise PermanentRecordError(
            "subject_id_type",
            f"Table {table} keys subjects by a {bits}-bit integer column, but the subject "
            f"id of request {request.request_id} is not a decimal integer in that range "
            "(digits only, no sign other than '-', no leading zeros). Fix the request's subject id.",
            request.request_id,
        )
    return value


def bind_uuid_id(table: str, request: DeletionRequest) -> uuid.UUID:
    """Convert a subject id for a uuid column.

    Raises:
        PermanentRecordError: the subject id is not a UUID in canonical form.
    """
    value = parse_uuid_id(request.subject_id)
    if value is None:
        raise PermanentRecordError(
            "subject_id_type",
            f"Table {table} keys subjects by a uuid column, but the subject id of request "
            f"{request.request_id} is not a UUID in canonical form (32 lowercase hex digits "
            "in groups of 8-4-4-4-12). Fix the request's subject id.",
            request.request_id,
        )
    return value


def bind_subject_id(mapping: TableMapping, request: DeletionRequest) -> str | int:
    """Convert a subject id to the column's type, so a mismatch cannot match zero rows silently.

    Raises:
        PermanentRecordError: the table keys subjects by a 64-bit integer column and the
            subject id is not a canonical decimal integer in that range.
    """
    if mapping.subject_id_type == "text":
        return request.subject_id
    return bind_integer_id(mapping.table, request)


def check_mapping_columns(store: str, mapping: TableMapping, columns: Iterable[str]) -> None:
    """Fail fast when a mapped table or one of its columns is missing.

    Without this check SQLite reads a double-quoted unknown column name as a string
    literal, so the delete and the verification both match nothing and the proof would
    claim the subject's data is gone.

    Raises:
        ConfigError: naming the store, table and column.
    """
    present = {column.lower() for column in columns}
    if not present:
        raise ConfigError(
            f"Store {store}: table {mapping.table} does not exist. Create it, or fix `table` in "
            "the consumer spec."
        )
    for column in (mapping.subject_column, mapping.updated_at_column):
        if column.lower() not in present:
            raise ConfigError(
                f"Store {store}: table {mapping.table} has no column {column}. Every mapped table "
                "needs the subject column and an update-time column in epoch milliseconds "
                "(`updated_at_column`, default updated_at_ms)."
            )
