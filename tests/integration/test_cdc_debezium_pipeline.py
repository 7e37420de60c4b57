"""End to end with Debezium running for real: a DELETE in PostgreSQL becomes a request,
a worker deletes the customer from its store and acks, and the ledger shows completion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.connect_fixtures import capture_server_dsn, chinook_capture, connect_url  # noqa: F401
from tests.integration.helpers import ProofReader, count_customers, seed_customers, wait_for, write_sqlite_spec
from tests.integration.pg_fixtures import postgres_dsn  # noqa: F401
from tombstone.cdc.bridge import CdcBridge
from tombstone.cdc.config import BridgeConfig
from tombstone.inventory import load_inventory
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.ledger import Ledger
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings


def start_bridge(topic: str, group: str) -> tuple[threading.Event, threading.Thread, list[BaseException]]:
    config = BridgeConfig.model_validate({
        "bridge": {"name": "e2e", "group_id": group, "poll_timeout_s": 0.2},
        "tables": [{"topic": topic, "table": "public.customer", "subject_type": "customer",
                    "data_class": "customer_profile", "key_columns": ["customer_id"]}],
    })
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            CdcBridge(config, KafkaSettings(), stop=stop).run()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return stop, thread, errors


def test_sql_delete_reaches_every_store_and_the_ledger(
        chinook_capture: Callable[..., Any], tmp_path: Path, proof_reader: ProofReader, start_worker: Any,
        kafka_env: dict[str, str], unique_name: Callable[[str], str]) -> None:
    capture = chinook_capture()
    spec = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 60))
    start_worker(spec)
    stop, thread, errors = start_bridge(capture.topic, unique_name("cdc-e2e"))
    try:
        with capture.connect() as conn:
            conn.execute("ALTER TABLE invoice ALTER COLUMN customer_id DROP NOT NULL")
            conn.execute("ALTER TABLE invoice DROP CONSTRAINT invoice_customer_id_fkey")
            conn.execute("ALTER TABLE invoice ADD CONSTRAINT invoice_customer_id_fkey FOREIGN KEY (customer_id) "
                         "REFERENCES customer (customer_id) ON DELETE SET NULL")
            conn.commit()
            deleted = conn.execute("DELETE FROM customer WHERE customer_id = 17 RETURNING customer_id").fetchall()
            commit_time = conn.execute("SELECT now()").fetchone()[0]
            conn.commit()
        assert deleted == [(17,)]

        # The request: one, for customer 17, with the source's commit time as cut-off.
        kafka = KafkaSettings()
        reader, serde, requests = TopicReader(kafka, [kafka.requests_topic]), RequestSerde(), []

        def one_request() -> bool:
            requests.extend(serde.deserialize(m.value()) for m in reader.read_new())
            return len(requests) >= 1

        wait_for(one_request, 90, "the bridge's request")
        reader.close()
        [request] = requests
        assert (request.subject_key, request.data_class) == ("customer:17", "customer_profile")
        assert request.cutoff_version is not None  # the LSN of the delete
        assert abs((request.cutoff_at - commit_time).total_seconds()) < 5

        # The store's ack and the ledger's completion.
        wait_for(lambda: proof_reader.refresh() or any(a.request_id == request.request_id
                                                       for a in proof_reader.acks), 60, "the worker's ack")
        [ack] = [a for a in proof_reader.acks if a.request_id == request.request_id]
        assert (ack.store, ack.status.value, ack.items_affected, ack.remaining) == ("operational-db", "DELETED", 1, 0)
        ledger = Ledger(load_inventory(kafka_env["TOMBSTONE_INVENTORY"]), kafka)
        try:
            ledger.refresh()
            assert ledger.state.view(request.request_id).complete
        finally:
            ledger.close()
        assert count_customers(tmp_path / "operational.sqlite", range(17, 18)) == 0
        assert count_customers(tmp_path / "operational.sqlite") == 58
        with psycopg.connect(capture.dsn) as conn:  # the demo's decision: invoices stay, without a customer
            assert conn.execute("SELECT count(*) FROM invoice WHERE customer_id IS NULL").fetchone()[0] == 7
    finally:
        stop.set()
        thread.join(30)
    assert not errors
