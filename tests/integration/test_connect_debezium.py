"""Debezium's PostgreSQL connector on a real Kafka Connect worker: what a delete looks like on Kafka.

Each test loads Chinook into its own PostgreSQL database, registers the demo connector
(deploy/debezium/chinook-postgres.json) against it and changes rows. The records that
arrive are compared with the saved examples in tests/fixtures/debezium/, which the CDC
bridge's unit tests build on. Set TOMBSTONE_RECORD_DEBEZIUM_FIXTURES=1 to rewrite those
files from this run instead.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

# Fixtures, imported so that pytest finds them.
from tests.integration.connect_fixtures import (  # noqa: F401
    ChinookCapture,
    Record,
    capture_server_dsn,
    chinook_capture,
    connect_url,
    connector_config,
)
from tests.integration.pg_fixtures import postgres_dsn  # noqa: F401
from tombstone.connect.rest import ConnectClient
from tombstone.connect.runtime import debezium_version, kafka_version
from tombstone.errors import ConnectRuntimeError

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"
RECORD = os.environ.get("TOMBSTONE_RECORD_DEBEZIUM_FIXTURES") == "1"
DELETED_CUSTOMER = 5  # a Chinook customer with 7 invoices
NEW_CUSTOMER, RENUMBERED_CUSTOMER = 9001, 9002
NEW_KEY_HEADER, OLD_KEY_HEADER = "__debezium.newkey", "__debezium.oldkey"

DELETE_CUSTOMER_SQL = [
    "DELETE FROM invoice_line WHERE invoice_id IN (SELECT invoice_id FROM invoice WHERE customer_id = {id})",
    "DELETE FROM invoice WHERE customer_id = {id}",
    "DELETE FROM customer WHERE customer_id = {id}",
]
INSERT_CUSTOMER_SQL = ("INSERT INTO customer (customer_id, first_name, last_name, email) "
                       "VALUES ({id}, 'Ada', 'Example', 'ada@example.com')")


def run_transaction(capture: ChinookCapture, statements: list[str]) -> float:
    """Run ``statements`` in one transaction; return the monotonic time right after COMMIT."""
    with capture.connect() as conn:
        for statement in statements:
            conn.execute(statement.encode("utf-8"))
    return time.monotonic()


def test_delete_emits_event_then_tombstone(chinook_capture: Any, record_property: Any) -> None:
    capture = chinook_capture()
    capture.subscribe()
    statements = [s.format(id=DELETED_CUSTOMER) for s in DELETE_CUSTOMER_SQL]
    committed_at = run_transaction(capture, statements)

    delete, tombstone = capture.read(2)
    record_property("first_event_latency_s_with_topic_creation", round(delete.received_at - committed_at, 3))

    assert delete.key_json() == {"customer_id": DELETED_CUSTOMER}
    event = delete.value_json()
    assert isinstance(event, dict)
    assert event["op"] == "d"
    assert event["after"] is None
    assert event["before"]["customer_id"] == DELETED_CUSTOMER
    assert isinstance(event["source"]["ts_ms"], int)
    assert isinstance(event["source"]["lsn"], int)
    assert event["source"]["table"] == "customer"
    assert tombstone.key == delete.key
    assert tombstone.value is None
    check_fixture("customer-delete.json", capture, statements, [delete, tombstone],
                  "A DELETE of one Chinook customer (its invoice lines and invoices deleted first, "
                  "in the same transaction): the delete event, then the Kafka tombstone.")


def test_key_change_emits_delete_tombstone_create(chinook_capture: Any) -> None:
    capture = chinook_capture()
    insert = INSERT_CUSTOMER_SQL.format(id=NEW_CUSTOMER)
    update = f"UPDATE customer SET customer_id = {RENUMBERED_CUSTOMER} WHERE customer_id = {NEW_CUSTOMER}"
    run_transaction(capture, [insert])
    (create,) = capture.read(1)
    run_transaction(capture, [update])

    delete, tombstone, recreate = capture.read(3)

    assert create.value_json()["op"] == "c"  # type: ignore[index]
    assert delete.key_json() == {"customer_id": NEW_CUSTOMER}
    assert delete.value_json()["op"] == "d"  # type: ignore[index]
    assert json.loads(delete.headers[NEW_KEY_HEADER]) == {"customer_id": RENUMBERED_CUSTOMER}
    assert tombstone.key == delete.key
    assert tombstone.value is None
    assert json.loads(tombstone.headers[NEW_KEY_HEADER]) == {"customer_id": RENUMBERED_CUSTOMER}
    assert recreate.key_json() == {"customer_id": RENUMBERED_CUSTOMER}
    assert recreate.value_json()["op"] == "c"  # type: ignore[index]
    assert json.loads(recreate.headers[OLD_KEY_HEADER]) == {"customer_id": NEW_CUSTOMER}
    check_fixture("customer-key-change.json", capture, [update], [delete, tombstone, recreate],
                  "An UPDATE of a customer's primary key (customer_id 9001 to 9002, a customer "
                  "without invoices): a delete event with the new key in a header, a tombstone "
                  "for the old key, and a create event with the old key in a header.")


def test_delete_with_schemas_enabled(chinook_capture: Any, record_property: Any) -> None:
    capture = chinook_capture({"key.converter.schemas.enable": True, "value.converter.schemas.enable": True})
    run_transaction(capture, [INSERT_CUSTOMER_SQL.format(id=NEW_CUSTOMER)])
    capture.read(1)  # the topic exists and the consumer reads it from now on
    statements = [s.format(id=NEW_CUSTOMER) for s in DELETE_CUSTOMER_SQL]
    committed_at = run_transaction(capture, statements)

    delete, tombstone = capture.read(2)
    record_property("first_event_latency_s", round(delete.received_at - committed_at, 3))

    key, event = delete.key_json(), delete.value_json()
    assert isinstance(key, dict) and isinstance(event, dict)
    assert key["payload"] == {"customer_id": NEW_CUSTOMER}
    assert key["schema"]["type"] == "struct"
    assert event["schema"]["name"].endswith(".public.customer.Envelope")
    assert event["payload"]["op"] == "d"
    assert event["payload"]["before"]["customer_id"] == NEW_CUSTOMER
    assert tombstone.key == delete.key
    assert tombstone.value is None
    check_fixture("customer-delete-schemas.json", capture, statements, [delete, tombstone],
                  "A DELETE of a customer without invoices with schemas.enable=true on both "
                  "converters: key and value carry the JsonConverter's schema envelope.")


def test_register_is_idempotent(chinook_capture: Any, connect_url: str) -> None:  # noqa: F811
    capture = chinook_capture()
    client = ConnectClient(connect_url)

    created = client.put_connector(capture.name, capture.config.config)
    status = client.wait_running(capture.name)

    assert created is False
    assert [task["state"] for task in status["tasks"]] == ["RUNNING"]
    assert capture.name in client.connectors()


def test_invalid_config_reports_reason(connect_url: str, postgres_dsn: str) -> None:  # noqa: F811
    config = connector_config(postgres_dsn, "tombstone", uuid.uuid4().hex[:8],
                              {"database.password": "wrong-password"})

    with pytest.raises(ConnectRuntimeError) as raised:
        ConnectClient(connect_url).put_connector(config.name, config.config)

    assert "password authentication failed" in str(raised.value)
    assert config.name not in ConnectClient(connect_url).connectors()


def test_failed_task_reports_trace(chinook_capture: Any, connect_url: str) -> None:  # noqa: F811
    capture = chinook_capture()
    client = ConnectClient(connect_url)
    broken = capture.config.with_overrides(name=f"{capture.name}-broken", settings={
        "publication.autocreate.mode": "disabled", "publication.name": "no_such_publication",
        "slot.name": f"{capture.slot}_broken", "topic.prefix": f"{capture.database}_broken"})
    client.put_connector(broken.name, broken.config)
    try:
        with pytest.raises(ConnectRuntimeError) as raised:
            client.wait_running(broken.name, timeout_s=60)
    finally:
        client.delete_connector(broken.name)

    assert "task 0" in str(raised.value)
    assert "Publication autocreation is disabled" in str(raised.value)
    assert "at io.debezium.connector.postgresql" in str(raised.value)


def check_fixture(name: str, capture: ChinookCapture, statements: list[str], records: list[Record],
                  description: str) -> None:
    """Compare ``records`` with a saved fixture file, or save them when recording."""
    recorded = _fixture(capture, statements, records, description)
    path = FIXTURES / name
    if RECORD:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recorded, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["converters"] == recorded["converters"]
    assert len(saved["records"]) == len(recorded["records"])
    for expected, actual in zip(saved["records"], recorded["records"], strict=True):
        assert actual["key"] == expected["key"]
        assert sorted(actual["headers"]) == sorted(expected["headers"])
        assert _shape(actual["value"]) == _shape(expected["value"]), f"{name}: the event's fields changed"


def _fixture(capture: ChinookCapture, statements: list[str], records: list[Record],
             description: str) -> dict[str, Any]:
    """The records as strings, with the test's database name replaced by the demo's."""
    def normalize(text: str | None) -> str | None:
        return None if text is None else text.replace(capture.database, "chinook")

    config = capture.config.config
    return {
        "description": description,
        "produced_by": f"Debezium PostgreSQL connector {debezium_version()} (plugin.name={config['plugin.name']}, "
                       f"REPLICA IDENTITY DEFAULT) on Kafka Connect {kafka_version()}",
        "topic": normalize(capture.topic),
        "note": "The test's own database name and topic prefix are replaced with chinook. Header values "
                "are the UTF-8 text that the header converter wrote.",
        "converters": {key: config[key] for key in sorted(config) if "converter" in key}
        | {"header.converter": "org.apache.kafka.connect.storage.SimpleHeaderConverter (worker default)"},
        "statements": statements,
        "records": [{"key": normalize(r.key), "value": normalize(r.value),
                     "headers": {k: normalize(v) for k, v in r.headers.items()}} for r in records],
    }


def _shape(value: str | None) -> object:
    """Field names of a JSON value, nested, without the values."""
    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return type(node).__name__

    return None if value is None else walk(json.loads(value))
