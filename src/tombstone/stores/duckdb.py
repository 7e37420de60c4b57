"""DuckDB warehouse table store: one transaction per batch, receipts included.

Each table gets one ``DELETE ... USING ... RETURNING`` per batch, joined with the batch's
subjects and their cut-offs, instead of one statement per request. The returned rows are
then attributed to requests in batch order, so the counts match what applying the
requests one by one would report.

DuckDB lets one process at a time open a database file for writing. The store holds that
lock from ``open`` to ``close``, so a loader must write before the worker starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

from tombstone.errors import ConfigError, StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import DuckdbStoreConfig, TableMapping
from tombstone.stores.base import RECEIPT_TABLE, Outcome, Store, cutoff_ms
from tombstone.stores.binding import bind_subject_id, check_mapping_columns, parse_integer_id
from tombstone.stores.sql_policy import PolicyTables, SqlTables

logger = logging.getLogger(__name__)

T = TypeVar("T")

# IOException (file lock held by another process, disk errors), TransactionException
# (write conflict with another connection), ConnectionException and OutOfMemoryException
# all derive from OperationalError. Binder and conversion errors are configuration
# mistakes and are not caught.
TRANSIENT_ERRORS = (duckdb.OperationalError,)

_SQL_TYPES = {"text": "VARCHAR", "integer": "BIGINT"}


@dataclass
class _TablePlan:
    """The requests of one batch that touch one table, in batch order."""

    mapping: TableMapping
    request_ids: list[str] = field(default_factory=list)
    subject_ids: list[str | int] = field(default_factory=list)
    cutoffs_ms: list[int] = field(default_factory=list)

    def add(self, request_id: str, subject_id: str | int, cutoff: int) -> None:
        self.request_ids.append(request_id)
        self.subject_ids.append(subject_id)
        self.cutoffs_ms.append(cutoff)

    def max_cutoff_by_subject(self) -> tuple[list[str | int], list[int]]:
        latest: dict[str | int, int] = {}
        for subject_id, cutoff in zip(self.subject_ids, self.cutoffs_ms, strict=True):
            latest[subject_id] = max(cutoff, latest.get(subject_id, cutoff))
        return list(latest), list(latest.values())

    def attribute(self, deleted_rows: Iterable[tuple[str | int, int]]) -> dict[str, int]:
        """Count each deleted row for the first request in batch order whose cut-off covers it."""
        by_subject: dict[str | int, list[tuple[str, int]]] = {}
        for request_id, subject_id, cutoff in zip(
            self.request_ids, self.subject_ids, self.cutoffs_ms, strict=True
        ):
            by_subject.setdefault(subject_id, []).append((request_id, cutoff))

        counts = dict.fromkeys(self.request_ids, 0)
        for subject_id, updated_at in deleted_rows:
            for request_id, cutoff in by_subject[subject_id]:
                if updated_at <= cutoff:
                    counts[request_id] += 1
                    break
        return counts


class DuckdbStore(PolicyTables, Store):
    """Tables in one DuckDB database file, keyed by subject, with an epoch-ms update column.

    A row whose update column is NULL has an unknown write time and counts as written
    before every cut-off, so it is deleted rather than left behind a proof.
    """

    kind = "duckdb"

    def __init__(self, name: str, config: DuckdbStoreConfig) -> None:
        super().__init__(name)
        self.config = config
        self._db: duckdb.DuckDBPyConnection | None = None
        self._tables: SqlTables | None = None

    def open(self) -> None:
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(path))
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {RECEIPT_TABLE} ("
                " request_id VARCHAR PRIMARY KEY, status VARCHAR NOT NULL,"
                " items_affected BIGINT NOT NULL, applied_at_ms BIGINT NOT NULL)"
            )
            columns: dict[str, list[str]] = {}
            for mapping in self.config.tables:
                columns[mapping.table] = [row[0] for row in self._db.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "ORDER BY ordinal_position", [mapping.table]).fetchall()]
                check_mapping_columns(self.name, mapping, columns[mapping.table])
            self._tables = SqlTables(self._db, "duckdb", columns, list(self.config.tables))
        except ConfigError:
            self.close()
            raise
        except TRANSIENT_ERRORS as exc:
            self.close()
            raise StoreUnavailableError(
                f"DuckDB store {self.name} cannot open {path}: {exc}. If another process has "
                "the file open, stop it, because DuckDB allows one writing process per file."
            ) from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._tables = None

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailableError(f"DuckDB store {self.name} failed: {exc}") from exc

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._db

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete every request's rows and record receipts, all in one transaction.

        A request with a receipt has its delete run again, but reports the receipt.
        """
        # Bind every id first: a bad one fails before the transaction starts.
        plans = self._plan(requests)
        request_ids = list(dict.fromkeys(r.request_id for r in requests))
        try:
            self.db.execute("BEGIN TRANSACTION")
            try:
                outcomes = self._apply_in_transaction(plans, request_ids)
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailableError(f"DuckDB store {self.name} failed: {exc}") from exc
        return outcomes

    def _apply_in_transaction(self, plans: list[_TablePlan], request_ids: list[str]) -> dict[str, Outcome]:
        receipts = self._lookup_receipts(request_ids)
        deleted = dict.fromkeys(request_ids, 0)
        for plan in plans:
            for request_id, count in self._delete(plan).items():
                deleted[request_id] += count
        outcomes = {
            request_id: receipts.get(request_id) or Outcome.from_count(deleted[request_id])
            for request_id in request_ids
        }
        self._record_receipts(outcomes)
        return outcomes

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except duckdb.Error as exc:
            # A failed COMMIT has already ended the transaction, so there is nothing to undo.
            logger.debug("DuckDB store %s: rollback after a failure: %s", self.name, exc)

    def _plan(self, requests: Sequence[DeletionRequest]) -> list[_TablePlan]:
        plans = [_TablePlan(mapping) for mapping in self.config.tables]
        seen: set[str] = set()
        for request in requests:
            if request.request_id in seen:
                continue
            seen.add(request.request_id)
            for plan in plans:
                mapping = plan.mapping
                if mapping.data_class == request.data_class and mapping.subject_type == request.subject_type:
                    plan.add(request.request_id, bind_subject_id(mapping, request), cutoff_ms(request))
        return [plan for plan in plans if plan.request_ids]

    def _delete(self, plan: _TablePlan) -> dict[str, int]:
        mapping = plan.mapping
        table, subject, updated = mapping.table, mapping.subject_column, mapping.updated_at_column
        subject_ids, cutoffs = plan.max_cutoff_by_subject()
        rows = self.db.execute(
            f'DELETE FROM "{table}" USING ('
            f"  SELECT unnest(?::{_SQL_TYPES[mapping.subject_id_type]}[]) AS subject_id,"
            "   unnest(?::BIGINT[]) AS cutoff_ms"
            ") AS tombstone_batch "
            f'WHERE "{table}"."{subject}" = tombstone_batch.subject_id '
            f'AND coalesce("{table}"."{updated}", 0) <= tombstone_batch.cutoff_ms '
            f'RETURNING "{table}"."{subject}", coalesce("{table}"."{updated}", 0)',
            [subject_ids, cutoffs],
        ).fetchall()
        return plan.attribute(rows)

    def _lookup_receipts(self, request_ids: list[str]) -> dict[str, Outcome]:
        rows = self.db.execute(
            f"SELECT request_id, status, items_affected FROM {RECEIPT_TABLE} "
            "WHERE request_id IN (SELECT unnest(?::VARCHAR[]))",
            [request_ids],
        ).fetchall()
        return {
            request_id: Outcome(AckStatus(status), items, replayed=True)
            for request_id, status, items in rows
        }

    def _record_receipts(self, outcomes: dict[str, Outcome]) -> None:
        fresh = {rid: outcome for rid, outcome in outcomes.items() if not outcome.replayed}
        if not fresh:
            return
        self.db.execute(
            f"INSERT INTO {RECEIPT_TABLE} "
            "SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]), ? "
            "ON CONFLICT DO NOTHING",
            [
                list(fresh),
                [outcome.status.value for outcome in fresh.values()],
                [outcome.items_affected for outcome in fresh.values()],
                int(time.time() * 1000),
            ],
        )

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        counts = dict.fromkeys((r.request_id for r in requests), 0)
        plans = self._plan(requests)
        try:
            for plan in plans:
                for position, remaining in self._count(plan):
                    counts[plan.request_ids[position]] += remaining
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailableError(f"DuckDB store {self.name} failed: {exc}") from exc
        return counts

    def _count(self, plan: _TablePlan) -> list[tuple[int, int]]:
        mapping = plan.mapping
        table, subject, updated = mapping.table, mapping.subject_column, mapping.updated_at_column
        return self.db.execute(
            "SELECT tombstone_batch.position, count(*) FROM ("
            "  SELECT unnest(?::BIGINT[]) AS position,"
            f"  unnest(?::{_SQL_TYPES[mapping.subject_id_type]}[]) AS subject_id,"
            "   unnest(?::BIGINT[]) AS cutoff_ms"
            f') AS tombstone_batch JOIN "{table}" '
            f'ON "{table}"."{subject}" = tombstone_batch.subject_id '
            f'AND coalesce("{table}"."{updated}", 0) <= tombstone_batch.cutoff_ms '
            "GROUP BY tombstone_batch.position",
            [list(range(len(plan.request_ids))), plan.subject_ids, plan.cutoffs_ms],
        ).fetchall()

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        subject_type, _, subject_id = subject_key.partition(":")
        # Two mappings (two data classes) may share a table, so each table is counted once.
        targets: set[tuple[str, str, str | int]] = set()
        for mapping in self.config.tables:
            if mapping.subject_type != subject_type or data_class not in (None, mapping.data_class):
                continue
            value: str | int | None = subject_id
            if mapping.subject_id_type == "integer":
                value = parse_integer_id(subject_id)
            if value is not None:
                targets.add((mapping.table, mapping.subject_column, value))
        total = 0
        try:
            for table, column, value in sorted(targets, key=str):
                row = self.db.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" = ?', [value]).fetchone()
                total += (row[0] if row else 0) + self.tables.scan_hidden(table, column, value)
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailableError(f"DuckDB store {self.name} failed: {exc}") from exc
        return total
