"""``tombstone ledger``: follow the topics and export completion metrics."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tombstone.errors import TombstoneError
from tombstone.inventory import Inventory
from tombstone.ledger.housekeeping import Housekeeper
from tombstone.ledger.ledger import Ledger
from tombstone.ledger.state import RequestView
from tombstone.metrics import PREFIX

logger = logging.getLogger(__name__)


class LedgerMetrics:
    """Gauges of request completion, recomputed from the ledger state on every refresh."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Gauge(f"{PREFIX}_ledger_requests", "Requests by completion state.", ["state"], registry=r)
        self.overdue = Gauge(f"{PREFIX}_ledger_overdue_requests",
                             "Pending requests past the deletion bound of a store that has not proven them.",
                             registry=r)
        self.rejected = Gauge(f"{PREFIX}_ledger_rejected_requests",
                              "Requests that at least one store rejected.", registry=r)
        self.oldest_open = Gauge(f"{PREFIX}_ledger_oldest_open_request_age_seconds",
                                 "Age of the oldest pending request.", registry=r)
        self.completion = Histogram(
            f"{PREFIX}_ledger_request_completion_seconds",
            "Time from a request to the last proof that completed it.",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400), registry=r)
        self.undecodable = Counter(f"{PREFIX}_ledger_undecodable_records",
                                   "Records on the requests or proofs topic the ledger cannot read.", registry=r)
        self._completed: set[str] = set()
        self._undecodable_seen = 0
        # Completions older than this process were observed by an earlier ledger process.
        self.started_at = datetime.now(UTC)

    def update(self, ledger: Ledger, now: datetime | None = None) -> None:
        """Recompute every gauge from the ledger's state."""
        now = now or datetime.now(UTC)
        views = ledger.state.views()
        pending = [v for v in views if not v.complete]
        self.requests.labels("pending").set(len(pending))
        self.requests.labels("complete").set(len(views) - len(pending))
        self.overdue.set(sum(1 for v in pending if is_overdue(v, ledger.state.inventory, now)))
        self.rejected.set(sum(1 for v in views if ledger.state.rejected_and_open(v)))
        oldest = min((v.request.requested_at for v in pending), default=None)
        self.oldest_open.set((now - oldest).total_seconds() if oldest else 0)
        for view in views:
            if view.complete and view.request.request_id not in self._completed:
                self._completed.add(view.request.request_id)
                if last_proof_at(view) >= self.started_at:
                    self.completion.observe(completion_seconds(view))
        self.undecodable.inc(ledger.undecodable - self._undecodable_seen)
        self._undecodable_seen = ledger.undecodable


def is_overdue(view: RequestView, inventory: Inventory, now: datetime) -> bool:
    """True when a store that has not proven the request is past its deletion bound."""
    entry = inventory.data_classes.get(view.request.data_class)
    if entry is None:
        return False
    bounds = {store.store: store.max_delay_s for store in entry.stores}
    return any(
        row.expected and not row.terminal
        and now > view.request.requested_at + timedelta(seconds=bounds.get(row.store, 0))
        for row in view.rows
    )


def last_proof_at(view: RequestView) -> datetime:
    times = [row.applied_at for row in view.rows if row.applied_at is not None]
    return max(times) if times else view.request.requested_at


def completion_seconds(view: RequestView) -> float:
    times = [row.applied_at for row in view.rows if row.applied_at is not None]
    if not times:
        return 0.0
    return max(0.0, (max(times) - view.request.requested_at).total_seconds())


def run_ledger(ledger: Ledger, metrics: LedgerMetrics, stop: threading.Event, interval_s: float,
               housekeeper: Housekeeper | None = None) -> None:
    """Refresh the ledger and its metrics every ``interval_s`` until ``stop`` is set.

    With a ``housekeeper``, each successful refresh is followed by a housekeeping run.
    """
    logger.info("Ledger following %s and %s every %.1f s",
                ledger.kafka.requests_topic, ledger.kafka.proofs_topic, interval_s)
    while not stop.is_set():
        try:
            ledger.refresh()
        except TombstoneError as exc:
            logger.warning("Ledger refresh failed, serving the last state: %s", exc)
        else:
            metrics.update(ledger)
            if housekeeper is not None:
                _run_housekeeping(housekeeper, ledger)
        stop.wait(interval_s)
    logger.info("Ledger stopped")


def _run_housekeeping(housekeeper: Housekeeper, ledger: Ledger) -> None:
    try:
        housekeeper.run(ledger)
    except TombstoneError as exc:
        logger.warning("Housekeeping failed, retrying after the next refresh: %s", exc)
