"""Hide, purge, restore and anonymize in the SQLite and DuckDB table stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tombstone.errors import ConfigError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import DuckdbStoreConfig, SqliteStoreConfig, TableMapping
from tombstone.stores.duckdb import DuckdbStore
from tombstone.stores.search import SearchStore
from tombstone.stores.sqlite import SqliteStore

CUTOFF_MS = 1_700_000_000_000
TABLES = [TableMapping(table="customer", data_class="profile", subject_type="customer",
                       subject_column="customer_id", subject_id_type="integer")]
ROWS = [(17, "Ada", "ada@example.com", CUTOFF_MS - 5), (17, "Ada", "ada@old.example", CUTOFF_MS),
        (17, "Ada", "later@example.com", CUTOFF_MS + 5), (18, "Bob", "bob@example.com", 1)]


def request(subject_id: str = "17") -> DeletionRequest:
    cutoff = datetime.fromtimestamp(CUTOFF_MS / 1000, UTC)
    return DeletionRequest(request_id=f"req-{subject_id}", subject_type="customer", subject_id=subject_id,
                           data_class="profile", reason="user_request", requested_by="test",
                           requested_at=cutoff, cutoff_at=cutoff)


def _seed(connection: Any) -> None:
    connection.execute("CREATE TABLE customer (customer_id BIGINT, name VARCHAR, email VARCHAR, updated_at_ms BIGINT)")
    connection.executemany("INSERT INTO customer VALUES (?, ?, ?, ?)", ROWS)


@pytest.fixture(params=["sqlite", "duckdb"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite"
        db = sqlite3.connect(path)
        _seed(db)
        db.commit()
        db.close()
        opened: Any = SqliteStore("operational-db", SqliteStoreConfig(kind="sqlite", path=str(path), tables=TABLES))
    else:
        path = tmp_path / "store.duckdb"
        db = duckdb.connect(str(path))
        _seed(db)
        db.close()
        opened = DuckdbStore("warehouse", DuckdbStoreConfig(kind="duckdb", path=str(path), tables=TABLES))
    with opened:
        yield opened


def visible(store: Any, where: str = "customer_id = 17") -> int:
    return store.db.execute(f"SELECT count(*) FROM customer WHERE {where}").fetchone()[0]


def test_hide_removes_rows_from_reads_but_keeps_bytes_until_purge(store: Any) -> None:
    outcome = store.hide([request()])["req-17"]
    assert (outcome.status, outcome.items_affected) == (AckStatus.HIDDEN, 2)
    assert visible(store) == 1  # the row written after the cut-off stays
    assert store.count_remaining([request()]) == {"req-17": 0}
    assert store.count_hidden([request()]) == {"req-17": 2}
    assert store.scan_subject("customer:17") == 3  # an audit still finds the hidden bytes

    purged = store.purge([request()])["req-17"]
    assert (purged.status, purged.items_affected) == (AckStatus.PURGED, 2)
    assert store.count_hidden([request()]) == {"req-17": 0}
    assert store.scan_subject("customer:17") == 1
    assert visible(store, "customer_id = 18") == 1


def test_replayed_steps_report_their_first_outcome(store: Any) -> None:
    store.hide([request()])
    again = store.hide([request()])["req-17"]
    assert (again.status, again.items_affected, again.replayed) == (AckStatus.HIDDEN, 2, True)
    store.purge([request()])
    assert store.purge([request()])["req-17"].replayed


def test_restore_puts_hidden_rows_back(store: Any) -> None:
    store.hide([request()])
    restored = store.restore([request()])["req-17"]
    assert (restored.status, restored.items_affected) == (AckStatus.CANCELLED, 2)
    assert visible(store) == 3
    assert store.count_hidden([request()]) == {"req-17": 0}
    assert store.scan_subject("customer:17") == 3


def test_purge_without_hide_reports_absent(store: Any) -> None:
    assert store.purge([request("18")])["req-18"].status is AckStatus.ABSENT


def test_anonymize_clears_fields_and_keeps_rows(store: Any) -> None:
    store.check_policy("profile", "anonymize", ["name", "email"])
    outcome = store.anonymize([request()], ["name", "email"])["req-17"]
    assert (outcome.status, outcome.items_affected) == (AckStatus.ANONYMIZED, 2)
    assert store.count_identifying([request()], ["name", "email"]) == {"req-17": 0}
    assert visible(store) == 3
    assert visible(store, "customer_id = 17 AND email IS NULL") == 2
    assert visible(store, "email = 'later@example.com'") == 1


def test_anonymize_rejects_unknown_or_key_fields(store: Any) -> None:
    with pytest.raises(ConfigError, match="no table of that class has the column"):
        store.check_policy("profile", "anonymize", ["phone"])
    with pytest.raises(ConfigError, match="subject or update-time column"):
        store.check_policy("profile", "anonymize", ["customer_id"])


def test_store_kind_without_hide_refuses_the_policy(tmp_path: Path) -> None:
    from tombstone.spec import SearchStoreConfig

    search = SearchStore("search", SearchStoreConfig(kind="search", path=str(tmp_path / "index")))
    with pytest.raises(ConfigError, match="cannot hide data class profile"):
        search.check_policy("profile", "hide")
    search.check_policy("profile", "retain")
