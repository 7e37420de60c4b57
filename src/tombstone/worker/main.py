"""Process entry point of ``tombstone worker SPEC``."""

from __future__ import annotations

import logging
import threading

from tombstone.metrics import HealthState, MetricsServer, WorkerMetrics
from tombstone.pseudonym import Pseudonymizer
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec
from tombstone.stores import build_store
from tombstone.worker.loop import Worker

logger = logging.getLogger(__name__)


def run_worker(spec_path: str, metrics_port: int | None, stop: threading.Event) -> int:
    """Load the spec, serve metrics and run the worker until ``stop`` is set."""
    spec = load_spec(spec_path)
    kafka = KafkaSettings()
    pseudonymizer = Pseudonymizer.from_settings()
    store = build_store(spec, kafka)
    metrics = WorkerMetrics(spec.name)
    health = HealthState()
    server = MetricsServer(metrics.registry, health, spec.metrics_port if metrics_port is None else metrics_port)
    server.start()
    logger.info("Metrics of store %s on port %d", spec.name, server.port)
    try:
        Worker(spec, kafka, store, pseudonymizer, metrics=metrics, health=health, stop=stop).run()
    finally:
        server.stop()
    return 0
