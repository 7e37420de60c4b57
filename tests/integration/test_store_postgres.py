"""PostgresStore against the project's PostgreSQL server; each test creates and drops its tables."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from tests.integration.pg_fixtures import PgAdmin, pg_admin, postgres_dsn, store_config  # noqa: F401
from tombstone.errors import ConfigError, PermanentRecordError, StoreError, StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec, TableMapping
from tombstone.stores import PostgresStore, build_store

pytestmark = pytest.mark.integration

CUTOFF_MS = 1_700_000_000_000
CUTOFF = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=CUTOFF_MS)


def make_request(subject_id: str, data_class: str = "orders", cutoff: datetime = CUTOFF,
                 subject_type: str = "customer") -> DeletionRequest:
    return DeletionRequest(subject_type=subject_type, subject_id=subject_id, data_class=data_class,
                           reason="user_request", requested_by="test", cutoff_at=cutoff)


def mapping(table: str, subject_id_type: str = "integer", data_class: str = "orders",
            updated_at_column: str = "updated_at_ms", subject_type: str = "customer") -> TableMapping:
    return TableMapping(table=table, data_class=data_class, subject_type=subject_type, subject_column="subject_id",
                        subject_id_type=subject_id_type, updated_at_column=updated_at_column)


@pytest.fixture
def open_store(pg_admin: PgAdmin, postgres_dsn: str) -> Iterator[Callable[..., PostgresStore]]:  # noqa: F811
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
    return pg_admin.create_table("orders", "subject_id bigint, updated_at_ms bigint, amount int")


def add_rows(admin: PgAdmin, table: str, rows: list[tuple[Any, Any]]) -> None:
    admin.conn.cursor().executemany(
        psycopg.sql.SQL("INSERT INTO {} (subject_id, updated_at_ms) VALUES (%s, %s)").format(
            psycopg.sql.Identifier(table)), rows)


def backend_state(admin: PgAdmin, store: PostgresStore) -> str:
    return admin.execute("SELECT state FROM pg_stat_activity WHERE application_name = %s",
                         [f"tombstone-{store.name}"])[0][0]


def test_apply_deletes_up_to_cutoff(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, CUTOFF_MS - 5000), (17, CUTOFF_MS), (17, None), (17, CUTOFF_MS + 1), (18, 1)])
    store = open_store(mapping(orders))
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
    store = open_store(mapping(orders))
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
    store = open_store(mapping(orders))
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
    store = open_store(mapping(orders), mapping(profiles, data_class="profile"))
    request = make_request("17", data_class="orders")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert pg_admin.count(orders) == 0
    assert pg_admin.count(profiles) == 1
    assert store.scan_subject("customer:17") == 1


def test_apply_duplicate_subject_attributes_rows(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, CUTOFF_MS - 10), (17, CUTOFF_MS - 5), (17, None), (17, CUTOFF_MS)])
    store = open_store(mapping(orders))
    early = make_request("17", cutoff=CUTOFF - timedelta(milliseconds=5))
    late = make_request("17")

    outcomes = store.apply([early, late])

    assert outcomes[early.request_id].items_affected == 3
    assert outcomes[late.request_id].items_affected == 1
    assert pg_admin.count(orders) == 0


def _count_executes(monkeypatch: pytest.MonkeyPatch, admin: PgAdmin) -> list[str]:
    """Record the statements that connections other than the admin's execute."""
    calls: list[str] = []
    original = psycopg.Connection.execute

    def counting(self: psycopg.Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
        if self is not admin.conn:
            calls.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    return calls


def test_apply_batch_one_delete_per_table(pg_admin: PgAdmin, orders: str, open_store,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    statements = pg_admin.create_table("statements", "n int")
    counter = pg_admin.create_function(
        "count_deletes", f"BEGIN INSERT INTO \"{statements}\" VALUES (1); RETURN NULL; END;")
    pg_admin.execute(f'CREATE TRIGGER count_deletes AFTER DELETE ON "{orders}" '
                     f'FOR EACH STATEMENT EXECUTE FUNCTION "{counter}"()')
    add_rows(pg_admin, orders, [(i, 1) for i in range(1, 1001)])
    store = open_store(mapping(orders))
    calls = _count_executes(monkeypatch, pg_admin)

    store.apply([make_request("5000")])
    single_calls = len(calls)
    pg_admin.execute(f'DELETE FROM "{statements}"')
    outcomes = store.apply([make_request(str(i)) for i in range(1, 501)])

    assert len(outcomes) == 500
    assert all(o.status is AckStatus.DELETED and o.items_affected == 1 for o in outcomes.values())
    assert pg_admin.count(statements) == 1
    assert len(calls) == 2 * single_calls
    assert sum("DELETE FROM" in call for call in calls[single_calls:]) == 1
    assert pg_admin.count(orders) == 500


@pytest.mark.parametrize("subject_id", ["1_7", "abc", "+17", "017", "-0", str(2**63)])
def test_apply_integer_rejects_bad_id(subject_id: str, pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(mapping(orders))
    good, bad = make_request("17"), make_request(subject_id)

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([good, bad])

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == bad.request_id
    assert pg_admin.count(orders) == 1
    assert store.apply([good])[good.request_id].items_affected == 1


def test_apply_int4_rejects_out_of_range(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("small", "subject_id integer, updated_at_ms bigint")
    store = open_store(mapping(table))
    request = make_request(str(2**31))

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == request.request_id
    assert "32-bit" in str(caught.value)


def test_apply_nul_rejected_before_database(pg_admin: PgAdmin, open_store,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    table = pg_admin.create_table("names", "subject_id text, updated_at_ms bigint")
    store = open_store(mapping(table, subject_id_type="text"))
    # The model rejects NUL, so only a request built without validation can carry one.
    request = make_request("x").model_copy(update={"subject_id": "a\x00b"})
    calls = _count_executes(monkeypatch, pg_admin)

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_nul"
    assert caught.value.request_id == request.request_id
    assert calls == []
    assert store.scan_subject("customer:a\x00b") == 0


def test_open_spec_text_real_bigint(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as caught:
        open_store(mapping(orders, subject_id_type="text"))

    message = str(caught.value)
    assert f"{orders}.subject_id" in message
    assert "bigint" in message
    assert 'subject_id_type = "text"' in message


def test_open_spec_integer_real_text(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("names", "subject_id varchar(40), updated_at_ms bigint")

    with pytest.raises(ConfigError) as caught:
        open_store(mapping(table, subject_id_type="integer"))

    assert f"{table}.subject_id" in str(caught.value)
    assert "character varying" in str(caught.value)


@pytest.mark.parametrize("columns, expected", [
    ("subject_id numeric, updated_at_ms bigint", "numeric"),
    ("subject_id char(8), updated_at_ms bigint", "character"),
    ("subject_id bigint, updated_at_ms text", "text"),
    ("subject_id bigint", "updated_at_ms was not found"),
])
def test_open_unsupported_column(columns: str, expected: str, pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("odd", columns)

    with pytest.raises(ConfigError) as caught:
        open_store(mapping(table, subject_id_type="text" if "char" in columns else "integer"))

    assert table in str(caught.value)
    assert expected in str(caught.value)


def test_open_missing_table(open_store) -> None:
    with pytest.raises(ConfigError, match="not found"):
        open_store(mapping(f"missing_{uuid.uuid4().hex[:8]}"))


def test_open_citext_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    pg_admin.execute("CREATE EXTENSION IF NOT EXISTS citext")
    table = pg_admin.create_table("emails", "subject_id citext, updated_at_ms bigint")

    with pytest.raises(ConfigError) as caught:
        open_store(mapping(table, subject_id_type="text"))

    assert f"{table}.subject_id is citext" in str(caught.value)


def test_open_nondeterministic_collation_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    collation = pg_admin.create_collation("ci", "provider = icu, locale = 'und-u-ks-level2', deterministic = false")
    table = pg_admin.create_table("emails", f'subject_id text COLLATE "{collation}", updated_at_ms bigint')

    with pytest.raises(ConfigError) as caught:
        open_store(mapping(table, subject_id_type="text"))

    assert f"{table}.subject_id has a nondeterministic collation" in str(caught.value)


def test_apply_case_variant_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("emails", "subject_id text, updated_at_ms bigint")
    add_rows(pg_admin, table, [("Alice@Example.com", 1), ("bob@example.com", 1), ("BOB@example.com", 1)])
    store = open_store(mapping(table, subject_id_type="text"))
    lower, exact = make_request("alice@example.com"), make_request("Alice@Example.com")

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([exact, lower])

    assert caught.value.reason == "subject_id_case"
    assert caught.value.request_id == lower.request_id
    assert "alice" not in str(caught.value).lower()
    assert pg_admin.count(table) == 3
    assert backend_state(pg_admin, store) == "idle"
    assert store.apply([exact])[exact.request_id].items_affected == 1


def test_apply_case_variant_both_spellings_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("emails", "subject_id text, updated_at_ms bigint")
    add_rows(pg_admin, table, [("bob@example.com", 1), ("BOB@example.com", 1)])
    store = open_store(mapping(table, subject_id_type="text"))
    request = make_request("bob@example.com")

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_case"
    assert pg_admin.count(table) == 2


def test_apply_case_variant_after_cutoff_ignored(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("emails", "subject_id varchar(64), updated_at_ms bigint")
    add_rows(pg_admin, table, [("carol", 1), ("Carol", CUTOFF_MS + 1)])
    store = open_store(mapping(table, subject_id_type="text"))
    request = make_request("carol")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert pg_admin.count(table) == 1


def test_apply_uuid_column(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("devices", "subject_id uuid, updated_at_ms bigint")
    kept, gone = uuid.uuid4(), uuid.uuid4()
    add_rows(pg_admin, table, [(gone, 1), (gone, 2), (kept, 1)])
    store = open_store(mapping(table, subject_id_type="text"))
    request = make_request(str(gone))

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 2
    assert pg_admin.count(table) == 1
    assert store.scan_subject(f"customer:{kept}") == 1
    assert store.scan_subject("customer:not-a-uuid") == 0


@pytest.mark.parametrize("spelling", [
    lambda u: str(u).upper(), lambda u: u.hex, lambda u: f"{{{u}}}", lambda u: f"urn:uuid:{u}",
    lambda u: "not-a-uuid", lambda u: str(u)[:-1],
])
def test_apply_uuid_rejects_other_spelling(spelling: Callable[[uuid.UUID], str], pg_admin: PgAdmin,  # noqa: F811
                                           open_store) -> None:
    table = pg_admin.create_table("devices", "subject_id uuid, updated_at_ms bigint")
    value = uuid.uuid4()
    add_rows(pg_admin, table, [(value, 1)])
    store = open_store(mapping(table, subject_id_type="text"))
    request = make_request(spelling(value))

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == request.request_id
    assert pg_admin.count(table) == 1


def test_open_uuid_with_integer_spec(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("devices", "subject_id uuid, updated_at_ms bigint")

    with pytest.raises(ConfigError, match='Set subject_id_type = "text"'):
        open_store(mapping(table, subject_id_type="integer"))


def test_apply_timestamptz_updated_at(pg_admin: PgAdmin, open_store,  # noqa: F811
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # the store's session time zone must not matter
    table = pg_admin.create_table("events", "subject_id bigint, changed_at timestamptz")
    cutoff = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    add_rows_at(pg_admin, table, [(7, cutoff - timedelta(days=1)), (7, cutoff), (7, None),
                                  (7, cutoff + timedelta(microseconds=1))])
    store = open_store(mapping(table, updated_at_column="changed_at"))
    request = make_request("7", cutoff=cutoff.astimezone(timezone(timedelta(hours=-5))))

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 3
    assert pg_admin.count(table, "changed_at > %s", [cutoff]) == 1
    assert pg_admin.count(table) == 1
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_timestamp_read_as_utc(pg_admin: PgAdmin, open_store,  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    table = pg_admin.create_table("events", "subject_id bigint, changed_at timestamp")
    noon = datetime(2025, 3, 1, 12, 0, 0)
    add_rows_at(pg_admin, table, [(7, noon), (8, noon)])
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # the store's session time zone must not matter
    store = open_store(mapping(table, updated_at_column="changed_at"))
    at_noon_utc = make_request("7", cutoff=noon.replace(tzinfo=UTC))
    at_noon_plus_two = make_request("8", cutoff=noon.replace(tzinfo=timezone(timedelta(hours=2))))

    outcomes = store.apply([at_noon_utc, at_noon_plus_two])

    assert outcomes[at_noon_utc.request_id].items_affected == 1
    assert outcomes[at_noon_plus_two.request_id].status is AckStatus.ABSENT
    assert store.scan_subject("customer:8") == 1


def add_rows_at(admin: PgAdmin, table: str, rows: list[tuple[Any, Any]]) -> None:
    admin.conn.cursor().executemany(
        psycopg.sql.SQL("INSERT INTO {} (subject_id, changed_at) VALUES (%s, %s)").format(
            psycopg.sql.Identifier(table)), rows)


def test_scan_subject_counts_every_table(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    profiles = pg_admin.create_table("profiles", "subject_id bigint, updated_at_ms bigint")
    vendors = pg_admin.create_table("vendors", "subject_id bigint, updated_at_ms bigint")
    add_rows(pg_admin, orders, [(17, 1), (17, CUTOFF_MS + 10**9), (18, 1)])
    add_rows(pg_admin, profiles, [(17, None)])
    add_rows(pg_admin, vendors, [(17, 1)])
    store = open_store(mapping(orders), mapping(orders, data_class="billing"), mapping(profiles, data_class="profile"),
                       mapping(vendors, subject_type="vendor"))

    assert store.scan_subject("customer:17") == 3
    assert store.scan_subject("vendor:17") == 1
    assert store.scan_subject("customer:1_7") == 0


def test_count_remaining_before_and_after(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1), (17, 2), (17, CUTOFF_MS + 1), (18, 1)])
    store = open_store(mapping(orders))
    requests = [make_request("17"), make_request("18"), make_request("19")]

    before = store.count_remaining(requests)
    store.apply(requests)
    after = store.count_remaining(requests)

    assert list(before.values()) == [2, 1, 0]
    assert list(after.values()) == [0, 0, 0]


def test_apply_data_error_rejects_request(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    guard = pg_admin.create_function(
        "guard", "BEGIN IF OLD.subject_id = 13 THEN RAISE EXCEPTION 'held' USING ERRCODE = '22023'; END IF; "
                 "RETURN OLD; END;")
    pg_admin.execute(f'CREATE TRIGGER guard BEFORE DELETE ON "{orders}" FOR EACH ROW EXECUTE FUNCTION "{guard}"()')
    add_rows(pg_admin, orders, [(12, 1), (13, 1), (14, 1)])
    store = open_store(mapping(orders))
    requests = [make_request("12"), make_request("13"), make_request("14")]

    with pytest.raises(PermanentRecordError) as caught:
        store.apply(requests)

    assert caught.value.reason == "invalid_value"
    assert caught.value.request_id == requests[1].request_id
    assert "SQLSTATE 22023" in str(caught.value)
    assert pg_admin.count(orders) == 3
    assert backend_state(pg_admin, store) == "idle"
    outcomes = store.apply([requests[0], requests[2]])
    assert [o.items_affected for o in outcomes.values()] == [1, 1]


def test_apply_foreign_key_rejects_request(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    customers = pg_admin.create_table("customers", "subject_id bigint PRIMARY KEY, updated_at_ms bigint")
    invoices = pg_admin.create_table("invoices", f'ref bigint REFERENCES "{customers}"')
    add_rows(pg_admin, customers, [(1, 1), (2, 1)])
    pg_admin.execute(f'INSERT INTO "{invoices}" VALUES (2)')
    store = open_store(mapping(customers))
    requests = [make_request("1"), make_request("2")]

    with pytest.raises(PermanentRecordError) as caught:
        store.apply(requests)

    assert caught.value.reason == "constraint_violation"
    assert caught.value.request_id == requests[1].request_id
    assert "Key (" not in str(caught.value)
    assert pg_admin.count(customers) == 2


def test_apply_batch_only_data_error_stops(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    guard = pg_admin.create_function(
        "guard", "BEGIN IF (SELECT count(*) FROM gone) > 1 THEN "
                 "RAISE EXCEPTION 'one row at a time' USING ERRCODE = '22023'; END IF; RETURN NULL; END;")
    pg_admin.execute(f'CREATE TRIGGER guard AFTER DELETE ON "{orders}" REFERENCING OLD TABLE AS gone '
                     f'FOR EACH STATEMENT EXECUTE FUNCTION "{guard}"()')
    add_rows(pg_admin, orders, [(12, 1), (13, 1)])
    store = open_store(mapping(orders))

    with pytest.raises(StoreError) as caught:
        store.apply([make_request("12"), make_request("13")])

    assert type(caught.value) is StoreError
    assert "no single request reproduces it" in str(caught.value)
    assert pg_admin.count(orders) == 2


def test_apply_statement_timeout_unavailable(pg_admin: PgAdmin, orders: str, open_store,  # noqa: F811
                                             postgres_dsn: str) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(mapping(orders), statement_timeout_s=0.5)
    request = make_request("17")
    with psycopg.connect(postgres_dsn) as locker:
        locker.execute(f'LOCK TABLE "{orders}" IN ACCESS EXCLUSIVE MODE')

        with pytest.raises(StoreUnavailableError, match="statement timeout"):
            store.apply([request])
        assert backend_state(pg_admin, store) == "idle"
        locker.rollback()

    assert store.apply([request])[request.request_id].items_affected == 1


def test_apply_reconnects_after_backend_killed(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(mapping(orders))
    request = make_request("17")
    pg_admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                     [f"tombstone-{store.name}"])

    with pytest.raises(StoreUnavailableError):
        store.apply([request])
    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert pg_admin.count(orders) == 0


def test_open_unreachable_unavailable(postgres_dsn: str) -> None:  # noqa: F811
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = store_config(postgres_dsn, [mapping("orders")]).model_copy(update={"port": port})
    store = PostgresStore("unreachable", config)

    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        store.open()
    with pytest.raises(RuntimeError, match="not open"):
        store.apply([make_request("17")])


def test_apply_concurrent_receipt_wins(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(mapping(orders))
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
    config = store_config(postgres_dsn, [mapping("orders")])
    spec = ConsumerSpec(name="pg", data_classes=["orders"], state_dir=str(tmp_path), store=config.model_dump())

    built = build_store(spec, KafkaSettings())

    assert type(built) is PostgresStore
    assert built.name == "pg"
