"""Subject id binding for relational stores, and the exact cut-off in milliseconds."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tombstone.errors import PermanentRecordError
from tombstone.models import DeletionRequest
from tombstone.spec import SqliteStoreConfig, TableMapping
from tombstone.stores.base import cutoff_ms
from tombstone.stores.binding import bind_subject_id, parse_integer_id
from tombstone.stores.sqlite import SqliteStore

INTEGER_MAPPING = TableMapping(table="customer", data_class="customer_profile", subject_type="customer",
                               subject_column="customer_id", subject_id_type="integer")


def make_request(subject_id: str, cutoff_at: datetime | None = None) -> DeletionRequest:
    extra = {"cutoff_at": cutoff_at, "requested_at": cutoff_at} if cutoff_at else {}
    return DeletionRequest(subject_type="customer", subject_id=subject_id, data_class="customer_profile",
                           reason="user_request", requested_by="test", **extra)


@pytest.mark.parametrize("text, value", [("0", 0), ("17", 17), ("-5", -5), (str(2**63 - 1), 2**63 - 1)])
def test_parse_integer_id_accepts_canonical(text: str, value: int) -> None:
    assert parse_integer_id(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1_7", "+17", " 17", "17 ", "017", "-0", "1e3",
                                  "\u0661\u0667", str(2**63), str(-(2**63) - 1)])
def test_parse_integer_id_rejects_other_forms(text: str) -> None:
    assert parse_integer_id(text) is None


def test_bind_subject_id_names_request() -> None:
    request = make_request("1_7")

    with pytest.raises(PermanentRecordError) as caught:
        bind_subject_id(INTEGER_MAPPING, request)

    assert caught.value.request_id == request.request_id
    assert caught.value.reason == "subject_id_type"


def test_sqlite_apply_underscore_id_keeps_other_subject(tmp_path: Path) -> None:
    path = tmp_path / "operational.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE customer (customer_id INTEGER, updated_at_ms INTEGER)")
        db.execute("INSERT INTO customer VALUES (17, 1)")
    db.close()
    store = SqliteStore("operational-db", SqliteStoreConfig(kind="sqlite", path=str(path), tables=[INTEGER_MAPPING]))
    store.open()
    try:
        with pytest.raises(PermanentRecordError):
            store.apply([make_request("1_7")])

        assert store.scan_subject("customer:17") == 1
        assert store.scan_subject("customer:\u0661\u0667") == 0
    finally:
        store.close()


@pytest.mark.parametrize("instant", [
    datetime(2038, 7, 12, 11, 33, 25, 140000, tzinfo=UTC),
    datetime(2004, 8, 14, 4, 46, 36, 666000, tzinfo=UTC),
    datetime(2025, 6, 1, 12, 0, 0, 1000, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC),
])
def test_cutoff_ms_is_exact(instant: datetime) -> None:
    expected = (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

    assert cutoff_ms(make_request("17", instant)) == expected
