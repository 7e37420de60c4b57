"""SqliteStore on a temporary file: cut-off, receipts, binding and schema checks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tombstone.errors import ConfigError, PermanentRecordError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import SqliteStoreConfig, TableMapping
from tombstone.stores.sqlite import SqliteStore

CUTOFF_MS = 1_700_000_000_000


def make_request(subject_id: str, data_class: str = "profile") -> DeletionRequest:
    cutoff = datetime.fromtimestamp(CUTOFF_MS / 1000, UTC)
    return DeletionRequest(subject_type="customer", subject_id=subject_id, data_class=data_class,
                           reason="user_request", requested_by="test", requested_at=cutoff, cutoff_at=cutoff)


def make_config(path: Path) -> SqliteStoreConfig:
    return SqliteStoreConfig(kind="sqlite", path=str(path), tables=[
        TableMapping(table="customer", data_class="profile", subject_type="customer",
                     subject_column="customer_id", subject_id_type="integer"),
        TableMapping(table="invoice", data_class="billing", subject_type="customer",
                     subject_column="customer_id", subject_id_type="integer"),
    ])


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customer (customer_id INTEGER, updated_at_ms INTEGER)")
    db.execute("CREATE TABLE invoice (customer_id INTEGER, updated_at_ms INTEGER)")
    db.commit()
    db.close()
    return path


@pytest.fixture
def store(database: Path):
    with SqliteStore("operational-db", make_config(database)) as opened:
        yield opened


def insert(database: Path, table: str, customer_id: int, updated_at_ms: int | None) -> None:
    db = sqlite3.connect(database)
    with db:
        db.execute(f"INSERT INTO {table} VALUES (?, ?)", (customer_id, updated_at_ms))
    db.close()


def count(database: Path, table: str) -> int:
    db = sqlite3.connect(database)
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def test_apply_deletes_at_or_before_cutoff(store: SqliteStore, database: Path) -> None:
    insert(database, "customer", 17, CUTOFF_MS)
    insert(database, "customer", 17, CUTOFF_MS + 1)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 1
    assert count(database, "customer") == 1
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_treats_null_update_time_as_old(store: SqliteStore, database: Path) -> None:
    insert(database, "customer", 17, None)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert count(database, "customer") == 0


def test_apply_replay_returns_receipt(store: SqliteStore, database: Path) -> None:
    insert(database, "customer", 17, 1)
    request = make_request("17")
    store.apply([request])

    again = store.apply([request])[request.request_id]

    assert again.replayed is True
    assert again.status is AckStatus.DELETED
    assert again.items_affected == 1


def test_apply_new_request_reports_absent(store: SqliteStore, database: Path) -> None:
    insert(database, "customer", 17, 1)
    store.apply([make_request("17")])
    second = make_request("17")

    assert store.apply([second])[second.request_id].status is AckStatus.ABSENT


def test_apply_only_request_data_class(store: SqliteStore, database: Path) -> None:
    insert(database, "customer", 17, 1)
    insert(database, "invoice", 17, 1)

    store.apply([make_request("17", "billing")])

    assert count(database, "customer") == 1
    assert count(database, "invoice") == 0


def test_apply_rejects_non_integer_id(store: SqliteStore) -> None:
    request = make_request("1_7")

    with pytest.raises(PermanentRecordError) as raised:
        store.apply([request])

    assert raised.value.request_id == request.request_id
    assert raised.value.reason == "subject_id_type"


def test_scan_subject_counts_all_classes(store: SqliteStore, database: Path) -> None:
    insert(database, "customer", 17, CUTOFF_MS + 10)
    insert(database, "invoice", 17, 1)

    assert store.scan_subject("customer:17") == 2


def test_open_rejects_missing_update_column(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customer (customer_id INTEGER)")
    db.execute("CREATE TABLE invoice (customer_id INTEGER, updated_at_ms INTEGER)")
    db.close()

    with pytest.raises(ConfigError, match="table customer has no column updated_at_ms"):
        SqliteStore("operational-db", make_config(path)).open()


def test_open_rejects_missing_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table customer does not exist"):
        SqliteStore("operational-db", make_config(tmp_path / "empty.sqlite")).open()
