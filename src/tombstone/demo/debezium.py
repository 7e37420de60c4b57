"""``tombstone demo --source debezium``: deletions that start as SQL DELETEs in PostgreSQL.

The demo loads Chinook into PostgreSQL and into the derived stores, starts Kafka Connect
with the Debezium PostgreSQL connector, the CDC bridge and one worker per store, and then
deletes customers with real DELETE statements. The bridge turns each delete event into a
request. The demo waits until the ledger shows every request complete, then stops the
processes and scans the stores for what is left.

Invoices: Chinook's invoices reference their customer with ON DELETE NO ACTION, so a
customer with invoices cannot be deleted as shipped. Invoices are financial records, so
the demo keeps them: it changes that foreign key to ON DELETE SET NULL, and each deleted
customer's invoices stay in PostgreSQL without a customer. The connector captures the
customer table only, so the requests are for the customer_profile data class, and the
derived stores of this demo hold customer profiles.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from tombstone.connect.config import load_connector_config
from tombstone.connect.local import LocalConnect
from tombstone.connect.rest import ConnectClient
from tombstone.demo.chinook import load_chinook
from tombstone.demo.chinook_pg import load_chinook_postgres, wait_for_slot
from tombstone.demo.load import load_stores
from tombstone.demo.processes import failed_workers, start_process, start_worker
from tombstone.errors import TombstoneError
from tombstone.inventory import default_inventory_path, load_inventory
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.ledger import Ledger
from tombstone.models import DeletionRequest
from tombstone.processes import free_port
from tombstone.pseudonym import Pseudonymizer
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy" / "debezium"
CONNECTOR_FILE = "chinook-postgres.json"
BRIDGE_FILE = "chinook-bridge.toml"
DATABASE = "chinook"
INVOICE_DECISION = ("kept in PostgreSQL as financial records: the demo changes invoice.customer_id "
                    "to ON DELETE SET NULL, so a deleted customer's invoices remain without a customer")


def admin_dsn() -> str:
    """Connection string of the project's PostgreSQL (see deploy/local/services.sh)."""
    return make_conninfo(
        host=os.environ.get("TOMBSTONE_PG_HOST", "127.0.0.1"),
        port=os.environ.get("TOMBSTONE_PG_PORT", "55432"),
        user=os.environ.get("TOMBSTONE_PG_USER", "tombstone"),
        password=os.environ.get("TOMBSTONE_PG_PASSWORD", "tombstone"),
        dbname=os.environ.get("TOMBSTONE_PG_ADMIN_DB", "tombstone"),
        connect_timeout=10,
    )


def load_source(say: Any) -> tuple[str, dict[str, int]]:
    """Load Chinook into PostgreSQL and let customers be deleted; return its DSN and counts."""
    dsn = admin_dsn()
    try:
        counts = load_chinook_postgres(dsn, DATABASE)
    except psycopg.OperationalError as exc:
        raise TombstoneError(
            f"PostgreSQL is not reachable for the Debezium demo ({str(exc).strip()}). "
            "Start it with `make services` (needs root), or point TOMBSTONE_PG_HOST and "
            "TOMBSTONE_PG_PORT at a server with wal_level=logical."
        ) from None
    source = make_conninfo(dsn, dbname=DATABASE)
    with psycopg.connect(source) as conn:
        conn.execute("ALTER TABLE invoice ALTER COLUMN customer_id DROP NOT NULL")
        conn.execute("ALTER TABLE invoice DROP CONSTRAINT IF EXISTS invoice_customer_id_fkey")
        conn.execute("ALTER TABLE invoice ADD CONSTRAINT invoice_customer_id_fkey FOREIGN KEY (customer_id) "
                     "REFERENCES customer (customer_id) ON DELETE SET NULL")
    say(f"Loaded Chinook into PostgreSQL database {DATABASE}: {counts.get('customer', 0)} customers, "
        f"{counts.get('invoice', 0)} invoices. Invoices are {INVOICE_DECISION}.")
    return source, counts


def start_capture(run: Any, suffix: str, bootstrap: str, say: Any) -> ConnectClient:
    """Start Kafka Connect and register the connector with this run's topic prefix and slot."""
    connect = LocalConnect(run.run_dir / "connect", group_id=f"demo-{suffix}.connect")
    say("Starting Kafka Connect with the Debezium PostgreSQL connector (the first run fetches its jars)...")
    url = connect.start(bootstrap)
    run.connect = connect
    connector = load_connector_config(DEPLOY_DIR / CONNECTOR_FILE).with_overrides(
        name=f"demo-{suffix}-chinook",
        settings={"topic.prefix": run.env["TOMBSTONE_CDC_TOPIC_PREFIX"],
                  "slot.name": f"tombstone_demo_{suffix}", "publication.name": f"tombstone_demo_{suffix}"})
    client = ConnectClient(url)
    client.put_connector(connector.name, connector.config)
    run.connector = (client, connector.name, f"tombstone_demo_{suffix}")
    client.wait_running(connector.name)
    # Changes committed before the slot exists are never captured (snapshot.mode=no_data).
    wait_for_slot(admin_dsn(), f"tombstone_demo_{suffix}")
    say(f"Connector {connector.name} is running; change events go to "
        f"{run.env['TOMBSTONE_CDC_TOPIC_PREFIX']}.public.customer.")
    return client


def delete_customers(source_dsn: str, ids: list[int]) -> list[int]:
    """Delete the customers with plain SQL in one transaction; return the ids deleted."""
    with psycopg.connect(source_dsn) as conn:
        rows = conn.execute("DELETE FROM customer WHERE customer_id = ANY(%s) RETURNING customer_id",
                            [ids]).fetchall()
    return sorted(row[0] for row in rows)


def wait_for_requests(kafka: KafkaSettings, expected: int, run: Any, timeout_s: float) -> list[DeletionRequest]:
    """Read the requests topic until the bridge produced ``expected`` distinct requests."""
    reader = TopicReader(kafka, [kafka.requests_topic])
    serde = RequestSerde()
    found: dict[str, DeletionRequest] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected:
            for message in reader.read_new():
                if message.value() is not None:
                    request = serde.deserialize(message.value())
                    found.setdefault(request.request_id, request)
            dead = failed_workers(run.workers)
            if dead:
                raise TombstoneError(f"Process {dead[0].name} exited early. Its log ends with:\n{dead[0].tail()}")
            if len(found) < expected and time.monotonic() > deadline:
                raise TombstoneError(
                    f"The bridge produced {len(found)} of {expected} requests within {timeout_s:.0f} s. "
                    f"See the bridge's log in {run.run_dir / 'logs'}.")
            time.sleep(0.5)
    finally:
        reader.close()
    return list(found.values())


def run_debezium(run: Any, customers: int, stores: str, timeout_s: float, say: Any) -> dict[str, Any]:
    """Run the demo's steps; the caller stops what ``run`` records and prints the summary."""
    from tombstone.demo import run as embedded

    # Step 1. Broker, environment, topics.
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or embedded._start_broker(run)
    embedded._prepare_env(run, bootstrap)
    suffix = run.env["TOMBSTONE_REQUESTS_TOPIC"].split(".")[0].removeprefix("demo-") or uuid.uuid4().hex[:8]
    run.env["TOMBSTONE_CDC_TOPIC_PREFIX"] = f"demo-{suffix}.chinook"
    os.environ.update(run.env)
    kafka = KafkaSettings()
    embedded._create_topics(kafka, run.env["TOMBSTONE_PROFILES_TOPIC"])

    # Step 2. The source database and the derived stores, both from Chinook.
    source_dsn, counts = load_source(say)
    data = dataclasses.replace(load_chinook(), invoices=[])
    run.specs = embedded.select_specs(stores)
    load_stores([spec for _, spec in run.specs.values()], kafka, data)

    # Step 3. Capture, bridge and workers.
    start_capture(run, suffix, bootstrap, say)
    log_dir = run.run_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    bridge_config = str(DEPLOY_DIR / BRIDGE_FILE)
    run.workers.append(start_process("cdc-bridge", ["cdc-bridge", bridge_config, "--metrics-port",
                                                    str(free_port())], run.env, log_dir))
    for name, (path, _) in run.specs.items():
        run.workers.append(start_worker(name, path, run.env, log_dir, free_port()))
    say(f"Started the CDC bridge and {len(run.specs)} workers: {', '.join(run.specs)}.")

    # Step 4. Delete customers in PostgreSQL, then follow the requests to complete proof.
    chosen = embedded._choose_customers(data.customers, customers)
    deleted = delete_customers(source_dsn, [int(c["customer_id"]) for c in chosen])
    say(f"Deleted {len(deleted)} customers in PostgreSQL with DELETE FROM customer.")
    requests = wait_for_requests(kafka, len(deleted), run, timeout_s)
    say(f"The CDC bridge produced {len(requests)} deletion requests.")
    inventory = load_inventory(default_inventory_path()).restricted_to(set(run.specs))
    ledger = Ledger(inventory, kafka, Pseudonymizer.from_settings())
    try:
        views = embedded._wait_for_proof(ledger, run, requests, timeout_s)
    finally:
        ledger.close()

    # Step 5. Stop the processes, then scan every store without them.
    summary = embedded.finish_and_scan(run, kafka, inventory, views, [f"customer:{i}" for i in deleted],
                                       ["customer_profile"])
    summary.update({"source": "debezium", "requests": len(requests), "customer_rows_deleted": len(deleted),
                    "customers_loaded": len(data.customers),
                    "invoices": {"decision": INVOICE_DECISION, "kept_in_postgresql": _orphans(source_dsn)},
                    "postgresql_rows_loaded": counts})
    return summary


def _orphans(source_dsn: str) -> int:
    with psycopg.connect(source_dsn) as conn:
        return conn.execute("SELECT count(*) FROM invoice WHERE customer_id IS NULL").fetchone()[0]


def stop_capture(run: Any, say: Any) -> None:
    """Delete the demo's connector and its replication slot, then stop Kafka Connect."""
    connector = getattr(run, "connector", None)
    if connector is not None:
        client, name, slot = connector
        try:
            client.delete_connector(name)
        except TombstoneError as exc:
            logger.warning("Cannot delete connector %s: %s", name, exc)
    connect = getattr(run, "connect", None)
    if connect is not None:
        connect.stop()
        say("Stopped the demo's Kafka Connect worker.")
    if connector is not None:
        _drop_slot(connector[2])


def _drop_slot(slot: str) -> None:
    # A slot left behind keeps PostgreSQL from recycling WAL, so the demo removes its own.
    try:
        wait_for_slot(admin_dsn(), slot, active=False, timeout_s=30)
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", [slot])
    except (psycopg.Error, TombstoneError) as exc:
        logger.warning("Cannot drop replication slot %s: %s", slot, exc)

