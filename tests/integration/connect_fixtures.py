"""Kafka Connect fixtures: one worker for the test session, and Debezium connectors that
each capture their own copy of Chinook in PostgreSQL.

A test module imports the fixtures it uses::

    from tests.integration.connect_fixtures import capture_server_dsn, chinook_capture, connect_url  # noqa: F401
    from tests.integration.pg_fixtures import postgres_dsn  # noqa: F401

A worker that cannot start fails the tests with the reason and the end of its log. They
are never skipped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tombstone.connect.config import ConnectorConfig, load_connector_config
from tombstone.connect.local import LocalConnect
from tombstone.connect.rest import ConnectClient
from tombstone.demo.chinook_pg import drop_database, load_chinook_postgres, wait_for_slot
from tombstone.errors import ConnectRuntimeError

DEMO_CONNECTOR = Path(__file__).resolve().parents[2] / "deploy" / "debezium" / "chinook-postgres.json"


@pytest.fixture(scope="session")
def connect_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REST URL of a Kafka Connect worker with the Debezium PostgreSQL plugin."""
    connect = LocalConnect(tmp_path_factory.mktemp("kafka-connect"),
                           group_id=f"tombstone-connect-test-{uuid.uuid4().hex[:8]}")
    try:
        url = connect.start(kafka_bootstrap, timeout_s=180)
    except ConnectRuntimeError as exc:
        pytest.fail(f"Kafka Connect could not start, so the Debezium tests cannot run: {exc}", pytrace=False)
    try:
        yield url
    finally:
        connect.stop()


@dataclass
class Record:
    """A consumed record with its key, value and headers decoded as UTF-8 text."""

    key: str | None
    value: str | None
    headers: dict[str, str]
    offset: int
    received_at: float = field(compare=False)

    def key_json(self) -> object:
        return json.loads(self.key) if self.key is not None else None

    def value_json(self) -> object:
        return json.loads(self.value) if self.value is not None else None


@dataclass
class ChinookCapture:
    """A Chinook database, the running Debezium connector on it, and its customer topic."""

    name: str
    database: str
    dsn: str
    slot: str
    topic: str
    bootstrap: str
    config: ConnectorConfig
    consumer: Consumer | None = None

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn)

    def subscribe(self) -> None:
        """Start reading the customer topic from its beginning, even before it exists."""
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": f"test-{self.name}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            # Notice the topic within a second once the connector creates it.
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.consumer.subscribe([self.topic])

    def read(self, count: int, timeout_s: float = 60.0) -> list[Record]:
        """Return the next ``count`` records of the customer topic."""
        if self.consumer is None:
            self.subscribe()
        assert self.consumer is not None
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # the connector has not created the topic yet
                raise AssertionError(f"Reading {self.topic} failed: {error}")
            records.append(_record(message))
        assert len(records) == count, (
            f"{self.topic} delivered {len(records)} of {count} records within {timeout_s:.0f} s: {records}")
        return records

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def _record(message: object) -> Record:
    key, value = message.key(), message.value()  # type: ignore[attr-defined]
    headers = {name: (data or b"").decode("utf-8") for name, data in message.headers() or []}  # type: ignore[attr-defined]
    return Record(key.decode("utf-8") if key is not None else None,
                  value.decode("utf-8") if value is not None else None,
                  headers, message.offset(), time.monotonic())  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def capture_server_dsn(postgres_dsn: str) -> str:
    """Connection string of the PostgreSQL server, without captures left by earlier sessions.

    A session that was killed leaves its test databases and replication slots behind. The
    slots keep WAL and count against max_replication_slots, so inactive ones are dropped
    with their databases. NOTE: this assumes that no other test session uses the server.
    """
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        stale = admin.execute(
            "SELECT DISTINCT database FROM pg_replication_slots "
            "WHERE slot_name LIKE 'tombstone\\_test\\_%' AND NOT active").fetchall()
        for (database,) in stale:
            drop_database(admin, database)
    return postgres_dsn


@pytest.fixture
def chinook_capture(connect_url: str, capture_server_dsn: str,
                    kafka_bootstrap: str) -> Iterator[Callable[..., ChinookCapture]]:
    """Load Chinook into a new database and capture its customer table with Debezium.

    Each call makes its own database, replication slot, publication and topic prefix from
    one random suffix, so captures never see each other. The fixture deletes the
    connector, drops its slot and drops the database at the end of the test.
    """
    client = ConnectClient(connect_url)
    captures: list[ChinookCapture] = []

    def start(settings: dict[str, object] | None = None) -> ChinookCapture:
        suffix = uuid.uuid4().hex[:8]
        database = f"chinook_test_{suffix}"
        load_chinook_postgres(capture_server_dsn, database)
        config = connector_config(capture_server_dsn, database, suffix, settings or {})
        capture = ChinookCapture(config.name, database, make_conninfo(capture_server_dsn, dbname=database),
                                 config.config["slot.name"], f"{config.config['topic.prefix']}.public.customer",
                                 kafka_bootstrap, config)
        captures.append(capture)
        client.put_connector(config.name, config.config)
        client.wait_running(config.name, timeout_s=120)
        wait_for_slot(capture_server_dsn, capture.slot)
        return capture

    yield start
    for capture in captures:
        capture.close()
        client.delete_connector(capture.name)
        wait_for_slot(capture_server_dsn, capture.slot, active=False)
        with psycopg.connect(capture_server_dsn, autocommit=True) as admin:
            drop_database(admin, capture.database)


def connector_config(dsn: str, database: str, suffix: str, settings: dict[str, object]) -> ConnectorConfig:
    """The demo's connector config, pointed at the test's server and database."""
    params = conninfo_to_dict(dsn)
    return load_connector_config(DEMO_CONNECTOR).with_overrides(name=f"chinook-test-{suffix}", settings={
        "database.hostname": params.get("host", "127.0.0.1"),
        "database.port": params.get("port", "5432"),
        "database.user": params["user"],
        "database.password": params.get("password", ""),
        "database.dbname": database,
        "slot.name": f"tombstone_test_{suffix}",
        "publication.name": f"tombstone_test_{suffix}",
        "topic.prefix": database,
        **settings,
    })
