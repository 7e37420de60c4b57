"""PostgresStore errors: configuration checked at open, rejected requests, outages.

Each test creates and drops its own tables.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import psycopg
import pytest

from tests.integration.pg_fixtures import (
    CUTOFF_MS,
    PgAdmin,
    add_rows,
    backend_state,
    count_executes,
    make_request,
    store_config,
    table_mapping,
)
# Fixtures, imported so that pytest finds them.
from tests.integration.pg_fixtures import open_store, orders, pg_admin, postgres_dsn  # noqa: F401
from tombstone.errors import ConfigError, PermanentRecordError, StoreError, StoreUnavailableError
from tombstone.stores import PostgresStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("subject_id", ["1_7", "abc", "+17", "017", "-0", str(2**63)])
def test_apply_integer_rejects_bad_id(subject_id: str, pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(table_mapping(orders))
    good, bad = make_request("17"), make_request(subject_id)

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([good, bad])

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == bad.request_id
    assert pg_admin.count(orders) == 1
    assert store.apply([good])[good.request_id].items_affected == 1


def test_apply_int4_rejects_out_of_range(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("small", "subject_id integer, updated_at_ms bigint")
    store = open_store(table_mapping(table))
    request = make_request(str(2**31))

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == request.request_id
    assert "32-bit" in str(caught.value)


def test_apply_nul_rejected_before_database(pg_admin: PgAdmin, open_store,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    table = pg_admin.create_table("names", "subject_id text, updated_at_ms bigint")
    store = open_store(table_mapping(table, subject_id_type="text"))
    # The model rejects NUL, so only a request built without validation can carry one.
    request = make_request("x").model_copy(update={"subject_id": "a\x00b"})
    calls = count_executes(monkeypatch, pg_admin)

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_nul"
    assert caught.value.request_id == request.request_id
    assert calls == []
    assert store.scan_subject("customer:a\x00b") == 0


def test_open_spec_text_real_bigint(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as caught:
        open_store(table_mapping(orders, subject_id_type="text"))

    message = str(caught.value)
    assert f"{orders}.subject_id" in message
    assert "bigint" in message
    assert 'subject_id_type = "text"' in message


def test_open_spec_integer_real_text(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("names", "subject_id varchar(40), updated_at_ms bigint")

    with pytest.raises(ConfigError) as caught:
        open_store(table_mapping(table, subject_id_type="integer"))

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
        open_store(table_mapping(table, subject_id_type="text" if "char" in columns else "integer"))

    assert table in str(caught.value)
    assert expected in str(caught.value)


def test_open_missing_table(open_store) -> None:
    with pytest.raises(ConfigError, match="not found"):
        open_store(table_mapping(f"missing_{uuid.uuid4().hex[:8]}"))


def test_open_without_delete_privilege(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    pg_admin.execute(f'REVOKE DELETE ON "{orders}" FROM CURRENT_USER')

    with pytest.raises(ConfigError, match=f"may not delete from table {orders}"):
        open_store(table_mapping(orders))


def test_open_citext_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    pg_admin.execute("CREATE EXTENSION IF NOT EXISTS citext")
    table = pg_admin.create_table("emails", "subject_id citext, updated_at_ms bigint")

    with pytest.raises(ConfigError) as caught:
        open_store(table_mapping(table, subject_id_type="text"))

    assert f"{table}.subject_id is citext" in str(caught.value)


def test_open_nondeterministic_collation_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    collation = pg_admin.create_collation("ci", "provider = icu, locale = 'und-u-ks-level2', deterministic = false")
    table = pg_admin.create_table("emails", f'subject_id text COLLATE "{collation}", updated_at_ms bigint')

    with pytest.raises(ConfigError) as caught:
        open_store(table_mapping(table, subject_id_type="text"))

    assert f"{table}.subject_id has a nondeterministic collation" in str(caught.value)


def test_apply_case_variant_rejected(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("emails", "subject_id text, updated_at_ms bigint")
    add_rows(pg_admin, table, [("Alice@Example.com", 1), ("bob@example.com", 1), ("BOB@example.com", 1)])
    store = open_store(table_mapping(table, subject_id_type="text"))
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
    store = open_store(table_mapping(table, subject_id_type="text"))
    request = make_request("bob@example.com")

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_case"
    assert pg_admin.count(table) == 2


def test_apply_case_variant_after_cutoff_ignored(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("emails", "subject_id varchar(64), updated_at_ms bigint")
    add_rows(pg_admin, table, [("carol", 1), ("Carol", CUTOFF_MS + 1)])
    store = open_store(table_mapping(table, subject_id_type="text"))
    request = make_request("carol")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert pg_admin.count(table) == 1


@pytest.mark.parametrize("spelling", [
    lambda u: str(u).upper(), lambda u: u.hex, lambda u: f"{{{u}}}", lambda u: f"urn:uuid:{u}",
    lambda u: "not-a-uuid", lambda u: str(u)[:-1],
])
def test_apply_uuid_rejects_other_spelling(spelling: Callable[[uuid.UUID], str], pg_admin: PgAdmin,  # noqa: F811
                                           open_store) -> None:
    table = pg_admin.create_table("devices", "subject_id uuid, updated_at_ms bigint")
    value = uuid.uuid4()
    add_rows(pg_admin, table, [(value, 1)])
    store = open_store(table_mapping(table, subject_id_type="text"))
    request = make_request(spelling(value))

    with pytest.raises(PermanentRecordError) as caught:
        store.apply([request])

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == request.request_id
    assert pg_admin.count(table) == 1


def test_open_uuid_with_integer_spec(pg_admin: PgAdmin, open_store) -> None:  # noqa: F811
    table = pg_admin.create_table("devices", "subject_id uuid, updated_at_ms bigint")

    with pytest.raises(ConfigError, match='Set subject_id_type = "text"'):
        open_store(table_mapping(table, subject_id_type="integer"))


def test_apply_data_error_rejects_request(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    guard = pg_admin.create_function(
        "guard", "BEGIN IF OLD.subject_id = 13 THEN RAISE EXCEPTION 'held' USING ERRCODE = '22023'; END IF; "
                 "RETURN OLD; END;")
    pg_admin.execute(f'CREATE TRIGGER guard BEFORE DELETE ON "{orders}" FOR EACH ROW EXECUTE FUNCTION "{guard}"()')
    add_rows(pg_admin, orders, [(12, 1), (13, 1), (14, 1)])
    store = open_store(table_mapping(orders))
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
    store = open_store(table_mapping(customers))
    requests = [make_request("1"), make_request("2")]

    with pytest.raises(PermanentRecordError) as caught:
        store.apply(requests)

    assert caught.value.reason == "constraint_violation"
    assert caught.value.request_id == requests[1].request_id
    assert "Key (" not in str(caught.value)
    assert pg_admin.count(customers) == 2


def test_apply_trigger_exception_rejects_request(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    hold = pg_admin.create_function(
        "legal_hold", "BEGIN IF OLD.subject_id = 13 THEN RAISE EXCEPTION 'under legal hold'; END IF; "
                      "RETURN OLD; END;")
    pg_admin.execute(f'CREATE TRIGGER hold BEFORE DELETE ON "{orders}" FOR EACH ROW EXECUTE FUNCTION "{hold}"()')
    add_rows(pg_admin, orders, [(12, 1), (13, 1)])
    store = open_store(table_mapping(orders))
    requests = [make_request("12"), make_request("13")]

    with pytest.raises(PermanentRecordError) as caught:
        store.apply(requests)

    assert caught.value.reason == "trigger_rejected"
    assert caught.value.request_id == requests[1].request_id
    assert "SQLSTATE P0001" in str(caught.value)
    assert pg_admin.count(orders) == 2


def test_apply_batch_only_data_error_stops(pg_admin: PgAdmin, orders: str, open_store) -> None:  # noqa: F811
    guard = pg_admin.create_function(
        "guard", "BEGIN IF (SELECT count(*) FROM gone) > 1 THEN "
                 "RAISE EXCEPTION 'one row at a time' USING ERRCODE = '22023'; END IF; RETURN NULL; END;")
    pg_admin.execute(f'CREATE TRIGGER guard AFTER DELETE ON "{orders}" REFERENCING OLD TABLE AS gone '
                     f'FOR EACH STATEMENT EXECUTE FUNCTION "{guard}"()')
    add_rows(pg_admin, orders, [(12, 1), (13, 1)])
    store = open_store(table_mapping(orders))

    with pytest.raises(StoreError) as caught:
        store.apply([make_request("12"), make_request("13")])

    assert type(caught.value) is StoreError
    assert "no single request reproduces it" in str(caught.value)
    assert pg_admin.count(orders) == 2


def test_apply_statement_timeout_unavailable(pg_admin: PgAdmin, orders: str, open_store,  # noqa: F811
                                             postgres_dsn: str) -> None:  # noqa: F811
    add_rows(pg_admin, orders, [(17, 1)])
    store = open_store(table_mapping(orders), statement_timeout_s=0.5)
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
    store = open_store(table_mapping(orders))
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
    config = store_config(postgres_dsn, [table_mapping("orders")]).model_copy(update={"port": port})
    store = PostgresStore("unreachable", config)

    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        store.open()
    with pytest.raises(RuntimeError, match="not open"):
        store.apply([make_request("17")])

