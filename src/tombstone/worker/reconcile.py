"""``tombstone reconcile``: replay every deletion onto a store restored from a backup.

A backup taken before a deletion brings the deleted data back when it is restored. The
reconciler reads the requests topic from its beginning, without a consumer group, and
applies every request of the store's data classes again with its own cut-off and the
store's policy. It verifies and acks each one with ``reconcile = true``. A purge or the end
of a retention that is already due is carried out at once. Cancelled requests and subjects
under a legal hold are left alone, as a worker would.

Run it before the restored store serves reads, with the store's worker stopped.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import Producer

from tombstone.errors import DecodeError, PermanentRecordError
from tombstone.inventory import StoreAction
from tombstone.kafka.producer import DurableProducer, producer_config
from tombstone.kafka.reader import TopicReader
from tombstone.models import DeletionRequest, RequestAction, utc_now
from tombstone.worker.loop import Worker
from tombstone.worker.policy import Result
from tombstone.worker.schedule import Step

logger = logging.getLogger(__name__)


@dataclass
class ReconcileCounts:
    read: int = 0  # records on the requests topic
    applied: int = 0  # requests of this store's data classes applied again
    items: int = 0  # items deleted, hidden, purged or rewritten by the replay
    skipped: int = 0  # other data classes, tombstones, undecodable records
    cancelled: int = 0
    rejected: int = 0
    replayed: int = 0  # outcomes taken from an existing receipt; the store ran the step again all the same
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "applied": self.applied, "items": self.items, "skipped": self.skipped,
                "replayed": self.replayed,
                "cancelled": self.cancelled, "rejected": self.rejected, "statuses": dict(sorted(self.statuses.items()))}


class Reconciler(Worker):
    """A worker that reads the whole requests topic once instead of following a group."""

    def reconcile(self, batch_size: int = 500, progress: TextIO | None = sys.stderr,
                  progress_every_s: float = 5.0) -> ReconcileCounts:
        self.reconciling = True
        counts = ReconcileCounts()
        requests = self._read_requests(counts)
        total = len(requests)
        self.store.open()
        self.policy.schedule.open()
        self.holds.refresh()
        self._producer = DurableProducer(producer_config(self.kafka, self.worker_id), factory=Producer)
        last_report = time.monotonic()
        try:
            for start in range(0, total, batch_size):
                self._reconcile_batch(requests[start:start + batch_size], counts)
                if progress is not None and (time.monotonic() - last_report >= progress_every_s
                                             or start + batch_size >= total):
                    done = min(start + batch_size, total)
                    print(f"reconcile {self.spec.name}: {done}/{total} requests ({100 * done // max(total, 1)}%), "
                          f"{counts.items} items removed or rewritten", file=progress, flush=True)
                    last_report = time.monotonic()
        finally:
            self.producer.close(5.0)
            self.policy.schedule.close()
            self.store.close()
            self.holds.close()
        return counts

    def _read_requests(self, counts: ReconcileCounts) -> list[DeletionRequest]:
        """Collect the DELETE requests of this store's data classes in topic order, minus cancelled ones."""
        found: dict[str, DeletionRequest] = {}
        cancelled: set[str] = set()
        for request in self._records(counts):
            if request.action is RequestAction.CANCEL:
                cancelled.add(request.request_id)
            elif request.data_class in self._data_classes:
                found.setdefault(request.request_id, request)
            else:
                counts.skipped += 1
        counts.cancelled = len(cancelled & set(found))
        return [r for rid, r in found.items() if rid not in cancelled]

    def _records(self, counts: ReconcileCounts) -> Iterator[DeletionRequest]:
        reader = TopicReader(self.kafka, [self.kafka.requests_topic], client_id=f"{self.worker_id}.reconcile")
        try:
            for message in reader.read_new(timeout_s=600):
                counts.read += 1
                if message.value() is None:
                    counts.skipped += 1
                    continue
                try:
                    yield self._requests.deserialize(message.value())
                except DecodeError:
                    counts.skipped += 1  # the worker dead-lettered it when it was new
        finally:
            reader.close()

    def _reconcile_batch(self, requests: list[DeletionRequest], counts: ReconcileCounts) -> None:
        result = Result()
        pending = list(requests)
        while pending:
            try:
                result.merge(self._retry("reconcile", lambda: self._apply_requests(pending)))
                break
            except PermanentRecordError as exc:
                logger.warning("Request %s cannot be applied in store %s (%s)", exc.request_id, self.spec.name,
                               exc.reason)
                counts.rejected += 1
                pending = [r for r in pending if r.request_id != exc.request_id]
        due = self._already_due(pending)
        for step, group in due.items():
            step_result = self._retry(step.value, lambda: self.policy.run_due(step, group, self._delete))
            result.merge(step_result)
            self.policy.finish(step, group)
        self._retry("ack", lambda: self._send_acks(pending, result.outcomes, result.remaining))
        counts.applied += len(pending)
        for outcome in result.outcomes.values():
            counts.items += 0 if outcome.replayed else outcome.items_affected
            counts.replayed += int(outcome.replayed)
            counts.statuses[outcome.status.value] = counts.statuses.get(outcome.status.value, 0) + 1

    def _already_due(self, requests: list[DeletionRequest]) -> dict[Step, list[DeletionRequest]]:
        """Hidden requests whose purge time and retained ones whose end date have passed."""
        now = utc_now()
        due: dict[Step, list[DeletionRequest]] = {}
        for request in requests:
            if self.policy.held(request):
                continue
            entry = self.policy.policies.get(request.data_class)
            if entry is None:
                continue
            if entry.action is StoreAction.HIDE:
                purge_at = request.requested_at.timestamp() + (entry.purge_after_s or 0)
                if purge_at <= now.timestamp():
                    due.setdefault(Step.PURGE, []).append(request)
            elif entry.action is StoreAction.RETAIN:
                until = entry.retained_until(request.requested_at)
                if until is not None and until <= now:
                    due.setdefault(Step.EXPIRE, []).append(request)
        return due
