"""Mapped tables of the PostgreSQL store: column types from the catalog, and per-batch statements.

Subject ids are bound with the subject column's real type, and cut-offs are converted to
the update column's real type, so that a type mismatch fails at open or rejects one
request instead of matching zero rows silently.

Each statement takes the batch as two arrays (subject ids and cut-offs), so one statement
per table serves a whole batch.

Supported subject columns are smallint, integer and bigint (``subject_id_type =
"integer"``), and text, character varying and uuid (``subject_id_type = "text"``), or
domains over them. Text subject columns are compared exactly, byte for byte. A column whose
equality ignores case (``citext``, or a collation created with ``deterministic = false``)
is rejected at open, because one request could then delete rows stored under other
spellings, and those rows could not be attributed to the request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from tombstone.errors import ConfigError, PermanentRecordError
from tombstone.models import DeletionRequest
from tombstone.spec import TableMapping
from tombstone.stores.base import cutoff_ms
from tombstone.stores.binding import bind_integer_id, bind_uuid_id, parse_integer_id, parse_uuid_id

# Base type names as format_type() prints them. Integer types map to their width in bits,
# update-column types to the SQL type of the cut-off parameters.
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
    # SQL type of subject-id parameters: the column's integer type, "text" or "uuid".
    subject_sql_type: str
    # SQL type of cut-off parameters: "bigint" (epoch ms), "timestamptz" or "timestamp".
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

        A ``timestamp`` column without time zone is read as UTC.
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
        kind, sql_type = "integer", column.base_type
    elif column.base_type in _TEXT_TYPES:
        kind, sql_type = "text", "text"
    elif column.base_type == "uuid":
        kind, sql_type = "text", "uuid"
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
    return sql_type


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


# The batch as rows (subject_id, cutoff, position), position counting from 1 in batch order.
_BATCH = sql.SQL(
    "SELECT * FROM unnest({subjects}::{subject_type}, {cutoffs}::{cutoff_type})"
    " WITH ORDINALITY AS b(subject_id, cutoff, position)"
)
# A row goes to the first request in batch order whose cut-off covers it, as in the DuckDB
# store. Rows with equal subject id and update time are interchangeable, so they are
# grouped before the join with the batch.
_DELETE = sql.SQL(
    "WITH batch AS ({batch}),"
    " deleted AS (DELETE FROM {table} AS t USING batch"
    "  WHERE t.{subject} = batch.subject_id AND (t.{updated} IS NULL OR t.{updated} <= batch.cutoff)"
    "  RETURNING t.{subject} AS subject_id, t.{updated} AS updated),"
    " grouped AS (SELECT subject_id, updated, count(*) AS n FROM deleted GROUP BY subject_id, updated),"
    " owners AS (SELECT min(batch.position) AS position, grouped.n FROM grouped JOIN batch"
    "  ON batch.subject_id = grouped.subject_id"
    "  AND (grouped.updated IS NULL OR grouped.updated <= batch.cutoff)"
    "  GROUP BY grouped.subject_id, grouped.updated, grouped.n)"
    " SELECT position, sum(n)::bigint FROM owners GROUP BY position"
)
_COUNT = sql.SQL(
    "SELECT b.position, count(*) FROM ({batch}) AS b JOIN {table} AS t"
    " ON t.{subject} = b.subject_id AND (t.{updated} IS NULL OR t.{updated} <= b.cutoff)"
    " GROUP BY b.position"
)
# NOTE: lower() cannot use a plain index on the subject column, so on a large table create
# an index on lower(subject_column) to keep this check from scanning the whole table.
_CASE_VARIANTS = sql.SQL(
    "SELECT min(b.position) FROM ({batch}) AS b WHERE EXISTS (SELECT FROM {table} AS t"
    " WHERE lower(t.{subject}) = lower(b.subject_id) AND t.{subject} <> b.subject_id"
    " AND (t.{updated} IS NULL OR t.{updated} <= b.cutoff))"
)


@dataclass
class TablePlan:
    """The requests of one batch that touch one table, in batch order, with bound values."""

    table: TableColumns
    request_ids: list[str] = field(default_factory=list)
    subject_ids: list[SubjectValue] = field(default_factory=list)
    cutoffs: list[CutoffValue] = field(default_factory=list)

    def add(self, request: DeletionRequest) -> None:
        """Append a request, converting its subject id and cut-off to the columns' types.

        Raises:
            PermanentRecordError: the subject id is not valid for the subject column.
        """
        self.request_ids.append(request.request_id)
        self.subject_ids.append(self.table.bind(request))
        self.cutoffs.append(self.table.cutoff(request))

    def only(self, request_ids: set[str]) -> TablePlan:
        """Return a plan with the given requests alone."""
        plan = TablePlan(self.table)
        for request_id, subject_id, cutoff in zip(self.request_ids, self.subject_ids, self.cutoffs, strict=True):
            if request_id in request_ids:
                plan.request_ids.append(request_id)
                plan.subject_ids.append(subject_id)
                plan.cutoffs.append(cutoff)
        return plan

    def delete(self, conn: psycopg.Connection) -> dict[str, int]:
        """Delete the rows at or before each cut-off and return the deleted count by request id."""
        return {self.request_ids[position - 1]: count for position, count in self._run(conn, _DELETE)}

    def count(self, conn: psycopg.Connection) -> dict[str, int]:
        """Count the rows at or before each cut-off by request id, leaving out requests without rows."""
        return {self.request_ids[position - 1]: count for position, count in self._run(conn, _COUNT)}

    def first_case_variant(self, conn: psycopg.Connection) -> str | None:
        """Return the first request whose id matches rows ignoring case but not exactly, if any."""
        position = self._run(conn, _CASE_VARIANTS)[0][0]
        return None if position is None else self.request_ids[position - 1]

    def _run(self, conn: psycopg.Connection, template: sql.SQL) -> list[tuple[Any, ...]]:
        mapping = self.table.mapping
        batch = _BATCH.format(subjects=sql.Placeholder(), subject_type=self.table.subject_array_type,
                              cutoffs=sql.Placeholder(), cutoff_type=self.table.cutoff_array_type)
        statement = template.format(batch=batch, table=sql.Identifier(mapping.table),
                                    subject=sql.Identifier(mapping.subject_column),
                                    updated=sql.Identifier(mapping.updated_at_column))
        return conn.execute(statement, [self.subject_ids, self.cutoffs]).fetchall()
