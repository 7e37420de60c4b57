"""DuckdbStore against a real DuckDB file in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tombstone.errors import ConfigError, PermanentRecordError, StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import DuckdbStoreConfig, TableMapping
from tombstone.stores.duckdb import DuckdbStore

CUTOFF_MS = 1_700_000_000_000


def at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def make_request(subject_id: str, data_class: str = "orders", cutoff: int = CUTOFF_MS,
                 subject_type: str = "customer") -> DeletionRequest:
    return DeletionRequest(
        subject_type=subject_type, subject_id=subject_id, data_class=data_class,
        reason="user_request", requested_by="test", cutoff_at=at_ms(cutoff),
    )


@pytest.fixture
def config(tmp_path: Path) -> DuckdbStoreConfig:
    return DuckdbStoreConfig(
        kind="duckdb",
        path=str(tmp_path / "warehouse.duckdb"),
        tables=[
            TableMapping(table="orders", data_class="orders", subject_type="customer",
                         subject_column="customer_id", subject_id_type="integer"),
            TableMapping(table="order_lines", data_class="orders", subject_type="customer",
                         subject_column="customer_id", subject_id_type="integer"),
            TableMapping(table="profiles", data_class="profile", subject_type="customer",
                         subject_column="customer_key", updated_at_column="changed_ms"),
        ],
    )


@pytest.fixture
def store(config: DuckdbStoreConfig):
    setup = duckdb.connect(config.path)
    setup.execute("CREATE TABLE orders (customer_id BIGINT, updated_at_ms BIGINT, amount INTEGER)")
    setup.execute("CREATE TABLE order_lines (customer_id BIGINT, updated_at_ms BIGINT, sku VARCHAR)")
    setup.execute("CREATE TABLE profiles (customer_key VARCHAR, changed_ms BIGINT, email VARCHAR)")
    setup.close()
    store = DuckdbStore("warehouse", config)
    store.open()
    yield store
    store.close()


def add_orders(store: DuckdbStore, customer_id: int, *updated_at_ms: int) -> None:
    for updated in updated_at_ms:
        store.db.execute("INSERT INTO orders VALUES (?, ?, 1)", [customer_id, updated])


def count_rows(store: DuckdbStore, table: str, where: str = "true") -> int:
    return store.db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


def test_apply_deletes_rows_at_and_before_cutoff(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 5000, CUTOFF_MS)
    store.db.execute("INSERT INTO order_lines VALUES (17, ?, 'a')", [CUTOFF_MS - 1])
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 3
    assert outcome.replayed is False
    assert count_rows(store, "orders") == 0
    assert count_rows(store, "order_lines") == 0


def test_apply_keeps_rows_after_cutoff(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1, CUTOFF_MS + 1)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert count_rows(store, "orders", f"updated_at_ms = {CUTOFF_MS + 1}") == 1


def test_apply_keeps_other_subjects(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    add_orders(store, 18, CUTOFF_MS - 1)

    store.apply([make_request("17")])

    assert count_rows(store, "orders", "customer_id = 18") == 1


def test_apply_replay_returns_receipt(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 2, CUTOFF_MS - 1)
    request = make_request("17")
    first = store.apply([request])[request.request_id]

    second = store.apply([request])[request.request_id]

    assert second.replayed is True
    assert second.status is first.status
    assert second.items_affected == first.items_affected == 2


def test_apply_replay_deletes_rows_written_since(store: DuckdbStore) -> None:
    request = make_request("17")
    store.apply([request])
    add_orders(store, 17, CUTOFF_MS - 1)

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.replayed is True
    assert count_rows(store, "orders") == 0


def test_open_rejects_missing_column(tmp_path) -> None:
    config = DuckdbStoreConfig(kind="duckdb", path=str(tmp_path / "w.duckdb"), tables=[
        TableMapping(table="orders", data_class="orders", subject_type="customer", subject_column="customer_id")])
    setup = duckdb.connect(config.path)
    setup.execute("CREATE TABLE orders (customer_id BIGINT, amount INTEGER)")
    setup.close()

    with pytest.raises(ConfigError, match="no column updated_at_ms"):
        DuckdbStore("warehouse", config).open()


def test_open_rejects_missing_table(tmp_path) -> None:
    config = DuckdbStoreConfig(kind="duckdb", path=str(tmp_path / "w.duckdb"), tables=[
        TableMapping(table="orders", data_class="orders", subject_type="customer", subject_column="customer_id")])

    with pytest.raises(ConfigError, match="table orders does not exist"):
        DuckdbStore("warehouse", config).open()


def test_apply_receipt_survives_reopen(store: DuckdbStore, config: DuckdbStoreConfig) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    request = make_request("17")
    store.apply([request])
    store.close()
    store.open()

    outcome = store.apply([request])[request.request_id]

    assert outcome.replayed is True
    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 1


def test_apply_new_request_after_delete_is_absent(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    store.apply([make_request("17")])
    again = make_request("17")

    outcome = store.apply([again])[again.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.items_affected == 0
    assert outcome.replayed is False


def test_count_remaining_zero_after_apply(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1, CUTOFF_MS + 1)
    store.db.execute("INSERT INTO profiles VALUES ('17', ?, 'a@example.com')", [CUTOFF_MS])
    orders, profile = make_request("17"), make_request("17", "profile")
    before = store.count_remaining([orders, profile])

    store.apply([orders, profile])

    assert before == {orders.request_id: 1, profile.request_id: 1}
    assert store.count_remaining([orders, profile]) == {orders.request_id: 0, profile.request_id: 0}


def test_apply_deletes_only_request_data_class(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    store.db.execute("INSERT INTO profiles VALUES ('17', ?, 'a@example.com')", [CUTOFF_MS - 1])
    request = make_request("17", "profile")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert count_rows(store, "profiles") == 0
    assert count_rows(store, "orders") == 1


def test_apply_ignores_other_subject_type(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    request = make_request("17", subject_type="supplier")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert count_rows(store, "orders") == 1


def test_apply_batch_of_many_requests(store: DuckdbStore) -> None:
    store.db.execute(
        "INSERT INTO orders SELECT i // 3, ? + (i % 3) - 1, 1 FROM range(600) t(i)", [CUTOFF_MS]
    )
    requests = [make_request(str(customer)) for customer in range(200)]

    outcomes = store.apply(requests)

    # Each customer has rows at cut-off -1, 0 and +1: two are deleted, one stays.
    assert {o.items_affected for o in outcomes.values()} == {2}
    assert len(outcomes) == 200
    assert count_rows(store, "orders") == 200
    assert set(store.count_remaining(requests).values()) == {0}


def test_apply_batch_counts_each_row_once(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 20, CUTOFF_MS - 10, CUTOFF_MS)
    early, late = make_request("17", cutoff=CUTOFF_MS - 10), make_request("17")

    outcomes = store.apply([early, late])

    assert outcomes[early.request_id].items_affected == 2
    assert outcomes[late.request_id].items_affected == 1


def test_apply_batch_later_request_first_takes_all(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 20, CUTOFF_MS)
    early, late = make_request("17", cutoff=CUTOFF_MS - 10), make_request("17")

    outcomes = store.apply([late, early])

    assert outcomes[late.request_id].items_affected == 2
    assert outcomes[early.request_id].status is AckStatus.ABSENT


def test_apply_duplicate_request_in_batch(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    request = make_request("17")

    outcomes = store.apply([request, request])

    assert outcomes[request.request_id].items_affected == 1


@pytest.mark.parametrize("subject_id", ["abc", "1_7", "+17", "017", "\u0661\u0667", "9" * 20])
def test_apply_rejects_bad_integer_subject_id(store: DuckdbStore, subject_id: str) -> None:
    request = make_request(subject_id)

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.request_id == request.request_id
    assert caught.value.reason == "subject_id_type"


def test_apply_rejection_applies_nothing(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    good, bad = make_request("17"), make_request("1_7")

    with pytest.raises(PermanentRecordError):
        store.apply([good, bad])

    assert count_rows(store, "orders") == 1
    assert count_rows(store, "tombstone_receipts") == 0


def test_apply_text_column_accepts_any_subject_id(store: DuckdbStore) -> None:
    store.db.execute("INSERT INTO profiles VALUES ('ab-7', ?, 'a@example.com')", [CUTOFF_MS - 1])
    request = make_request("ab-7", "profile")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1


def test_scan_subject_counts_everything(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1, CUTOFF_MS + 1)
    store.db.execute("INSERT INTO order_lines VALUES (17, ?, 'a')", [CUTOFF_MS + 5])
    store.db.execute("INSERT INTO profiles VALUES ('17', NULL, 'a@example.com')")
    add_orders(store, 18, CUTOFF_MS - 1)

    assert store.scan_subject("customer:17") == 4


def test_scan_subject_skips_unbindable_id(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)

    assert store.scan_subject("customer:1_7") == 0


def test_apply_write_conflict_is_unavailable(store: DuckdbStore) -> None:
    add_orders(store, 17, CUTOFF_MS - 1)
    other = store.db.cursor()
    other.execute("BEGIN TRANSACTION")
    other.execute("DELETE FROM orders WHERE customer_id = 17")
    request = make_request("17")

    with pytest.raises(StoreUnavailableError):
        store.apply([request])
    other.execute("ROLLBACK")
    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert outcome.replayed is False


def test_open_locked_file_is_unavailable(config: DuckdbStoreConfig) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys\n"
         f"db = duckdb.connect({config.path!r})\n"
         "print('ready', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        store = DuckdbStore("warehouse", config)

        with pytest.raises(StoreUnavailableError):
            store.open()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
