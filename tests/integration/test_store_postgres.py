"""PostgresStore against the project's PostgreSQL server: deletes, receipts, column types, counts.

Each test creates and drops its own tables.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.integration.pg_fixtures import (
    CUTOFF,
    CUTOFF_MS,
    PgAdmin,
    add_rows,
    count_executes,
    make_request,
    store_config,
    table_mapping,
)
# Fixtures, imported so that pytest finds them.
from tests.integration.pg_fixtures import open_store, orders, pg_admin, postgres_dsn  # noqa: F401
from tombstone.models import AckStatus
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec
from tombstone.stores import PostgresStore, build_store

pytestmark = pytest.mark.integration


def test_apply_deletes_up_to_cutoff(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, CUTOFF_MS - 5000), (17, CUTOFF_MS), (17, None), (17, CUTOFF_MS + 1), (18, 1)])
    store = open_store(table_mapping(orders))
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 3
    assert outcome.replayed is False
    assert pg_admin.count(orders, "subject_id = 17") == 1
    assert pg_admin.count(orders, "subject_id = 17 AND updated_at_ms = %s", [CUTOFF_MS + 1]) == 1
    assert pg_admin.count(orders, "subject_id = 18") == 1
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_replay_returns_receipt(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1), (17, 2)])
    store = open_store(table_mapping(orders))
    request = make_request("17")
    first = store.apply([request])[request.request_id]
    add_rows(pg_admin, orders, [(17, 3)])  # a late writer, before the cut-off

    replay = store.apply([request])[request.request_id]

    assert first.status is AckStatus.DELETED
    assert first.items_affected == 2
    assert replay.status is AckStatus.DELETED
    assert replay.items_affected == 2
    assert replay.replayed is True
    assert pg_admin.count(orders) == 0


def test_apply_new_request_after_delete_absent(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(table_mapping(orders))
    store.apply([make_request("17")])
    second = make_request("17")

    outcome = store.apply([second])[second.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.items_affected == 0
    assert outcome.replayed is False


def test_apply_only_request_data_class(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    profiles = pg_admin.create_table("profiles", "subject_id bigint, updated_at_ms bigint")
    add_rows(pg_admin, orders, [(17, 1)])
    add_rows(pg_admin, profiles, [(17, 1)])
    store = open_store(table_mapping(orders), table_mapping(profiles, data_class="profile"))
    request = make_request("17", data_class="orders")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert pg_admin.count(orders) == 0
    assert pg_admin.count(profiles) == 1
    assert store.scan_subject("customer:17") == 1


def test_apply_duplicate_subject_attributes_rows(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, CUTOFF_MS - 10), (17, CUTOFF_MS - 5), (17, None), (17, CUTOFF_MS)])
    store = open_store(table_mapping(orders))
    early = make_request("17", cutoff=CUTOFF - timedelta(milliseconds=5))
    late = make_request("17")

    outcomes = store.apply([early, late])

    assert outcomes[early.request_id].items_affected == 3
    assert outcomes[late.request_id].items_affected == 1
    assert pg_admin.count(orders) == 0


def test_apply_batch_one_delete_per_table(pg_admin: PgAdmin, orders: str, open_store,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    statements = pg_admin.create_table("statements", "n int")
    counter = pg_admin.create_function(
        "count_deletes", f"BEGIN INSERT INTO \"{statements}\" VALUES (1); RETURN NULL; END;")
    pg_admin.execute(f'CREATE TRIGGER count_deletes AFTER DELETE ON "{orders}" '
                     f'FOR EACH STATEMENT EXECUTE FUNCTION "{counter}"()')
    add_rows(pg_admin, orders, [(i, 1) for i in range(1, 1001)])
    store = open_store(table_mapping(orders))
    calls = count_executes(monkeypatch, pg_admin)

    store.apply([make_request("5000")])
    single_calls = len(calls)
    pg_admin.execute(f'DELETE FROM "{statements}"')
    outcomes = store.apply([make_request(str(i)) for i in range(1, 501)])
    batch_calls = calls[single_calls:]

    assert len(outcomes) == 500
    assert all(o.status is AckStatus.DELETED and o.items_affected == 1 for o in outcomes.values())
    assert pg_admin.count(statements) == 1
    assert len(batch_calls) == single_calls
    assert sum("DELETE FROM" in call for call in batch_calls) == 1
    assert pg_admin.count(orders) == 500


def test_apply_uuid_column(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("devices", "subject_id uuid, updated_at_ms bigint")
    other_device, requested_device = uuid.uuid4(), uuid.uuid4()
    add_rows(pg_admin, table, [(requested_device, 1), (requested_device, 2), (other_device, 1)])
    store = open_store(table_mapping(table, subject_id_type="text"))
    request = make_request(str(requested_device))

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 2
    assert pg_admin.count(table) == 1
    assert store.scan_subject(f"customer:{other_device}") == 1
    assert store.scan_subject("customer:not-a-uuid") == 0


def test_apply_domain_over_bigint(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    domain = pg_admin.create_domain("customer_ref", "bigint CHECK (VALUE > 0)")
    table = pg_admin.create_table("orders", f'subject_id "{domain}", updated_at_ms bigint')
    add_rows(pg_admin, table, [(17, 1)])
    store = open_store(table_mapping(table))
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert pg_admin.count(table) == 0


def test_apply_timestamptz_updated_at(pg_admin: PgAdmin, open_store,  # noqa: F811
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # the store's session time zone must not matter
    table = pg_admin.create_table("events", "subject_id bigint, changed_at timestamptz")
    cutoff = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    add_rows(pg_admin, table, updated_column="changed_at", rows=[(7, cutoff - timedelta(days=1)), (7, cutoff), (7, None),
                                  (7, cutoff + timedelta(microseconds=1))])
    pg_admin.execute(f"""INSERT INTO "{table}" VALUES (7, '-infinity'), (7, 'infinity')""")
    store = open_store(table_mapping(table, updated_at_column="changed_at"))
    request = make_request("7", cutoff=cutoff.astimezone(timezone(timedelta(hours=-5))))

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 4
    assert pg_admin.count(table, "changed_at > %s", [cutoff]) == 2
    assert pg_admin.count(table) == 2
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_timestamp_read_as_utc(pg_admin: PgAdmin, open_store,  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    table = pg_admin.create_table("events", "subject_id bigint, changed_at timestamp")
    noon = datetime(2025, 3, 1, 12, 0, 0)
    add_rows(pg_admin, table, updated_column="changed_at", rows=[(7, noon), (8, noon)])
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # the store's session time zone must not matter
    store = open_store(table_mapping(table, updated_at_column="changed_at"))
    at_noon_utc = make_request("7", cutoff=noon.replace(tzinfo=UTC))
    at_noon_plus_two = make_request("8", cutoff=noon.replace(tzinfo=timezone(timedelta(hours=2))))

    outcomes = store.apply([at_noon_utc, at_noon_plus_two])

    assert outcomes[at_noon_utc.request_id].items_affected == 1
    assert outcomes[at_noon_plus_two.request_id].status is AckStatus.ABSENT
    assert store.scan_subject("customer:8") == 1


def test_scan_subject_counts_every_table(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    profiles = pg_admin.create_table("profiles", "subject_id bigint, updated_at_ms bigint")
    vendors = pg_admin.create_table("vendors", "subject_id bigint, updated_at_ms bigint")
    add_rows(pg_admin, orders, [(17, 1), (17, CUTOFF_MS + 10**9), (18, 1)])
    add_rows(pg_admin, profiles, [(17, None)])
    add_rows(pg_admin, vendors, [(17, 1)])
    store = open_store(table_mapping(orders), table_mapping(orders, data_class="billing"), table_mapping(profiles, data_class="profile"),
                       table_mapping(vendors, subject_type="vendor"))

    assert store.scan_subject("customer:17") == 3
    assert store.scan_subject("vendor:17") == 1
    assert store.scan_subject("customer:1_7") == 0


def test_count_remaining_before_and_after(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1), (17, 2), (17, CUTOFF_MS + 1), (18, 1)])
    store = open_store(table_mapping(orders))
    requests = [make_request("17"), make_request("18"), make_request("19")]

    before = store.count_remaining(requests)
    store.apply(requests)
    after = store.count_remaining(requests)

    assert list(before.values()) == [2, 1, 0]
    assert list(after.values()) == [0, 0, 0]


def test_apply_concurrent_receipt_wins(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(table_mapping(orders))
    request = make_request("17")
    # The trigger writes a receipt during the delete, as a concurrent worker would between
    # this apply's receipt lookup and its receipt insert.
    writer = pg_admin.create_function(
        "receipt", f"BEGIN INSERT INTO tombstone_receipts VALUES ('{request.request_id}', '{store.name}', "
                   "'ABSENT', 0, now()); RETURN NULL; END;")
    pg_admin.execute(f'CREATE TRIGGER receipt AFTER DELETE ON "{orders}" FOR EACH STATEMENT '
                     f'EXECUTE FUNCTION "{writer}"()')

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.replayed is True


def test_build_store_postgresql(postgres_dsn: str, tmp_path) -> None:  # noqa: F811
    config = store_config(postgres_dsn, [table_mapping("orders")])
    spec = ConsumerSpec(name="pg", data_classes=["orders"], state_dir=str(tmp_path), store=config.model_dump())

    built = build_store(spec, KafkaSettings())

    assert type(built) is PostgresStore
    assert built.name == "pg"

