"""PostgreSQL table store: one transaction per batch, receipts included.

Each mapped table gets one ``DELETE`` per batch, with the batch's subject ids and cut-offs
passed as arrays, so the number of statements does not grow with the batch. Tables are
deleted from in the order the spec lists them, so list a table that references another
(by a foreign key without ``ON DELETE CASCADE``) before the table it references.

Subject ids are bound with the column's real type (see ``postgres_tables``). Text ids are
compared exactly, so an id that differs from stored ids only in case would match nothing
and be proven ``ABSENT``. To prevent that, a request is rejected with reason
``subject_id_case`` when the table contains rows at or before its cut-off whose id equals
the request's id ignoring case but not exactly.

Errors: connection loss, timeouts, deadlocks, serialization failures and a read-only
server (a standby after failover) raise ``StoreUnavailableError``, and the worker retries
the batch. A broken connection is dropped and the next call reconnects. A value or
constraint error is traced to one request by applying each request alone and rolling
back, and that request is rejected. A trigger's RAISE EXCEPTION is handled the same way.
If no single request reproduces the error, the store raises ``StoreError``, which stops
the worker, because retrying the same batch would fail the same way forever while the
metrics reported an outage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg
from psycopg import sql

from tombstone.errors import ConfigError, PermanentRecordError, StoreError, StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import PostgresStoreConfig
from tombstone.stores.base import RECEIPT_TABLE, Outcome, Store
from tombstone.stores.postgres_tables import SubjectValue, TableColumns, TablePlan, inspect_tables, reject_nul

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A standby after a failover rejects writes until the client reaches the new primary.
TRANSIENT_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)
# Errors that one request's values or rows can cause, and that repeat on every retry. A
# trigger that blocks a delete with RAISE EXCEPTION raises RaiseException (SQLSTATE P0001).
VALUE_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.RaiseException)
_REJECT_REASONS = (
    (psycopg.DataError, "invalid_value"),
    (psycopg.IntegrityError, "constraint_violation"),
    (psycopg.errors.RaiseException, "trigger_rejected"),
)

# The primary key includes the store, because several stores may share one database.
_CREATE_RECEIPTS = (
    f"CREATE TABLE IF NOT EXISTS {RECEIPT_TABLE} ("
    " request_id text NOT NULL, store text NOT NULL, status text NOT NULL,"
    " items_affected bigint NOT NULL, applied_at timestamptz NOT NULL,"
    " PRIMARY KEY (store, request_id))"
)


class PostgresStore(Store):
    """Tables in one PostgreSQL database. A NULL update time counts as before every cut-off."""

    kind = "postgresql"

    def __init__(self, name: str, config: PostgresStoreConfig) -> None:
        super().__init__(name)
        self.config = config
        self._conn: psycopg.Connection | None = None
        self._tables: list[TableColumns] | None = None

    # Connection and transactions

    def open(self) -> None:
        self._drop_connection()
        self._conn = self._connect()
        logger.info("PostgreSQL store %s connected to %s:%d/%s as %s, %d tables", self.name,
                    self.config.host, self.config.port, self.config.dbname, self.config.user,
                    len(self.config.tables))

    def close(self) -> None:
        self._drop_connection()
        self._tables = None

    def _connection(self) -> psycopg.Connection:
        if self._tables is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            logger.info("PostgreSQL store %s reconnected to %s:%d", self.name, self.config.host, self.config.port)
        return self._conn

    def _connect(self) -> psycopg.Connection:
        """Connect, create the receipt table if missing and read the mapped columns' types."""
        config = self.config
        try:
            conn = psycopg.connect(
                host=config.host, port=config.port, dbname=config.dbname, user=config.user,
                password=config.password.get_secret_value() if config.password else None,
                sslmode=config.sslmode, application_name=f"tombstone-{self.name}",
                # libpq takes whole seconds and treats values below 2 as 2.
                connect_timeout=max(2, math.ceil(config.connect_timeout_s)),
                options=f"-c statement_timeout={math.ceil(config.statement_timeout_s * 1000)}",
                # Detect a server that vanished without closing the socket within about a minute:
                # 30 s idle, then three probes 10 s apart.
                keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"PostgreSQL store {self.name} cannot connect to {config.host}:{config.port}/"
                f"{config.dbname} as {config.user}: {_describe(exc)}"
            ) from exc
        try:
            self._ensure_receipt_table(conn)
            self._tables = inspect_tables(conn, config.tables)
            conn.commit()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self._translate(exc) from exc
            raise
        return conn

    def _ensure_receipt_table(self, conn: psycopg.Connection) -> None:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [RECEIPT_TABLE]).fetchone()
        if exists and exists[0]:
            return
        try:
            conn.execute(_CREATE_RECEIPTS)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError(
                f"PostgreSQL store {self.name} may not create table {RECEIPT_TABLE}. Create it "
                f"as a user who may, with: {_CREATE_RECEIPTS}"
            ) from exc
        except psycopg.errors.UniqueViolation:
            # CREATE TABLE IF NOT EXISTS races with a concurrent one and loses on pg_type's key.
            logger.info("PostgreSQL store %s: another worker created %s at the same moment", self.name, RECEIPT_TABLE)
            conn.rollback()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, work: Callable[[psycopg.Connection], T], *, commit: bool = True) -> T:
        """Run ``work`` in one transaction and end the transaction whatever happens.

        Raises:
            StoreUnavailableError: a transient database error.
            psycopg.DataError, psycopg.IntegrityError, psycopg.errors.RaiseException:
                unchanged, for the caller to attribute to a request.
            StoreError: any other database error.
        """
        conn = self._connection()
        try:
            result = work(conn)
            if commit:
                conn.commit()
            else:
                conn.rollback()
            return result
        except BaseException as exc:
            self._end_failed_transaction(conn, exc)
            if isinstance(exc, psycopg.Error) and not isinstance(exc, VALUE_ERRORS):
                raise self._translate(exc) from exc
            raise

    def _end_failed_transaction(self, conn: psycopg.Connection, exc: BaseException) -> None:
        # A standby stays read-only, so a new connection is the only way to reach the primary.
        if conn.broken or conn.closed or isinstance(exc, (psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)):
            logger.debug("PostgreSQL store %s: dropping the connection after %s", self.name, type(exc).__name__)
            self._drop_connection()
            return
        try:
            conn.rollback()
        except psycopg.Error as rollback_exc:
            logger.debug("PostgreSQL store %s: rollback failed (%s); dropping the connection",
                         self.name, type(rollback_exc).__name__)
            self._drop_connection()

    def _translate(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, TRANSIENT_ERRORS):
            return StoreUnavailableError(f"PostgreSQL store {self.name} failed: {_describe(exc)}")
        return StoreError(
            f"PostgreSQL store {self.name} failed with {_describe(exc)}. Retrying would fail the "
            "same way, so check the tables' privileges, triggers and constraints."
        )

    # Apply

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete every request's rows and record receipts, all in one transaction.

        A request with a receipt has its delete run again, but reports the receipt.

        Raises:
            PermanentRecordError: a subject id the column cannot hold, an id that matches
                stored ids only ignoring case, or a value error, constraint violation or
                trigger exception caused by one request.
            StoreUnavailableError: a transient database error; nothing was committed.
            StoreError: a database error that no single request reproduces.
        """
        # Step 1. Bind every id before touching the database.
        request_ids, plans = self._plan(requests)

        # Step 2. Delete and record receipts in one transaction.
        try:
            return self._run(lambda conn: self._apply_in_transaction(conn, plans, request_ids))
        except VALUE_ERRORS as exc:
            # Step 3. Find the one request that the database cannot apply.
            raise self._isolate(exc, plans, request_ids) from exc

    def _plan(self, requests: Sequence[DeletionRequest]) -> tuple[list[str], list[TablePlan]]:
        if self._tables is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        plans = [TablePlan(table) for table in self._tables]
        request_ids: dict[str, None] = {}
        for request in requests:
            if request.request_id in request_ids:
                continue
            reject_nul(request)
            request_ids[request.request_id] = None
            for plan in plans:
                mapping = plan.table.mapping
                if mapping.data_class == request.data_class and mapping.subject_type == request.subject_type:
                    plan.add(request)
        return list(request_ids), [plan for plan in plans if plan.request_ids]

    def _apply_in_transaction(self, conn: psycopg.Connection, plans: list[TablePlan],
                              request_ids: list[str]) -> dict[str, Outcome]:
        receipts = self._lookup_receipts(conn, request_ids)
        fresh = {request_id for request_id in request_ids if request_id not in receipts}
        for plan in plans:
            if plan.table.is_text:
                self._reject_case_variant(conn, plan.only(fresh))

        deleted = dict.fromkeys(request_ids, 0)
        for plan in plans:
            for request_id, count in plan.delete(conn).items():
                deleted[request_id] += count
        outcomes = {
            request_id: receipts.get(request_id) or Outcome.from_count(deleted[request_id])
            for request_id in request_ids
        }
        return self._record_receipts(conn, outcomes)

    def _reject_case_variant(self, conn: psycopg.Connection, plan: TablePlan) -> None:
        request_id = plan.first_case_variant(conn) if plan.request_ids else None
        if request_id is None:
            return
        mapping = plan.table.mapping
        raise PermanentRecordError(
            "subject_id_case",
            f"Table {mapping.table} has rows whose {mapping.subject_column} equals the subject id "
            f"of request {request_id} ignoring case but not exactly. Subject ids are compared "
            "exactly, so resubmit the request with the stored spelling of the id.",
            request_id,
        )

    def _lookup_receipts(self, conn: psycopg.Connection, request_ids: list[str]) -> dict[str, Outcome]:
        rows = conn.execute(
            f"SELECT request_id, status, items_affected FROM {RECEIPT_TABLE}"
            " WHERE store = %s AND request_id = ANY(%s::text[])",
            [self.name, request_ids],
        ).fetchall()
        return {request_id: Outcome(AckStatus(status), items, replayed=True) for request_id, status, items in rows}

    def _record_receipts(self, conn: psycopg.Connection, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
        """Insert receipts for fresh outcomes; a receipt that a concurrent worker wrote first wins."""
        fresh = {request_id: outcome for request_id, outcome in outcomes.items() if not outcome.replayed}
        if not fresh:
            return outcomes
        inserted = conn.execute(
            f"INSERT INTO {RECEIPT_TABLE} (request_id, store, status, items_affected, applied_at)"
            " SELECT r.request_id, %s, r.status, r.items, now()"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS r(request_id, status, items)"
            " ON CONFLICT DO NOTHING RETURNING request_id",
            [self.name, list(fresh), [o.status.value for o in fresh.values()],
             [o.items_affected for o in fresh.values()]],
        ).fetchall()
        lost = set(fresh) - {row[0] for row in inserted}
        if lost:
            outcomes = {**outcomes, **self._lookup_receipts(conn, sorted(lost))}
        return outcomes

    def _isolate(self, exc: psycopg.Error, plans: list[TablePlan], request_ids: list[str]) -> StoreError:
        """Apply each request alone, rolled back, to find the first that the database rejects."""
        # NOTE: one transaction per request of the batch; this runs only after a value error.
        for request_id in request_ids:
            single = [plan.only({request_id}) for plan in plans]
            try:
                self._run(lambda conn, single=single: [p.delete(conn) for p in single if p.request_ids],
                          commit=False)
            except VALUE_ERRORS as request_exc:
                reason = next(code for kind, code in _REJECT_REASONS if isinstance(request_exc, kind))
                return PermanentRecordError(
                    reason,
                    f"PostgreSQL store {self.name} cannot apply request {request_id}: the delete "
                    f"failed with {_describe(request_exc)}. Fix the table's rows or constraints, "
                    "then submit the request again.",
                    request_id,
                )
        return StoreError(
            f"PostgreSQL store {self.name} failed a batch of {len(request_ids)} requests with "
            f"{_describe(exc)}, but no single request reproduces it, so none can be rejected. "
            "Check the tables' triggers and constraints."
        )

    # Verification and audit

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        request_ids, plans = self._plan(requests)

        def count(conn: psycopg.Connection) -> dict[str, int]:
            counts = dict.fromkeys(request_ids, 0)
            for plan in plans:
                for request_id, remaining in plan.count(conn).items():
                    counts[request_id] += remaining
            return counts

        return self._run_read(count)

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        """Count every row of the subject in the tables mapped to its subject type, exactly matched."""
        subject_type, _, subject_id = subject_key.partition(":")
        # Two mappings (two data classes) may share a table, so each table is counted once.
        targets: dict[tuple[str, str], tuple[TableColumns, SubjectValue]] = {}
        for table in self._tables or []:
            value = table.parse(subject_id)
            if (table.mapping.subject_type == subject_type and value is not None
                    and data_class in (None, table.mapping.data_class)):
                targets[(table.mapping.table, table.mapping.subject_column)] = (table, value)

        def scan(conn: psycopg.Connection) -> int:
            total = 0
            for table, value in targets.values():
                statement = sql.SQL("SELECT count(*) FROM {table} WHERE {subject} = %s::{type}").format(
                    table=sql.Identifier(table.mapping.table), subject=sql.Identifier(table.mapping.subject_column),
                    type=sql.SQL(table.subject_sql_type))
                total += conn.execute(statement, [value]).fetchone()[0]
            return total

        return self._run_read(scan)

    def _run_read(self, work: Callable[[psycopg.Connection], T]) -> T:
        try:
            return self._run(work, commit=False)
        except VALUE_ERRORS as exc:
            raise self._translate(exc) from exc


def _describe(exc: psycopg.Error) -> str:
    """Name the error without its DETAIL, which can contain key values such as subject ids."""
    if exc.sqlstate is None:
        first_line = str(exc).splitlines()[0] if str(exc) else "no message"
        return f"{type(exc).__name__}: {first_line}"
    names = (("table", exc.diag.table_name), ("constraint", exc.diag.constraint_name))
    where = "".join(f", {label} {value}" for label, value in names if value)
    text = f"{type(exc).__name__} (SQLSTATE {exc.sqlstate}{where})"
    # PostgreSQL's primary messages for these classes describe server state (timeouts, locks,
    # shutdown, read-only mode) and name relations, not row values.
    if isinstance(exc, TRANSIENT_ERRORS) and exc.diag.message_primary:
        text += f": {exc.diag.message_primary}"
    return text
