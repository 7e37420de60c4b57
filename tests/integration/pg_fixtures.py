"""PostgreSQL fixtures for store tests: the server's address, test tables, cluster control.

The server is the project's own cluster from ``deploy/local/services.sh start`` unless
``TOMBSTONE_TEST_PG_DSN`` names another. A test module imports the fixtures it uses::

    from tests.integration.pg_fixtures import pg_admin, postgres_dsn  # noqa: F401

A server that does not accept connections fails the tests with the reason. They are never
skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tombstone.models import DeletionRequest
from tombstone.spec import PostgresStoreConfig, TableMapping
from tombstone.stores.postgres import PostgresStore

DEFAULT_DSN = "host=127.0.0.1 port=55432 dbname=tombstone user=tombstone password=tombstone"
PG_VERSION = os.environ.get("TOMBSTONE_PG_VERSION", "15")
PG_CLUSTER = "tombstone"
CUTOFF_MS = 1_700_000_000_000
CUTOFF = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=CUTOFF_MS)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """Connection string of a reachable PostgreSQL server."""
    dsn = os.environ.get("TOMBSTONE_TEST_PG_DSN", DEFAULT_DSN)
    params = conninfo_to_dict(dsn)
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL at {params.get('host')}:{params.get('port')}/{params.get('dbname')} is not "
            f"reachable, so PostgreSQL store tests cannot run: {exc}\nStart it with "
            "`bash deploy/local/services.sh start`, or set TOMBSTONE_TEST_PG_DSN.",
            pytrace=False,
        )
    return dsn


def store_config(dsn: str, tables: list[TableMapping], **overrides: Any) -> PostgresStoreConfig:
    """A store config for the server that ``dsn`` names."""
    params = conninfo_to_dict(dsn)
    return PostgresStoreConfig(
        kind="postgresql", host=params.get("host", "127.0.0.1"), port=int(params.get("port", 5432)),
        dbname=params["dbname"], user=params["user"], password=params.get("password"),
        tables=tables, **overrides,
    )


class PgAdmin:
    """An autocommit connection for test setup that drops what the test created."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self._tables: list[str] = []
        self._functions: list[str] = []
        self._collations: list[str] = []
        self._domains: list[str] = []
        self._stores: list[str] = []

    def name(self, prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:12]}"

    def create_table(self, prefix: str, columns: str) -> str:
        """Create a table named ``<prefix>_<random>`` with ``columns`` (SQL) and return its name."""
        table = self.name(prefix)
        self.conn.execute(sql.SQL("CREATE TABLE {} (" + columns + ")").format(sql.Identifier(table)))
        self._tables.append(table)
        return table

    def create_function(self, prefix: str, body: str) -> str:
        """Create a PL/pgSQL trigger function with ``body`` and return its name."""
        function = self.name(prefix)
        self.conn.execute(sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                  + body + " $$").format(sql.Identifier(function)))
        self._functions.append(function)
        return function

    def create_collation(self, prefix: str, options: str) -> str:
        """Create a collation with ``options`` (SQL) and return its name."""
        collation = self.name(prefix)
        self.conn.execute(sql.SQL("CREATE COLLATION {} (" + options + ")").format(sql.Identifier(collation)))
        self._collations.append(collation)
        return collation

    def create_domain(self, prefix: str, definition: str) -> str:
        """Create a domain ``AS definition`` (SQL) and return its name."""
        domain = self.name(prefix)
        self.conn.execute(sql.SQL("CREATE DOMAIN {} AS " + definition).format(sql.Identifier(domain)))
        self._domains.append(domain)
        return domain

    def store_name(self, prefix: str = "pg") -> str:
        """A store name whose receipts are deleted at the end of the test."""
        store = self.name(prefix).replace("_", "-")
        self._stores.append(store)
        return store

    def execute(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []

    def count(self, table: str, where: str = "true", params: Any = None) -> int:
        statement = sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(sql.Identifier(table))
        return self.conn.execute(statement, params).fetchone()[0]

    def reconnect(self) -> None:
        """Replace a connection that a server restart broke."""
        self.conn.close()
        self.conn = psycopg.connect(self.dsn, autocommit=True)

    def close(self) -> None:
        for table in reversed(self._tables):
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        for function in self._functions:
            self.conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {} CASCADE").format(sql.Identifier(function)))
        for collation in self._collations:
            self.conn.execute(sql.SQL("DROP COLLATION IF EXISTS {}").format(sql.Identifier(collation)))
        for domain in self._domains:
            self.conn.execute(sql.SQL("DROP DOMAIN IF EXISTS {}").format(sql.Identifier(domain)))
        if self._stores and self.conn.execute("SELECT to_regclass('tombstone_receipts')").fetchone()[0]:
            self.conn.execute("DELETE FROM tombstone_receipts WHERE store = ANY(%s)", [self._stores])
        self.conn.close()


@pytest.fixture
def pg_admin(postgres_dsn: str) -> Iterator[PgAdmin]:
    admin = PgAdmin(postgres_dsn)
    yield admin
    admin.close()


def stop_cluster() -> None:
    """Stop the project's PostgreSQL cluster at once, as a crash would."""
    subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop", "-m", "immediate"], check=True)


def start_cluster(dsn: str, timeout_s: float = 60.0) -> None:
    """Start the project's PostgreSQL cluster and wait until it accepts connections."""
    subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"], check=False)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def make_request(subject_id: str, data_class: str = "orders", cutoff: datetime = CUTOFF,
                 subject_type: str = "customer") -> DeletionRequest:
    return DeletionRequest(subject_type=subject_type, subject_id=subject_id, data_class=data_class,
                           reason="user_request", requested_by="test", cutoff_at=cutoff)


def table_mapping(table: str, subject_id_type: str = "integer", data_class: str = "orders",
                  updated_at_column: str = "updated_at_ms", subject_type: str = "customer") -> TableMapping:
    """A mapping of ``table`` whose subject column is ``subject_id``."""
    return TableMapping(table=table, data_class=data_class, subject_type=subject_type, subject_column="subject_id",
                        subject_id_type=subject_id_type, updated_at_column=updated_at_column)


@pytest.fixture
def open_store(pg_admin: PgAdmin, postgres_dsn: str) -> Iterator[Callable[..., PostgresStore]]:
    """Open a store over the given mappings. The fixture closes it at the end of the test."""
    opened: list[PostgresStore] = []

    def open_(*tables: TableMapping, **overrides: Any) -> PostgresStore:
        store = PostgresStore(pg_admin.store_name(), store_config(postgres_dsn, list(tables), **overrides))
        store.open()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def orders(pg_admin: PgAdmin) -> str:
    """A table with a bigint subject column and an epoch-ms update column."""
    return pg_admin.create_table("orders", "subject_id bigint, updated_at_ms bigint, amount int")


def add_rows(admin: PgAdmin, table: str, rows: list[tuple[Any, Any]], updated_column: str = "updated_at_ms") -> None:
    """Insert (subject id, update time) rows."""
    statement = sql.SQL("INSERT INTO {} (subject_id, {}) VALUES (%s, %s)").format(
        sql.Identifier(table), sql.Identifier(updated_column))
    admin.conn.cursor().executemany(statement, rows)


def backend_state(admin: PgAdmin, store: PostgresStore) -> str:
    """Return the state of the store's server process, such as "idle" or "idle in transaction"."""
    return admin.execute("SELECT state FROM pg_stat_activity WHERE application_name = %s",
                         [f"tombstone-{store.name}"])[0][0]


def count_executes(monkeypatch: pytest.MonkeyPatch, admin: PgAdmin) -> list[str]:
    """Record the statements that connections other than the admin's execute."""
    calls: list[str] = []
    original = psycopg.Connection.execute

    def counting(self: psycopg.Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
        if self is not admin.conn:
            calls.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    return calls
