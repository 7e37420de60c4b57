"""Process entry point of ``tombstone worker SPEC``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tombstone.errors import ConfigError
from tombstone.inventory import Inventory, default_inventory_path, load_inventory
from tombstone.metrics import HealthState, MetricsServer, WorkerMetrics
from tombstone.pseudonym import Pseudonymizer
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec, load_spec
from tombstone.stores import build_store
from tombstone.worker.loop import Worker

logger = logging.getLogger(__name__)


def check_against_inventory(spec: ConsumerSpec, inventory_path: Path) -> Inventory | None:
    """Fail when the inventory expects this store to prove a data class the spec does not hold.

    The worker skips such requests, so the ledger would wait for its proof forever. Returns
    the inventory, whose policies the worker follows, or None when there is none.
    """
    if not inventory_path.exists():
        logger.warning("No inventory at %s; cannot check the data classes of store %s, and every "
                       "data class is deleted at once", inventory_path, spec.name)
        return None
    inventory = load_inventory(inventory_path)
    expected = {name for name, data_class in inventory.data_classes.items()
                if spec.name in {entry.store for entry in data_class.stores}}
    missing = sorted(expected - set(spec.data_classes))
    if missing:
        raise ConfigError(
            f"The inventory {inventory_path} lists store {spec.name} for data class {missing[0]}, "
            "but its consumer spec does not. Add it to the spec's data_classes or fix the inventory."
        )
    for name in sorted(set(spec.data_classes) - expected):
        logger.warning("Store %s contains data class %s, which the inventory does not list for it; "
                       "its proofs will not count toward completion", spec.name, name)
    return inventory


def run_worker(spec_path: str, metrics_port: int | None, stop: threading.Event) -> int:
    """Load the spec, serve metrics and run the worker until ``stop`` is set."""
    spec = load_spec(spec_path)
    inventory = check_against_inventory(spec, default_inventory_path())
    kafka = KafkaSettings()
    kafka.resolved_bootstrap()
    pseudonymizer = Pseudonymizer.from_settings()
    store = build_store(spec, kafka)
    metrics = WorkerMetrics(spec.name)
    health = HealthState()
    port = spec.metrics_port if metrics_port is None else metrics_port
    try:
        server = MetricsServer(metrics.registry, health, port, spec.metrics_host)
    except OSError as exc:
        raise ConfigError(
            f"Cannot serve metrics on {spec.metrics_host}:{port}: {exc.strerror}. Another process "
            "uses the port; give this worker another one with --metrics-port (0 picks a free port)."
        ) from None
    server.start()
    try:
        Worker(spec, kafka, store, pseudonymizer, metrics=metrics, health=health, stop=stop,
               inventory=inventory).run()
    finally:
        server.stop()
    return 0
