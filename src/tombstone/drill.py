"""``tombstone drill restore --store NAME``: prove that a restored backup cannot bring data back.

Steps, on a broker of its own (or the one in KAFKA_BOOTSTRAP_SERVERS) with fresh topics:

1. Load Chinook into the store and snapshot it, as a nightly backup would.
2. Request deletion of some customers and run the store's worker until the ledger shows
   every request complete.
3. Restore the snapshot: the deleted customers are back. Scan them.
4. Reconcile the store from the requests topic, then scan again.

The JSON summary names the store and both counts. The drill passes when the first is above
zero, so the backup really held the data, and the second is zero.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tombstone.demo import run as demo
from tombstone.demo.audit import audit_store
from tombstone.demo.chinook import load_chinook
from tombstone.demo.load import load_stores, open_store
from tombstone.demo.processes import start_worker, stop_workers
from tombstone.errors import TombstoneError
from tombstone.inventory import default_inventory_path, load_inventory
from tombstone.ledger.ledger import Ledger
from tombstone.models import DeletionRequest
from tombstone.processes import free_port
from tombstone.pseudonym import Pseudonymizer
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.snapshots import check_kind, restore, take
from tombstone.stores import build_store
from tombstone.worker.reconcile import Reconciler

logger = logging.getLogger(__name__)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_drill(store: str, customers: int = 5, json_output: bool = False, keep: bool = False,
              timeout_s: float = 180.0) -> int:
    """Run the restore drill for one store; 0 when it passes."""
    run = demo.DemoRun(Path(tempfile.mkdtemp(prefix="tombstone-drill-")), {})
    try:
        summary = _drill(run, store, customers, timeout_s)
    finally:
        if run.workers:
            stop_workers(run.workers)
        if run.broker is not None:
            run.broker.stop()
        if not keep:
            shutil.rmtree(run.run_dir, ignore_errors=True)
    ok = summary["resurrected_before_reconcile"] > 0 and summary["remaining_after_reconcile"] == 0
    _say(f"{'OK' if ok else 'FAILED'}: the restored {store} held {summary['resurrected_before_reconcile']} items of "
         f"deleted customers; after reconciling, {summary['remaining_after_reconcile']} remain.")
    if json_output:
        print(json.dumps(summary, sort_keys=True))
    return 0 if ok else 1


def _drill(run: demo.DemoRun, store: str, customers: int, timeout_s: float) -> dict[str, Any]:
    if "," in store or store in ("all", "embedded"):
        raise TombstoneError(f"--store takes one store name, not {store!r}.")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or demo._start_broker(run)
    demo._prepare_env(run, bootstrap)
    [(name, (spec_path, spec))] = demo.select_specs(store).items()
    check_kind(spec)
    kafka = KafkaSettings()
    demo._create_topics(kafka, run.env["TOMBSTONE_PROFILES_TOPIC"])
    Path(run.env["TOMBSTONE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    inventory = load_inventory(default_inventory_path()).only_store(name)
    classes = [dc for dc in spec.data_classes if inventory.policy(dc, name) is not None]

    # Step 1. Load and back up.
    data = load_chinook()
    load_stores([spec], kafka, data)
    take(spec, run.run_dir / "snapshot")
    _say(f"Loaded Chinook into {name} and took a snapshot of it.")

    # Step 2. Delete with the worker, until the ledger shows every request complete.
    chosen = demo._choose_customers(data.customers, customers)
    subjects = [f"customer:{c['customer_id']}" for c in chosen]
    requests = _request(kafka, subjects, classes)
    run.specs = {name: (spec_path, spec)}
    log_dir = run.run_dir / "logs"
    log_dir.mkdir()
    run.workers.append(start_worker(name, spec_path, run.env, log_dir, free_port()))
    ledger = Ledger(inventory, kafka, Pseudonymizer.from_settings())
    try:
        demo._wait_for_proof(ledger, run, requests, timeout_s)
    finally:
        ledger.close()
    stop_workers(run.workers)
    run.workers = []
    after_delete = audit_store(open_store(spec, kafka), inventory, subjects, classes).remaining
    _say(f"Worker {name} completed {len(requests)} requests; {after_delete} items of those customers remain.")

    # Step 3. Restore the backup: the deleted data is back.
    restore(spec, run.run_dir / "snapshot")
    resurrected = audit_store(open_store(spec, kafka), inventory, subjects, classes).remaining
    _say(f"Restored the snapshot: {resurrected} items of the deleted customers are back.")

    # Step 4. Reconcile from the requests topic, then scan again.
    reconciler = Reconciler(spec, kafka, build_store(spec, kafka), Pseudonymizer.from_settings(),
                            inventory=inventory)
    counts = reconciler.reconcile()
    remaining = audit_store(open_store(spec, kafka), inventory, subjects, classes).remaining
    return {"store": name, "kind": spec.store.kind, "requests": len(requests),
            "remaining_after_deletion": after_delete, "resurrected_before_reconcile": resurrected,
            "remaining_after_reconcile": remaining, "reconcile": counts.to_dict()}


def _request(kafka: KafkaSettings, subjects: list[str], classes: list[str]) -> list[DeletionRequest]:
    requests = [new_request(s, dc, "user_request", "drill") for s in subjects for dc in classes]
    requester = Requester(kafka, client_id="tombstone-drill")
    try:
        requester.submit(requests)
    finally:
        requester.close()
    return requests
