"""Prometheus metrics of a worker, behind one facade with constant names.

Labels are bounded: store, topic, partition, status and reason. A subject id never
becomes a label value. Pass a fresh ``CollectorRegistry`` per worker so that tests and
in-process runs never share series.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

PREFIX = "tombstone"


def forget_partition_series(gauges: tuple[Gauge, ...], owner: str, topic: str, partition: int) -> None:
    """Remove the (owner, topic, partition) series of each gauge; a missing series is fine."""
    for gauge in gauges:
        try:
            gauge.remove(owner, topic, str(partition))
        except KeyError:
            pass


class WorkerMetrics:
    """Counters, gauges and histograms of one store worker."""

    def __init__(self, store: str, registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deletes = Counter(f"{PREFIX}_deletes", "Requests applied, by ack status.",
                               ["store", "status"], registry=r)
        self.items = Counter(f"{PREFIX}_items_affected", "Items deleted, hidden or rewritten.",
                             ["store"], registry=r)
        self.dead_letters = Counter(f"{PREFIX}_dead_letters", "Records sent to the dead-letter topic.",
                                    ["store", "reason"], registry=r)
        self.retries = Counter(f"{PREFIX}_retries", "Retried batch steps.", ["store", "step"], registry=r)
        self.commits = Counter(f"{PREFIX}_offset_commits", "Synchronous offset commits.", ["store"], registry=r)
        self.apply_seconds = Histogram(
            f"{PREFIX}_apply_seconds", "Time to apply and verify one batch in the store.", ["store"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.lag_records = Gauge(f"{PREFIX}_consumer_lag_records",
                                 "Records between the committed offset and the high watermark.",
                                 ["store", "topic", "partition"], registry=r)
        self.lag_seconds = Gauge(f"{PREFIX}_consumer_lag_seconds",
                                 "Age of the last committed record while records wait; 0 when caught up.",
                                 ["store", "topic", "partition"], registry=r)
        self.store_up = Gauge(f"{PREFIX}_store_up", "1 while the last store call succeeded.",
                              ["store"], registry=r)
        self.paused = Gauge(f"{PREFIX}_partitions_paused", "Partitions paused while the store fails.",
                            ["store"], registry=r)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the series of a partition this worker no longer owns."""
        forget_partition_series((self.lag_records, self.lag_seconds), self.store, topic, partition)


class HealthState:
    """Liveness and readiness of a worker for HTTP probes."""

    def __init__(self) -> None:
        self.live = True
        self.ready = False


class MetricsServer:
    """Serve /metrics, /healthz and /readyz on one port in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, health: HealthState, port: int,
                 host: str = "0.0.0.0") -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(registry, health))
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()
        logger.info("Serving /metrics, /healthz and /readyz on %s:%d", self._server.server_address[0], self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, health: HealthState) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
        "/metrics": lambda: (200, generate_latest(registry), CONTENT_TYPE_LATEST),
        "/healthz": lambda: (200 if health.live else 503, b"ok\n" if health.live else b"dead\n", "text/plain"),
        "/readyz": lambda: (200 if health.ready else 503, b"ready\n" if health.ready else b"not ready\n",
                            "text/plain"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            route = routes.get(self.path.split("?", 1)[0])
            status, body, content_type = route() if route else (404, b"not found\n", "text/plain")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            logger.debug("metrics http: " + format, *args)

    return Handler
