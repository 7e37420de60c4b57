"""Fresh, loaded stores for one measurement, and their removal afterwards.

Every store contains one row, key or document per request subject, written one second before
the cut-off, so each request deletes exactly one item. A store is new for each
measurement (its own file, table or key prefix, and its own name, which keys its receipts),
so no measurement replays receipts of an earlier one.

The relational tables index the subject column, as a production table that is deleted
from by subject would.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from tombstone.spec import (
    DuckdbStoreConfig,
    NullStoreConfig,
    PostgresStoreConfig,
    RedisStoreConfig,
    SearchStoreConfig,
    SqliteStoreConfig,
)

from bench.data import DATA_CLASS, SUBJECT_TYPE, DataSet

KINDS = ("null", "sqlite", "duckdb", "postgresql", "redis", "search")
TABLE = "profiles"


def mapping(table: str) -> dict[str, str]:
    return {"table": table, "data_class": DATA_CLASS, "subject_type": SUBJECT_TYPE,
            "subject_column": "customer_id", "updated_at_column": "updated_at_ms"}


def store_config(kind: str, tag: str, workdir: str, run_id: str, postgres: dict[str, Any],
                 redis_url: str) -> dict[str, Any]:
    """Store section of a consumer spec for a new store named by ``tag``."""
    base = Path(workdir) / "stores"
    if kind == "null":
        return {"kind": "null"}
    if kind == "sqlite":
        return {"kind": "sqlite", "path": str(base / f"{tag}.sqlite"), "tables": [mapping(TABLE)]}
    if kind == "duckdb":
        return {"kind": "duckdb", "path": str(base / f"{tag}.duckdb"), "tables": [mapping(TABLE)]}
    if kind == "postgresql":
        table = f"bench_{run_id}_{tag}".replace("-", "_")
        return {"kind": "postgresql", **postgres, "sslmode": "disable", "tables": [mapping(table)]}
    if kind == "redis":
        return {"kind": "redis", "url": redis_url, "index_prefix": f"bench:{run_id}:{tag}:index",
                "data_classes": [DATA_CLASS]}
    if kind == "search":
        return {"kind": "search", "path": str(base / f"{tag}-index"), "writer_heap_mb": 32}
    raise ValueError(f"Unknown store kind {kind!r}; use one of {', '.join(KINDS)}.")


def parse_config(config: dict[str, Any]) -> Any:
    kinds = {"null": NullStoreConfig, "sqlite": SqliteStoreConfig, "duckdb": DuckdbStoreConfig,
             "postgresql": PostgresStoreConfig, "redis": RedisStoreConfig, "search": SearchStoreConfig}
    return kinds[config["kind"]].model_validate(config)


def load(config: dict[str, Any], data: DataSet, tag: str) -> None:
    """Create the store's table or index and write one item per subject of ``data``."""
    kind = config["kind"]
    subjects = [str(i) for i in range(data.count)]
    updated = data.row_updated_at_ms
    if kind == "sqlite":
        _load_sqlite(config["path"], subjects, updated)
    elif kind == "duckdb":
        _load_duckdb(config["path"], subjects, updated)
    elif kind == "postgresql":
        _load_postgres(config, subjects, updated)
    elif kind == "redis":
        _load_redis(config, subjects, updated, tag)
    elif kind == "search":
        _load_search(config, subjects, updated, tag)


def remove(config: dict[str, Any], tag: str) -> None:
    """Delete the store's files, table, receipts or keys."""
    kind = config["kind"]
    if kind in ("sqlite", "duckdb"):
        for suffix in ("", "-wal", "-shm", ".wal"):
            Path(config["path"] + suffix).unlink(missing_ok=True)
    elif kind == "search":
        shutil.rmtree(config["path"], ignore_errors=True)
        Path(config["path"]).parent.joinpath(f"{tag}.receipts.sqlite").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(config["path"]).parent.joinpath(f"{tag}.receipts.sqlite{suffix}").unlink(missing_ok=True)
    elif kind == "postgresql":
        with _pg_connect(config) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{config["tables"][0]["table"]}"')
            if conn.execute("SELECT to_regclass('tombstone_receipts') IS NOT NULL").fetchone()[0]:
                conn.execute("DELETE FROM tombstone_receipts WHERE store = %s", [tag])
    elif kind == "redis":
        import redis

        client = redis.Redis.from_url(config["url"])
        # Every key of this store, values and indexes alike, starts with the run's prefix.
        prefix = config["index_prefix"].rsplit(":index", 1)[0]
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
        client.close()


def _load_sqlite(path: str, subjects: list[str], updated: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE {TABLE} (customer_id TEXT NOT NULL, updated_at_ms INTEGER, email TEXT)")
    db.execute(f"CREATE INDEX {TABLE}_customer ON {TABLE} (customer_id)")
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
                   [(s, updated, f"customer{s}@example.com") for s in subjects])
    db.execute("COMMIT")
    db.close()


def _load_duckdb(path: str, subjects: list[str], updated: int) -> None:
    import duckdb

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect(path)
    db.execute(f"CREATE TABLE {TABLE} (customer_id VARCHAR NOT NULL, updated_at_ms BIGINT, email VARCHAR)")
    db.execute(f"INSERT INTO {TABLE} SELECT unnest(?::VARCHAR[]), ?, 'customer' || unnest(?::VARCHAR[]) "
               "|| '@example.com'", [subjects, updated, subjects])
    db.close()


def _pg_connect(config: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(host=config["host"], port=config["port"], dbname=config["dbname"],
                           user=config["user"], password=config["password"], sslmode="disable",
                           autocommit=True)


def _load_postgres(config: dict[str, Any], subjects: list[str], updated: int) -> None:
    table = config["tables"][0]["table"]
    with _pg_connect(config) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute(f'CREATE TABLE "{table}" (customer_id text NOT NULL, updated_at_ms bigint, email text)')
        with conn.cursor().copy(f'COPY "{table}" (customer_id, updated_at_ms, email) FROM STDIN') as copy:
            for subject in subjects:
                copy.write_row((subject, updated, f"customer{subject}@example.com"))
        conn.execute(f'CREATE INDEX ON "{table}" (customer_id)')
        conn.execute(f'ANALYZE "{table}"')


def _load_redis(config: dict[str, Any], subjects: list[str], updated: int, tag: str) -> None:
    """Write the layout that ``RedisStore.put`` writes, pipelined: a value and its index entry."""
    import redis

    from tombstone.stores.redis import RedisStore

    store = RedisStore(tag, parse_config(config))
    prefix = config["index_prefix"].rsplit(":index", 1)[0]
    client = redis.Redis.from_url(config["url"])
    with client.pipeline(transaction=False) as pipe:
        for count, subject in enumerate(subjects, 1):
            key = f"{prefix}:profile:{subject}"
            pipe.set(key, f"customer{subject}@example.com")
            pipe.zadd(store.index_key(f"{SUBJECT_TYPE}:{subject}", DATA_CLASS), {key: updated})
            if count % 2000 == 0:
                pipe.execute()
        pipe.execute()
    client.close()


def _load_search(config: dict[str, Any], subjects: list[str], updated: int, tag: str) -> None:
    from tombstone.stores.search import SearchDocument, SearchStore

    store = SearchStore(tag, parse_config(config))
    store.open()
    try:
        store.add_documents(
            SearchDocument(doc_id=f"profile-{s}", subject=f"{SUBJECT_TYPE}:{s}", data_class=DATA_CLASS,
                           updated_at_ms=updated, body=f"customer {s} profile with an address and a phone")
            for s in subjects)
    finally:
        store.close()
