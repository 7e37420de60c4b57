"""``tombstone demo``: the whole pipeline on the Chinook sample data.

The demo starts (or reuses) a broker, creates topics and loads Chinook into every embedded
store. It requests deletion of some customers and runs one worker process per store. When
the ledger reports every request complete, it stops the workers and scans every store
without them. Last it prints the proof table and stops what it started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tombstone.broker.local import LocalBroker, free_port
from tombstone.demo.audit import audit_store
from tombstone.demo.chinook import load_chinook
from tombstone.demo.load import DEMO_DATA_CLASSES, load_stores, open_store, scan_subjects
from tombstone.demo.processes import WorkerProcess, failed_workers, scrape_worker, start_worker, stop_workers
from tombstone.errors import TombstoneError
from tombstone.inventory import default_inventory_path, load_inventory
from tombstone.kafka.admin import TopicSpec, ensure_topics, pipeline_topics
from tombstone.ledger.ledger import Ledger
from tombstone.ledger.render import render_table
from tombstone.models import DeletionRequest
from tombstone.pseudonym import Pseudonymizer
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec, load_spec

logger = logging.getLogger(__name__)

CONSUMERS_DIR = Path(__file__).resolve().parents[3] / "consumers"


@dataclass
class DemoRun:
    run_dir: Path
    env: dict[str, str]
    specs: dict[str, tuple[Path, ConsumerSpec]] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)
    broker: LocalBroker | None = None
    connect: Any = None  # LocalConnect of the Debezium source
    connector: Any = None  # (client, connector name, replication slot) of the Debezium source


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


EMBEDDED_KINDS = frozenset({"sqlite", "duckdb", "search", "objects", "topic"})


def run_demo(json_output: bool = False, customers: int = 8, keep: bool = False,
             stores: str = "embedded", timeout_s: float = 180.0, source: str = "requests") -> int:
    """Run the demo; return 0 when every request is complete and nothing remains.

    ``source`` "requests" issues the requests itself; "debezium" deletes rows in PostgreSQL
    and lets the CDC bridge issue them.
    """
    run = DemoRun(Path(tempfile.mkdtemp(prefix="tombstone-demo-")), {})
    try:
        if source == "debezium":
            from tombstone.demo.debezium import run_debezium

            summary = run_debezium(run, customers, stores, timeout_s, _say)
        else:
            summary = _run(run, customers, stores, timeout_s)
    finally:
        if run.workers:
            stop_workers(run.workers)
        if run.connect is not None or run.connector is not None:
            from tombstone.demo.debezium import stop_capture

            stop_capture(run, _say)
        if run.broker is not None:
            run.broker.stop()
            _say("Stopped the demo's Kafka broker.")
        if keep:
            _say(f"Kept the demo's data in {run.run_dir}")
        else:
            shutil.rmtree(run.run_dir, ignore_errors=True)
    ok = summary["complete"] == summary["requests"] and summary["remaining_after_scan"] == 0
    print(render_summary(summary, ok))
    if json_output:
        print(json.dumps(summary, sort_keys=True))
    return 0 if ok else 1


def render_summary(summary: dict[str, Any], ok: bool) -> str:
    """Per-store table of proof statuses and of the independent scan, then a verdict line."""
    lines = ["", f"{'store':<16} {'proofs':<24} {'left after scan':>15} {'other customers kept':>21}"]
    for name, store in summary["stores"].items():
        proofs = ", ".join(f"{status} {count}" for status, count in store["status_counts"].items())
        lines.append(f"{name:<16} {proofs:<24} {store['remaining_after_scan']:>15} "
                     f"{store['kept_items_of_other_customers']:>21}")
    verdict = "OK" if ok else "FAILED"
    lines.append(
        f"{verdict}: {summary['complete']} of {summary['requests']} requests proven complete; "
        f"{summary['remaining_after_scan']} items of the deleted customers remain in "
        f"{len(summary['stores'])} stores.")
    return "\n".join(lines)


def select_specs(selection: str) -> dict[str, tuple[Path, ConsumerSpec]]:
    """Consumer specs for ``embedded``, ``all`` or a comma-separated list of store names."""
    specs = {spec.name: (path, spec) for path in sorted(CONSUMERS_DIR.glob("*.toml"))
             for spec in [load_spec(path)]}
    if selection == "all":
        return specs
    if selection == "embedded":
        return {name: item for name, item in specs.items() if item[1].store.kind in EMBEDDED_KINDS}
    names = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = sorted(set(names) - set(specs))
    if unknown or not names:
        raise TombstoneError(
            f"--stores {selection!r} names no known store ({', '.join(unknown) or 'empty list'}); "
            f"use embedded, all, or names from: {', '.join(sorted(specs))}."
        )
    return {name: specs[name] for name in names}


def _run(run: DemoRun, customers: int, stores: str, timeout_s: float) -> dict[str, Any]:
    # Step 1. Broker, environment, topics.
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _start_broker(run)
    if run.broker is None:
        _say(f"Demo topics get a unique prefix on {bootstrap}, so earlier runs do not interfere.")
    _prepare_env(run, bootstrap)
    kafka = KafkaSettings()
    _create_topics(kafka, run.env["TOMBSTONE_PROFILES_TOPIC"])

    # Step 2. Load Chinook into every store.
    data = load_chinook()
    _say(f"Loaded Chinook from {data.source}: {len(data.customers)} customers, {len(data.invoices)} invoices.")
    run.specs = select_specs(stores)
    load_stores([spec for _, spec in run.specs.values()], kafka, data)

    # Step 3. Request deletions, then start one worker per store.
    chosen = _choose_customers(data.customers, customers)
    requests = _request_deletions(kafka, chosen)
    log_dir = run.run_dir / "logs"
    log_dir.mkdir()
    for name, (path, _) in run.specs.items():
        run.workers.append(start_worker(name, path, run.env, log_dir, free_port()))
    _say(f"Started {len(run.workers)} workers: {', '.join(run.specs)}.")

    # Step 4. Wait for complete proof.
    inventory = load_inventory(default_inventory_path()).restricted_to(set(run.specs))
    ledger = Ledger(inventory, kafka, Pseudonymizer.from_settings())
    try:
        views = _wait_for_proof(ledger, run, requests, timeout_s)
    finally:
        ledger.close()

    # Step 5. Read the workers' metrics, stop them, then scan every store without them.
    subjects = [f"customer:{c['customer_id']}" for c in chosen]
    summary = finish_and_scan(run, kafka, inventory, views, subjects, DEMO_DATA_CLASSES)
    print(render_table(views))
    summary.update({"source": "requests", "requests": len(requests),
                    "customers_loaded": len(data.customers), "invoices_loaded": len(data.invoices)})
    return summary


def finish_and_scan(run: DemoRun, kafka: KafkaSettings, inventory: Any, views: list, deleted: list[str],
                    data_classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Stop the workers, audit every store against the policy, and summarize by store."""
    workers = [w for w in run.workers if w.name in run.specs]
    metrics = _scrape_when_caught_up(workers)
    codes = stop_workers(run.workers)
    run.workers = []
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        raise TombstoneError(f"Processes exited with non-zero status: {bad}")
    other = sorted({f"customer:{row['customer_id']}" for row in load_chinook().customers} - set(deleted))
    stores: dict[str, Any] = {}
    for name, (_, spec) in sorted(run.specs.items()):
        audit = audit_store(open_store(spec, kafka), inventory, deleted, data_classes)
        by_class: dict[str, Counter[str]] = {}
        for view in views:
            for row in view.rows:
                if row.store == name and row.status:
                    by_class.setdefault(view.request.data_class, Counter())[row.status.value] += 1
        stores[name] = {
            "status_counts": dict(sorted(sum(by_class.values(), Counter()).items())),
            "status_by_data_class": {dc: dict(sorted(c.items())) for dc, c in sorted(by_class.items())},
            "remaining_after_scan": audit.remaining,
            "kept_under_policy": audit.kept,
            "kept_items_of_other_customers": scan_subjects(open_store(spec, kafka), other),
            "metrics": metrics.get(name, {}),
        }
    return {"complete": sum(1 for v in views if v.complete),
            "remaining_after_scan": sum(store["remaining_after_scan"] for store in stores.values()),
            "stores": stores}


def _start_broker(run: DemoRun) -> str:
    broker = LocalBroker()
    running = broker.running_bootstrap()
    if running:
        _say(f"Using the Kafka broker already running at {running}; the demo leaves it running.")
        return running
    _say("Starting a local Kafka broker (the first run fetches its jars with Maven)...")
    bootstrap = broker.start()
    run.broker = broker
    _say(f"Kafka broker ready at {bootstrap}.")
    return bootstrap


def _prepare_env(run: DemoRun, bootstrap: str) -> None:
    # Topic names unique to this run, so a reused broker never mixes runs.
    suffix = uuid.uuid4().hex[:8]
    run.env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOMBSTONE_DATA_DIR": str(run.run_dir / "data"),
        "TOMBSTONE_REQUESTS_TOPIC": f"demo-{suffix}.deletion.requests",
        "TOMBSTONE_PROOFS_TOPIC": f"demo-{suffix}.deletion.proofs",
        "TOMBSTONE_DEAD_LETTER_TOPIC": f"demo-{suffix}.deletion.dead-letters",
        "TOMBSTONE_PROFILES_TOPIC": f"demo-{suffix}.customer.profiles",
        "TOMBSTONE_PSEUDONYM_KEY": secrets.token_urlsafe(32),
        "TOMBSTONE_PSEUDONYM_KEY_ID": f"demo-{suffix}",
        "TOMBSTONE_INVENTORY": str(default_inventory_path()),
        # The demo's purge delay of hidden rows, instead of the inventory's day.
        "TOMBSTONE_PURGE_AFTER_S": os.environ.get("TOMBSTONE_PURGE_AFTER_S", "5"),
        # The password that `deploy/local/services.sh` gives the demo's PostgreSQL role.
        "TOMBSTONE_PG_PASSWORD": os.environ.get("TOMBSTONE_PG_PASSWORD", "tombstone"),
    }
    os.environ.update(run.env)


def _create_topics(kafka: KafkaSettings, profiles_topic: str) -> None:
    specs = pipeline_topics(kafka, partitions=3)
    specs.append(TopicSpec(profiles_topic, 3, 1, {"cleanup.policy": "compact"}))
    ensure_topics(AdminClient(kafka.client_config()), specs)


def _choose_customers(customers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    if not 1 <= count <= len(customers):
        raise TombstoneError(f"--customers must be between 1 and {len(customers)}, got {count}.")
    step = len(customers) // count
    return [customers[i * step] for i in range(count)]


def _request_deletions(kafka: KafkaSettings, chosen: list[dict[str, Any]]) -> list[DeletionRequest]:
    requests = [new_request(f"customer:{c['customer_id']}", data_class, "user_request", "demo")
                for c in chosen for data_class in DEMO_DATA_CLASSES]
    requester = Requester(kafka, client_id="tombstone-demo")
    try:
        requester.submit(requests)
    finally:
        requester.close()
    _say(f"Requested deletion of {len(chosen)} customers: {len(requests)} requests confirmed by the broker.")
    return requests


def _wait_for_proof(ledger: Ledger, run: DemoRun, requests: list[DeletionRequest], timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    ids = [r.request_id for r in requests]
    while True:
        ledger.refresh()
        views = [ledger.state.view(rid) for rid in ids]
        done = sum(1 for v in views if v is not None and v.complete)
        dead = failed_workers(run.workers)
        if dead:
            raise TombstoneError(f"Worker {dead[0].name} exited early. Its log ends with:\n{dead[0].tail()}")
        if done == len(ids):
            _say(f"Ledger: {done} of {len(ids)} requests complete.")
            return [v for v in views if v is not None]
        if time.monotonic() > deadline:
            raise TombstoneError(f"Only {done} of {len(ids)} requests were complete after {timeout_s:.0f} s.")
        time.sleep(0.5)


def _scrape_when_caught_up(workers: list[WorkerProcess], timeout_s: float = 30.0) -> dict[str, dict[str, int]]:
    """Scrape every worker, waiting until each reports no lag (commits trail the last proof)."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = {worker.name: scrape_worker(worker) for worker in workers}
        if all(m["lag_records"] == 0 for m in metrics.values()) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.5)
