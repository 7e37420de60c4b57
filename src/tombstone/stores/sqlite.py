"""SQLite table store: deletes rows in one transaction per batch, receipts included."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from tombstone.errors import ConfigError, StoreUnavailableError
from tombstone.models import DeletionRequest
from tombstone.spec import SqliteStoreConfig, TableMapping
from tombstone.stores.base import (
    Outcome,
    Store,
    cutoff_ms,
    ensure_receipt_table,
    lookup_receipts,
    record_receipts,
)
from tombstone.stores.binding import bind_subject_id, check_mapping_columns, parse_integer_id
from tombstone.stores.sql_policy import PolicyTables, SqlTables

T = TypeVar("T")


class SqliteStore(PolicyTables, Store):
    """Tables in one SQLite file. A NULL update time counts as before every cut-off."""

    kind = "sqlite"

    def __init__(self, name: str, config: SqliteStoreConfig) -> None:
        super().__init__(name)
        self.config = config
        self._db: sqlite3.Connection | None = None
        self._tables: SqlTables | None = None

    def open(self) -> None:
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=self.config.busy_timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        ensure_receipt_table(self._db)
        columns: dict[str, list[str]] = {}
        try:
            for mapping in self.config.tables:
                columns[mapping.table] = [row[1] for row in self._db.execute(f'PRAGMA table_info("{mapping.table}")')]
                check_mapping_columns(self.name, mapping, columns[mapping.table])
        except ConfigError:
            self.close()
            raise
        self._tables = SqlTables(self._db, "sqlite", columns, list(self.config.tables))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._tables = None

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"SQLite store {self.name} failed: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._db

    def _mappings(self, request: DeletionRequest) -> list[TableMapping]:
        return [
            m for m in self.config.tables
            if m.data_class == request.data_class and m.subject_type == request.subject_type
        ]

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        # Bind every id first: a bad one fails before the transaction starts.
        bound = {r.request_id: [(m, bind_subject_id(m, r)) for m in self._mappings(r)]
                 for r in requests}
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                outcomes = lookup_receipts(self.db, bound)
                for request in requests:
                    deleted = 0
                    for mapping, subject_id in bound[request.request_id]:
                        cursor = self.db.execute(
                            f'DELETE FROM "{mapping.table}" WHERE "{mapping.subject_column}" = ? '
                            f'AND coalesce("{mapping.updated_at_column}", 0) <= ?',
                            (subject_id, cutoff_ms(request)),
                        )
                        deleted += cursor.rowcount
                    # A receipt wins: the ledger must see the first apply's outcome again.
                    outcomes.setdefault(request.request_id, Outcome.from_count(deleted))
                record_receipts(self.db, outcomes)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"SQLite store {self.name} failed: {exc}") from exc
        return outcomes

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            for request in requests:
                total = 0
                for mapping in self._mappings(request):
                    row = self.db.execute(
                        f'SELECT count(*) FROM "{mapping.table}" WHERE "{mapping.subject_column}" = ? '
                        f'AND coalesce("{mapping.updated_at_column}", 0) <= ?',
                        (bind_subject_id(mapping, request), cutoff_ms(request)),
                    ).fetchone()
                    total += row[0]
                counts[request.request_id] = total
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"SQLite store {self.name} failed: {exc}") from exc
        return counts

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        subject_type, _, subject_id = subject_key.partition(":")
        total = 0
        for mapping in self.config.tables:
            if mapping.subject_type != subject_type or data_class not in (None, mapping.data_class):
                continue
            value: str | int | None = subject_id
            if mapping.subject_id_type == "integer":
                value = parse_integer_id(subject_id)
            if value is None:
                continue
            row = self.db.execute(
                f'SELECT count(*) FROM "{mapping.table}" WHERE "{mapping.subject_column}" = ?', (value,)
            ).fetchone()
            total += row[0] + self.tables.scan_hidden(mapping.table, mapping.subject_column, value)
        return total
