"""Hide, purge, restore and anonymize rows in SQLite and DuckDB tables.

Hiding moves a subject's rows (at or before the cut-off) into a shadow table named
``<table>__hidden`` with the request id and the time they were hidden. Normal reads of the
table stop showing them at once. The bytes stay until the purge deletes them from the
shadow table, and a cancel in the grace period moves them back.

Anonymizing sets the named columns of the subject's rows to NULL and keeps the rows.

Each operation runs in one transaction with its receipt, under a receipt key of its own
(``<request id>#purge`` and so on), so a replay reports the first outcome of each step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tombstone.errors import ConfigError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import TableMapping
from tombstone.stores.base import RECEIPT_TABLE, Outcome, cutoff_ms
from tombstone.stores.binding import bind_subject_id

T = TypeVar("T")

HIDDEN_SUFFIX = "__hidden"
REQUEST_COLUMN = "tombstone_request_id"
HIDDEN_AT_COLUMN = "tombstone_hidden_at_ms"


def shadow_table(table: str) -> str:
    return f"{table}{HIDDEN_SUFFIX}"


@dataclass
class SqlTables:
    """The policy operations over one SQLite or DuckDB connection (``?`` placeholders).

    ``dialect`` is "sqlite" or "duckdb"; ``columns`` lists each table's columns.
    """

    db: Any
    dialect: str
    columns: dict[str, list[str]]
    all_mappings: list[TableMapping]

    def mappings(self, request: DeletionRequest) -> list[TableMapping]:
        return [m for m in self.all_mappings
                if m.data_class == request.data_class and m.subject_type == request.subject_type]

    def changed(self, cursor: Any) -> int:
        """Rows changed by a DELETE, INSERT or UPDATE, which the two report differently."""
        if self.dialect == "sqlite":
            return cursor.rowcount
        row = cursor.fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # Receipts

    def _receipt(self, key: str) -> Outcome | None:
        row = self.db.execute(f"SELECT status, items_affected FROM {RECEIPT_TABLE} WHERE request_id = ?",
                              [key]).fetchone()
        return Outcome(AckStatus(row[0]), row[1], replayed=True) if row else None

    def _record(self, key: str, outcome: Outcome) -> None:
        self.db.execute(f"INSERT OR IGNORE INTO {RECEIPT_TABLE} VALUES (?, ?, ?, ?)",
                        [key, outcome.status.value, outcome.items_affected, int(time.time() * 1000)])

    def _each(self, requests: Sequence[DeletionRequest], suffix: str, status: AckStatus,
              step: Callable[[DeletionRequest, TableMapping, Any], int]) -> dict[str, Outcome]:
        """Run ``step`` per request and table in one transaction; receipts keep first outcomes."""
        bound = {r.request_id: [(m, bind_subject_id(m, r)) for m in self.mappings(r)] for r in requests}
        outcomes: dict[str, Outcome] = {}
        with self.transaction():
            for request in requests:
                key = request.request_id + suffix
                count = sum(step(request, mapping, subject) for mapping, subject in bound[request.request_id])
                outcome = self._receipt(key) or Outcome(status if count else AckStatus.ABSENT, count)
                if not outcome.replayed:
                    self._record(key, outcome)
                outcomes[request.request_id] = outcome
        return outcomes

    # Hide, purge, restore

    def _ensure_shadow(self, table: str) -> None:
        self.db.execute(
            f'CREATE TABLE IF NOT EXISTS "{shadow_table(table)}" AS SELECT *, '
            f"CAST(NULL AS VARCHAR) AS {REQUEST_COLUMN}, CAST(NULL AS BIGINT) AS {HIDDEN_AT_COLUMN} "
            f'FROM "{table}" WHERE 1 = 0')

    def hide(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        now_ms = int(time.time() * 1000)

        def step(request: DeletionRequest, mapping: TableMapping, subject: Any) -> int:
            self._ensure_shadow(mapping.table)
            where = (f'"{mapping.subject_column}" = ? AND coalesce("{mapping.updated_at_column}", 0) <= ?')
            params = [subject, cutoff_ms(request)]
            self.db.execute(f'INSERT INTO "{shadow_table(mapping.table)}" SELECT *, ?, ? FROM "{mapping.table}" '
                            f"WHERE {where}", [request.request_id, now_ms, *params])
            return self.changed(self.db.execute(f'DELETE FROM "{mapping.table}" WHERE {where}', params))

        return self._each(requests, "", AckStatus.HIDDEN, step)

    def _shadow_exists(self, table: str) -> bool:
        catalog = ("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
                   if self.dialect == "sqlite" else
                   "SELECT count(*) FROM information_schema.tables WHERE table_name = ?")
        return bool(self.db.execute(catalog, [shadow_table(table)]).fetchone()[0])

    def purge(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        def step(request: DeletionRequest, mapping: TableMapping, _subject: Any) -> int:
            if not self._shadow_exists(mapping.table):
                return 0
            return self.changed(self.db.execute(
                f'DELETE FROM "{shadow_table(mapping.table)}" WHERE {REQUEST_COLUMN} = ?', [request.request_id]))

        return self._each(requests, "#purge", AckStatus.PURGED, step)

    def restore(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        def step(request: DeletionRequest, mapping: TableMapping, _subject: Any) -> int:
            if not self._shadow_exists(mapping.table):
                return 0
            columns = ", ".join(f'"{c}"' for c in self.columns[mapping.table])
            shadow = shadow_table(mapping.table)
            self.db.execute(f'INSERT INTO "{mapping.table}" ({columns}) SELECT {columns} FROM "{shadow}" '
                            f"WHERE {REQUEST_COLUMN} = ?", [request.request_id])
            return self.changed(self.db.execute(f'DELETE FROM "{shadow}" WHERE {REQUEST_COLUMN} = ?',
                                                [request.request_id]))

        return self._each(requests, "#cancel", AckStatus.CANCELLED, step)

    def count_hidden(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in requests:
            counts[request.request_id] = sum(
                self.db.execute(f'SELECT count(*) FROM "{shadow_table(m.table)}" WHERE {REQUEST_COLUMN} = ?',
                                [request.request_id]).fetchone()[0]
                for m in self.mappings(request) if self._shadow_exists(m.table))
        return counts

    def scan_hidden(self, table: str, subject_column: str, subject: Any) -> int:
        """Count a subject's hidden rows of ``table``: they are gone from reads, not from disk."""
        if not self._shadow_exists(table):
            return 0
        return self.db.execute(f'SELECT count(*) FROM "{shadow_table(table)}" '
                               f'WHERE "{subject_column}" = ?', [subject]).fetchone()[0]

    # Anonymize

    def _fields_in(self, mapping: TableMapping, fields: Sequence[str]) -> list[str]:
        return [f for f in fields if f in self.columns.get(mapping.table, [])]

    def check_fields(self, store: str, data_class: str, fields: Sequence[str]) -> None:
        """Fail when a field to anonymize is in none of the data class's tables, or is the key."""
        tables = [m for m in self.all_mappings if m.data_class == data_class]
        for field in fields:
            if not any(field in self.columns.get(m.table, []) for m in tables):
                raise ConfigError(f"Store {store} cannot anonymize field {field!r} of data class {data_class}: "
                                  f"no table of that class has the column. Fix fields in the inventory.")
            if any(field in (m.subject_column, m.updated_at_column) for m in tables):
                raise ConfigError(f"Store {store} cannot anonymize {field!r}: it is the subject or update-time "
                                  "column that proofs and cut-offs rely on.")

    def anonymize(self, requests: Sequence[DeletionRequest], fields: Sequence[str]) -> dict[str, Outcome]:
        def step(request: DeletionRequest, mapping: TableMapping, subject: Any) -> int:
            names = self._fields_in(mapping, fields)
            if not names:
                return 0
            assignments = ", ".join(f'"{f}" = NULL' for f in names)
            filled = " OR ".join(f'"{f}" IS NOT NULL' for f in names)
            return self.changed(self.db.execute(
                f'UPDATE "{mapping.table}" SET {assignments} WHERE "{mapping.subject_column}" = ? '
                f'AND coalesce("{mapping.updated_at_column}", 0) <= ? AND ({filled})',
                [subject, cutoff_ms(request)]))

        return self._each(requests, "", AckStatus.ANONYMIZED, step)

    def count_identifying(self, requests: Sequence[DeletionRequest], fields: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in requests:
            total = 0
            for mapping in self.mappings(request):
                names = self._fields_in(mapping, fields)
                if not names:
                    continue
                filled = " OR ".join(f'"{f}" IS NOT NULL' for f in names)
                total += self.db.execute(
                    f'SELECT count(*) FROM "{mapping.table}" WHERE "{mapping.subject_column}" = ? '
                    f'AND coalesce("{mapping.updated_at_column}", 0) <= ? AND ({filled})',
                    [bind_subject_id(mapping, request), cutoff_ms(request)]).fetchone()[0]
            counts[request.request_id] = total
        return counts


class PolicyTables:
    """Mixin for a table store: the policy methods of ``Store``, run by its ``SqlTables``.

    The store sets ``_tables`` in ``open`` and implements ``_guarded``, which turns the
    database's transient errors into ``StoreUnavailableError``.
    """

    name: str
    _tables: SqlTables | None
    actions = frozenset({"delete", "hide", "anonymize", "retain"})

    def _guarded(self, call: Callable[[], T]) -> T:
        raise NotImplementedError

    @property
    def tables(self) -> SqlTables:
        if self._tables is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._tables

    def check_policy(self, data_class: str, action: str, fields: Sequence[str] = ()) -> None:
        super().check_policy(data_class, action, fields)  # type: ignore[misc]
        if action == "anonymize":
            self.tables.check_fields(self.name, data_class, fields)

    def hide(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        return self._guarded(lambda: self.tables.hide(requests))

    def purge(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        return self._guarded(lambda: self.tables.purge(requests))

    def restore(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        return self._guarded(lambda: self.tables.restore(requests))

    def count_hidden(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        return self._guarded(lambda: self.tables.count_hidden(requests))

    def anonymize(self, requests: Sequence[DeletionRequest], fields: Sequence[str]) -> dict[str, Outcome]:
        return self._guarded(lambda: self.tables.anonymize(requests, fields))

    def count_identifying(self, requests: Sequence[DeletionRequest], fields: Sequence[str]) -> dict[str, int]:
        return self._guarded(lambda: self.tables.count_identifying(requests, fields))
