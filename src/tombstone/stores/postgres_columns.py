"""Column types of the PostgreSQL store's tables, read from the catalog when the store opens.

Subject ids are bound with the subject column's real type, and cut-offs are converted to
the update column's real type, so that a type mismatch fails at open or rejects one
request instead of matching zero rows silently.

Text subject columns are compared exactly, byte for byte. A column whose equality ignores
case (``citext``, or a collation created with ``deterministic = false``) is rejected at
open: under it one request could delete rows stored under other spellings, and those rows
could not be attributed to the request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from tombstone.errors import ConfigError, PermanentRecordError
from tombstone.models import DeletionRequest
from tombstone.spec import TableMapping
from tombstone.stores.base import cutoff_ms
from tombstone.stores.binding import bind_integer_id, bind_uuid_id, parse_integer_id, parse_uuid_id

# Base type name as format_type() prints it, mapped to the array type used for parameters.
_INTEGER_BITS = {"smallint": 16, "integer": 32, "bigint": 64}
_TEXT_TYPES = {"text", "character varying"}
_UPDATED_TYPES = {
    "bigint": "bigint",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
}

SubjectValue = int | str | uuid.UUID
CutoffValue = int | datetime


@dataclass(frozen=True)
class TableColumns:
    """A table mapping with the real types of its subject and update columns."""

    mapping: TableMapping
    subject_sql_type: str
    updated_sql_type: str

    @property
    def is_text(self) -> bool:
        return self.subject_sql_type == "text"

    @property
    def subject_array_type(self) -> sql.Composable:
        return sql.SQL(self.subject_sql_type + "[]")

    @property
    def cutoff_array_type(self) -> sql.Composable:
        return sql.SQL(self.updated_sql_type + "[]")

    def bind(self, request: DeletionRequest) -> SubjectValue:
        """Convert the request's subject id to the subject column's type.

        Raises:
            PermanentRecordError: the id is not valid for the column type.
        """
        table = self.mapping.table
        if self.subject_sql_type in _INTEGER_BITS:
            return bind_integer_id(table, request, _INTEGER_BITS[self.subject_sql_type])
        if self.subject_sql_type == "uuid":
            return bind_uuid_id(table, request)
        return request.subject_id

    def parse(self, subject_id: str) -> SubjectValue | None:
        """Convert a subject id to the subject column's type, or return None if no row can hold it."""
        if "\x00" in subject_id:
            return None
        if self.subject_sql_type in _INTEGER_BITS:
            return parse_integer_id(subject_id, _INTEGER_BITS[self.subject_sql_type])
        if self.subject_sql_type == "uuid":
            return parse_uuid_id(subject_id)
        return subject_id

    def cutoff(self, request: DeletionRequest) -> CutoffValue:
        """Convert the request's cut-off to the update column's type.

        A ``timestamp`` column without time zone is read as UTC. A naive cut-off is taken
        as local time, as in ``cutoff_ms``.
        """
        if self.updated_sql_type == "bigint":
            return cutoff_ms(request)
        instant = request.cutoff_at.astimezone(UTC)
        return instant if self.updated_sql_type == "timestamptz" else instant.replace(tzinfo=None)


@dataclass(frozen=True)
class _Column:
    base_type: str
    deterministic: bool
    readable: bool


def inspect_tables(conn: psycopg.Connection, mappings: list[TableMapping]) -> list[TableColumns]:
    """Read the subject and update column types of every mapped table.

    Raises:
        ConfigError: a table or column is missing or not readable, a type is not
            supported, or a column type disagrees with the mapping's ``subject_id_type``.
    """
    tables = []
    for mapping in mappings:
        columns = _read_columns(conn, mapping)
        tables.append(TableColumns(
            mapping,
            _subject_sql_type(mapping, columns[mapping.subject_column]),
            _updated_sql_type(mapping, columns[mapping.updated_at_column]),
        ))
    return tables


def _read_columns(conn: psycopg.Connection, mapping: TableMapping) -> dict[str, _Column]:
    table = sql.Identifier(mapping.table).as_string(conn)
    found = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, has_table_privilege(to_regclass(%s), 'DELETE')",
        [table, table],
    ).fetchone()
    if found is None or not found[0]:
        raise ConfigError(
            f"Table {mapping.table} of the PostgreSQL store was not found in the search path "
            "of the configured user. Create it, or fix the table name in the spec."
        )
    if not found[1]:
        raise ConfigError(f"The configured user may not delete from table {mapping.table}. "
                          f"Grant DELETE on {mapping.table} to it.")
    rows = conn.execute(
        "SELECT a.attname, format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL),"
        " coalesce(c.collisdeterministic, true), has_column_privilege(a.attrelid, a.attnum, 'SELECT')"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " LEFT JOIN pg_collation c ON c.oid = a.attcollation"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " AND a.attname = ANY(%s)",
        [table, [mapping.subject_column, mapping.updated_at_column]],
    ).fetchall()
    columns = {name: _Column(base_type, deterministic, readable)
               for name, base_type, deterministic, readable in rows}
    for name in (mapping.subject_column, mapping.updated_at_column):
        if name not in columns:
            raise ConfigError(f"Column {mapping.table}.{name} was not found. Fix the column name in the spec.")
        if not columns[name].readable:
            raise ConfigError(f"The configured user may not read column {mapping.table}.{name}. "
                              f"Grant SELECT on {mapping.table} to it.")
    return columns


def _subject_sql_type(mapping: TableMapping, column: _Column) -> str:
    where = f"Subject column {mapping.table}.{mapping.subject_column}"
    if column.base_type in _INTEGER_BITS:
        kind, array_type = "integer", column.base_type
    elif column.base_type in _TEXT_TYPES or column.base_type == "uuid":
        kind, array_type = "text", "text" if column.base_type in _TEXT_TYPES else "uuid"
    elif column.base_type.endswith("citext"):
        raise ConfigError(
            f"{where} is citext, which compares case-insensitively, but the store compares "
            "subject ids exactly. Change the column to text and store one spelling per subject."
        )
    else:
        raise ConfigError(
            f"{where} has type {column.base_type}, which the store does not support. "
            "Use smallint, integer, bigint, text, character varying or uuid."
        )
    if kind != mapping.subject_id_type:
        raise ConfigError(
            f"{where} has type {column.base_type}, but the spec declares subject_id_type = "
            f'"{mapping.subject_id_type}" for table {mapping.table}. Set subject_id_type = "{kind}".'
        )
    if not column.deterministic:
        raise ConfigError(
            f"{where} has a nondeterministic collation, so its equality may ignore case or "
            "accents, but the store compares subject ids exactly. Give the column a "
            "deterministic collation, such as the database default or \"C\"."
        )
    return array_type


def _updated_sql_type(mapping: TableMapping, column: _Column) -> str:
    if column.base_type not in _UPDATED_TYPES:
        raise ConfigError(
            f"Update column {mapping.table}.{mapping.updated_at_column} has type {column.base_type}, "
            "which the store does not support. Use bigint (epoch milliseconds), "
            "timestamp with time zone or timestamp (read as UTC)."
        )
    return _UPDATED_TYPES[column.base_type]


def reject_nul(request: DeletionRequest) -> None:
    """Reject ids that PostgreSQL text cannot hold, before they reach the database.

    Raises:
        PermanentRecordError: the request id or subject id contains NUL.
    """
    if "\x00" in request.request_id:
        raise PermanentRecordError(
            "request_id_nul",
            "A request id contains NUL (0x00), which PostgreSQL text cannot hold. "
            "Fix the producer of the request.",
            request.request_id,
        )
    if "\x00" in request.subject_id:
        raise PermanentRecordError(
            "subject_id_nul",
            f"The subject id of request {request.request_id} contains NUL (0x00), which "
            "PostgreSQL text cannot hold. Fix the request's subject id.",
            request.request_id,
        )
