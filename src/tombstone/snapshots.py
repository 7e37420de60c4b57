"""Take and restore a backup of one store, as an operator's backup tooling would.

Supported kinds: SQLite (the backup API), DuckDB (a copy of the closed file), the search
index and the export files (copies of their directories), and PostgreSQL (a copy of each
mapped table and the receipt table inside the same database). A Redis cache and a Kafka
topic have no point-in-time copy here, so the restore drill does not cover them.

Each function expects the store's worker to be stopped.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import psycopg
from psycopg import sql

from tombstone.errors import ConfigError
from tombstone.spec import ConsumerSpec
from tombstone.stores.base import RECEIPT_TABLE

SNAPSHOT_KINDS = frozenset({"sqlite", "duckdb", "search", "objects", "postgresql"})
_PG_PREFIX = "tombstone_snapshot_"


def check_kind(spec: ConsumerSpec) -> None:
    if spec.store.kind not in SNAPSHOT_KINDS:
        raise ConfigError(
            f"Store {spec.name} is a {spec.store.kind} store, which the restore drill cannot snapshot; "
            f"it supports {', '.join(sorted(SNAPSHOT_KINDS))}.")


def take(spec: ConsumerSpec, target: Path) -> None:
    """Copy the store's data into ``target`` (a directory that this call creates)."""
    check_kind(spec)
    target.mkdir(parents=True, exist_ok=False)
    config = spec.store
    if config.kind == "sqlite":
        _sqlite_copy(Path(config.path), target / "store.sqlite")
    elif config.kind == "duckdb":
        shutil.copy2(config.path, target / "store.duckdb")
    elif config.kind == "search":
        shutil.copytree(config.path, target / "index")
    elif config.kind == "objects":
        shutil.copytree(config.root, target / "objects")
    else:
        _pg_copy(spec, restore=False)


def restore(spec: ConsumerSpec, source: Path) -> None:
    """Put the snapshot in ``source`` back in place of the store's current data."""
    check_kind(spec)
    config = spec.store
    if config.kind == "sqlite":
        _sqlite_copy(source / "store.sqlite", Path(config.path))
    elif config.kind == "duckdb":
        shutil.copy2(source / "store.duckdb", config.path)
    elif config.kind == "search":
        shutil.rmtree(config.path)
        shutil.copytree(source / "index", config.path)
    elif config.kind == "objects":
        shutil.rmtree(config.root)
        shutil.copytree(source / "objects", config.root)
    else:
        _pg_copy(spec, restore=True)


def _sqlite_copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _pg_copy(spec: ConsumerSpec, restore: bool) -> None:
    """Copy each mapped table and the receipts to ``tombstone_snapshot_<table>``, or back."""
    config = spec.store
    password = config.password.get_secret_value() if config.password else None  # type: ignore[union-attr]
    tables = sorted({m.table for m in config.tables} | {RECEIPT_TABLE})  # type: ignore[union-attr]
    with psycopg.connect(host=config.host, port=config.port, dbname=config.dbname,  # type: ignore[union-attr]
                         user=config.user, password=password) as conn:  # type: ignore[union-attr]
        for table in tables:
            live, copy = sql.Identifier(table), sql.Identifier(_PG_PREFIX + table)
            if restore:
                conn.execute(sql.SQL("TRUNCATE {}").format(live))
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(live, copy))
            else:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(copy))
                conn.execute(sql.SQL("CREATE TABLE {} AS TABLE {}").format(copy, live))
