"""The stores a fault scenario runs a worker against, seeded and probed by the suite itself.

Each store under test writes the ``[store]`` table of a consumer spec and seeds items.
It reports which seeded items are still present by reading the store directly: SQLite
through its own read-only connection, PostgreSQL through psycopg, Redis with ``EXISTS``
on the raw keys. The oracle never queries a worker. ``scan_subject`` runs the product's own
``Store.scan_subject``, which the oracle compares with its direct probe.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from tombstone.spec import PostgresStoreConfig, RedisStoreConfig, SqliteStoreConfig, TableMapping
from tombstone.stores import PostgresStore, RedisStore, SqliteStore, Store

DATA_CLASS = "customer_profile"
SUBJECT_TYPE = "customer"
PG_DSN = os.environ.get("TOMBSTONE_TEST_PG_DSN",
                        "host=127.0.0.1 port=55432 dbname=tombstone user=tombstone password=tombstone")
REDIS_URL = os.environ.get("TOMBSTONE_REDIS_URL", "redis://127.0.0.1:56379/0")


@dataclass(frozen=True)
class Item:
    """One seeded piece of a subject's data, written at ``written_at_ms`` (epoch ms)."""

    subject_id: str
    item_id: str
    written_at_ms: int

    @property
    def subject_key(self) -> str:
        return f"{SUBJECT_TYPE}:{self.subject_id}"


class StoreUnderTest:
    """Base of the store kinds. ``name`` is the store's name in specs, inventory and acks."""

    kind = "abstract"
    name = "abstract"

    def spec_store_section(self) -> str:
        raise NotImplementedError

    def seed(self, items: Iterable[Item]) -> None:
        raise NotImplementedError

    def present(self, items: Iterable[Item]) -> set[str]:
        """Return the item ids of ``items`` that are still in the store."""
        raise NotImplementedError

    def product_store(self) -> Store:
        """The product's store class for this configuration, not opened."""
        raise NotImplementedError

    def scan_subjects(self, subject_keys: Iterable[str]) -> dict[str, int]:
        """Count each subject's items with the product's ``Store.scan_subject``."""
        store = self.product_store()
        store.open()
        try:
            return {key: store.scan_subject(key, DATA_CLASS) for key in subject_keys}
        finally:
            store.close()

    def cleanup(self) -> None:
        """Remove what the scenario wrote outside its own directory."""


def _table_mapping(table: str) -> TableMapping:
    return TableMapping(table=table, data_class=DATA_CLASS, subject_type=SUBJECT_TYPE,
                        subject_column="customer_id", subject_id_type="text")


class SqliteUnderTest(StoreUnderTest):
    kind = "sqlite"
    name = "operational-db"
    table = "customer"

    def __init__(self, directory: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = directory / "operational.sqlite"
        self.busy_timeout_s = busy_timeout_s

    def spec_store_section(self) -> str:
        return f"""
[store]
kind = "sqlite"
path = "{self.path}"
busy_timeout_s = {self.busy_timeout_s}

[[store.tables]]
table = "{self.table}"
data_class = "{DATA_CLASS}"
subject_type = "{SUBJECT_TYPE}"
subject_column = "customer_id"
subject_id_type = "text"
"""

    def seed(self, items: Iterable[Item]) -> None:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                           "(customer_id TEXT, item_id TEXT, payload TEXT, updated_at_ms INTEGER)")
                db.executemany(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                               [(i.subject_id, i.item_id, f"payload of {i.item_id}", i.written_at_ms)
                                for i in items])
        finally:
            db.close()

    def present(self, items: Iterable[Item]) -> set[str]:
        seeded_ids = {item.item_id for item in items}
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute(f"SELECT item_id FROM {self.table}").fetchall()
        finally:
            db.close()
        return {row[0] for row in rows} & seeded_ids

    def product_store(self) -> Store:
        config = SqliteStoreConfig(kind="sqlite", path=str(self.path), tables=[_table_mapping(self.table)])
        return SqliteStore(self.name, config)

    def lock(self) -> sqlite3.Connection:
        """Take SQLite's write lock, as a long-running writer would. Roll it back to release the lock."""
        locker = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        locker.execute("BEGIN IMMEDIATE")
        return locker

    def write_locked_by_other(self) -> bool:
        """True while another connection holds the write lock (a worker inside its transaction)."""
        probe = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()

    def receipt_count(self) -> int:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute("SELECT count(*) FROM tombstone_receipts").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()


class PostgresUnderTest(StoreUnderTest):
    kind = "postgresql"

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.name = f"fault-pg-{suffix}"
        self.table = f"fault_customer_{suffix}"
        self.params = psycopg.conninfo.conninfo_to_dict(PG_DSN)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)

    def spec_store_section(self) -> str:
        return f"""
[store]
kind = "postgresql"
host = "{self.params.get('host', '127.0.0.1')}"
port = {self.params.get('port', 5432)}
dbname = "{self.params['dbname']}"
user = "{self.params['user']}"
password = "${{TOMBSTONE_PG_PASSWORD}}"
connect_timeout_s = 2
statement_timeout_s = 10

[[store.tables]]
table = "{self.table}"
data_class = "{DATA_CLASS}"
subject_type = "{SUBJECT_TYPE}"
subject_column = "customer_id"
subject_id_type = "text"
"""

    def seed(self, items: Iterable[Item]) -> None:
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (customer_id text, item_id text, payload text, "
                                 "updated_at_ms bigint)").format(sql.Identifier(self.table)))
            conn.cursor().executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(sql.Identifier(self.table)),
                [(i.subject_id, i.item_id, f"payload of {i.item_id}", i.written_at_ms) for i in items])

    def present(self, items: Iterable[Item]) -> set[str]:
        seeded_ids = {item.item_id for item in items}
        with self.connect() as conn:
            rows = conn.execute(sql.SQL("SELECT item_id FROM {}").format(sql.Identifier(self.table))).fetchall()
        return {row[0] for row in rows} & seeded_ids

    def product_store(self) -> Store:
        config = PostgresStoreConfig(
            kind="postgresql", host=self.params.get("host", "127.0.0.1"), port=int(self.params.get("port", 5432)),
            dbname=self.params["dbname"], user=self.params["user"], password=self.params.get("password"),
            tables=[_table_mapping(self.table)])
        return PostgresStore(self.name, config)

    def cleanup(self) -> None:
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.table)))
            if conn.execute("SELECT to_regclass('tombstone_receipts')").fetchone()[0]:
                conn.execute("DELETE FROM tombstone_receipts WHERE store = %s", [self.name])


class RedisUnderTest(StoreUnderTest):
    kind = "redis"
    name = "fault-cache"

    def __init__(self) -> None:
        self.namespace = f"tombstone-faults-{uuid.uuid4().hex[:10]}"
        self.index_prefix = f"{self.namespace}:index"

    def key_of(self, item: Item) -> str:
        return f"{self.namespace}:item:{item.item_id}"

    def spec_store_section(self) -> str:
        return f"""
[store]
kind = "redis"
url = "{REDIS_URL}"
index_prefix = "{self.index_prefix}"
socket_timeout_s = 2.0
health_check_interval_s = 1.0
data_classes = ["{DATA_CLASS}"]
"""

    def product_store(self) -> Store:
        config = RedisStoreConfig(kind="redis", url=REDIS_URL, index_prefix=self.index_prefix,
                                  data_classes=[DATA_CLASS], health_check_interval_s=0)
        return RedisStore(self.name, config)

    def seed(self, items: Iterable[Item]) -> None:
        store = self.product_store()
        store.open()
        try:
            for item in items:
                store.put(item.subject_key, DATA_CLASS, self.key_of(item), b"payload", item.written_at_ms)
        finally:
            store.close()

    def present(self, items: Iterable[Item]) -> set[str]:
        items = list(items)
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            with client.pipeline(transaction=False) as pipe:
                for item in items:
                    pipe.exists(self.key_of(item))
                flags = pipe.execute()
        finally:
            client.close()
        return {item.item_id for item, flag in zip(items, flags, strict=True) if flag}

    def cleanup(self) -> None:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            # Only the suite's cleanup runs SCAN. The store under test never scans.
            keys = list(client.scan_iter(match=f"{self.namespace}:*", count=1000))
            if keys:
                client.unlink(*keys)
        finally:
            client.close()
