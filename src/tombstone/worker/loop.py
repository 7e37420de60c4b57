"""The store worker: consume deletion requests, apply, verify, prove, commit.

For each ``consume()`` batch the worker runs these steps, and an offset is committed only
after every step for its record succeeded:

1. Decode. Records that can never be decoded go to the dead-letter topic (confirmed).
2. Apply the requests in the store, in one transaction where the store has them.
3. Verify: count what remains at or before each cut-off; any remainder fails the batch.
4. Publish one ack per request to the proofs topic and wait for every delivery report.
5. Commit, synchronously, the offsets after the batch's last record, per partition.

A failing step is retried with bounded exponential backoff and jitter. While it waits the
worker pauses its partitions and keeps polling, so it stays in its consumer group; it
never commits past the failure. Partitions revoked meanwhile are dropped from the batch:
their new owner replays them, and receipts make the replay report the same outcome.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from tombstone.errors import PermanentRecordError, StoreUnavailableError, TombstoneError, VerificationError
from tombstone.faults import crash_point
from tombstone.kafka.member import GroupMember, ShutdownRequested
from tombstone.kafka.producer import DurableProducer, producer_config
from tombstone.metrics import HealthState, WorkerMetrics
from tombstone.pseudonym import Pseudonymizer
from tombstone.serde import AckSerde, DeadLetterSerde, RequestSerde
from tombstone.settings import KafkaSettings
from tombstone.inventory import Inventory
from tombstone.models import DeletionRequest
from tombstone.spec import ConsumerSpec
from tombstone.stores.base import Outcome, Store
from tombstone.worker.acks import build_ack, build_dead_letter, rejected_outcome
from tombstone.worker.batch import Batch, Poison, Work, sort_batch
from tombstone.worker.holds import HoldBook
from tombstone.worker.policy import PolicyRunner, Result, work_key
from tombstone.worker.schedule import Schedule, Step

logger = logging.getLogger(__name__)


def consumer_config(spec: ConsumerSpec, kafka: KafkaSettings, worker_id: str) -> dict[str, Any]:
    """Consumer settings of the worker contract: no automatic commit, no automatic store."""
    config = kafka.client_config()
    config.update(
        {
            "group.id": spec.consumer_group,
            "client.id": worker_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": False,
        }
    )
    return config


class Worker(GroupMember):
    """One store's worker. ``run`` blocks until ``stop`` is set or a fatal error occurs."""

    def __init__(
        self,
        spec: ConsumerSpec,
        kafka: KafkaSettings,
        store: Store,
        pseudonymizer: Pseudonymizer,
        *,
        metrics: WorkerMetrics | None = None,
        health: HealthState | None = None,
        stop: threading.Event | None = None,
        consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
        inventory: Inventory | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.pseudonymizer = pseudonymizer
        self.worker_id = f"{spec.name}@{socket.gethostname()}:{os.getpid()}"
        super().__init__(spec.name, kafka, spec.retry, metrics or WorkerMetrics(spec.name),
                         [kafka.requests_topic], stop)
        self.health = health or HealthState()
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._requests = RequestSerde()
        self._acks = AckSerde()
        self._dead_letters = DeadLetterSerde()
        self._data_classes = frozenset(spec.data_classes)
        self._producer: DurableProducer | None = None
        policies = {dc: entry for dc in spec.data_classes
                    if inventory is not None and (entry := inventory.policy(dc, spec.name)) is not None}
        self.holds = HoldBook(kafka)
        self.policy = PolicyRunner(store, policies, Schedule(Path(spec.state_dir) / f"{spec.name}.schedule.sqlite"),
                                   self.holds)
        self._due_checked = 0.0
        # Set by the reconciler: acks then carry the reconcile marker.
        self.reconciling = False

    # Lifecycle

    def run(self) -> None:
        """Open the store, join the group and process batches until stopped."""
        logger.info(
            "Worker %s starting: store=%s kind=%s group=%s topic=%s batch_size=%d",
            self.worker_id, self.spec.name, self.store.kind, self.spec.consumer_group,
            self.kafka.requests_topic, self.spec.batch_size,
        )
        try:
            self._retry("open store", self.store.open)
            self.policy.check()
            self.policy.schedule.open()
            self._producer = DurableProducer(
                producer_config(self.kafka, self.worker_id), factory=self._producer_factory
            )
            self.consumer = self._consumer_factory(consumer_config(self.spec, self.kafka, self.worker_id))
            self.consumer.subscribe(
                [self.kafka.requests_topic], on_assign=self._on_assign,
                on_revoke=self._on_revoke, on_lost=self._on_revoke,
            )
            self.health.ready = True
            while not self.stop.is_set():
                self._resume_fresh()
                messages = self._consume(self.spec.batch_size, self.spec.poll_timeout_s)
                if messages:
                    self.process(messages)
                self._run_due()
                self._refresh_lag()
        except ShutdownRequested:
            logger.info("Worker %s stopping during a retry wait; nothing committed for the pending batch",
                        self.worker_id)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.health.ready = False
        # enable.auto.commit is false, so close() leaves the group without committing.
        if self.consumer is not None:
            self.consumer.close()
        if self._producer is not None:
            left = self._producer.close(5.0)
            if left:
                logger.warning("%d records were still undelivered at shutdown", left)
        self.store.close()
        self.policy.schedule.close()
        self.holds.close()
        logger.info("Worker %s stopped", self.worker_id)

    # The batch

    def process(self, messages: Sequence[Message]) -> None:
        """Run the five steps on one batch; see the module docstring."""
        self._revoked.clear()

        # Step 1. Decode; poison goes to the dead-letter topic before anything else.
        batch = sort_batch(messages, self._requests, self._data_classes, self._on_batch_error)
        if batch.poison:
            self._retry("dead-letter", lambda: self._send_dead_letters(batch.poison))
            crash_point("after_dead_letter")

        # Step 2 and 3. Apply and verify.
        outcomes: dict[str, Outcome] = {}
        remaining: dict[str, int] = {}
        if batch.work:
            # Fail closed: while the holds cannot be read, the batch waits instead of deleting.
            self._retry("holds", self.holds.refresh)
            outcomes, remaining = self._retry("apply", lambda: self._apply_and_verify(batch))
            crash_point("after_apply")

        # Step 4. Publish acks and wait until the broker confirmed each one.
        if outcomes:
            requests = [w.request for w in batch.work]
            self._retry("ack", lambda: self._send_acks(requests, outcomes, remaining))
            crash_point("after_ack")

        # Step 5. Commit the offsets after the batch, synchronously.
        crash_point("before_commit")
        self._commit(batch)
        crash_point("after_commit")
        self._log_batch(batch, outcomes)

    def _log_batch(self, batch: Batch, outcomes: dict[str, Outcome]) -> None:
        if not outcomes and not batch.poison:
            return
        statuses = Counter(outcome.status.value for outcome in outcomes.values())
        logger.info("Batch done: %d requests (%s), %d dead-lettered, %d skipped; offsets committed",
                    len(outcomes), ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none",
                    len(batch.poison), batch.skipped)

    def _apply_and_verify(self, batch: Batch) -> tuple[dict[str, Outcome], dict[str, int]]:
        """Apply the batch's requests by policy; a request the store rejects is dead-lettered."""
        started = time.monotonic()
        rejected: dict[str, Outcome] = {}
        while True:
            pending = [w.request for w in batch.work if work_key(w.request) not in rejected]
            try:
                result = self._apply_requests(pending)
                break
            except PermanentRecordError as exc:
                work = self._find_work(batch, exc.request_id)
                logger.warning("%s rejected by store %s (%s): %s", work.position, self.spec.name, exc.reason, exc)
                poison = [Poison(work.position, exc.reason, str(exc), work.message)]
                self._retry("dead-letter", lambda: self._send_dead_letters(poison))
                rejected[work_key(work.request)] = rejected_outcome(exc.reason)
        self.metrics.apply_seconds.labels(self.spec.name).observe(time.monotonic() - started)
        self.metrics.store_up.labels(self.spec.name).set(1)
        result.remaining.update({key: 0 for key in rejected})
        return {**result.outcomes, **rejected}, result.remaining

    def _apply_requests(self, requests: list[DeletionRequest]) -> Result:
        plain = [r for r in requests if self.policy.needs_worker_delete(r)]
        result = self._delete(plain)
        others = [r for r in requests if not self.policy.needs_worker_delete(r)]
        if others:
            result.merge(self.policy.apply(others))
        return result

    def _delete(self, requests: list[DeletionRequest]) -> Result:
        """Delete at or before each cut-off and verify that nothing is left."""
        if not requests:
            return Result()
        outcomes = self.store.apply(requests)
        counts = self.store.count_remaining(requests)
        still_there = {rid: n for rid, n in counts.items() if n}
        if still_there:
            raise VerificationError(
                f"Store {self.spec.name} still contains data of {len(still_there)} requests after "
                f"the delete (first: request {next(iter(still_there))}); no ack is sent."
            )
        return Result(outcomes, counts)

    def _run_due(self, interval_s: float = 1.0) -> None:
        """Carry out purges, ended retentions and released holds whose time has come."""
        now = time.monotonic()
        if now - self._due_checked < interval_s:
            return
        self._due_checked = now
        self._retry("holds", self.holds.refresh)
        ready: dict[Step, list[DeletionRequest]] = {}
        for step, request in self.policy.due():
            ready.setdefault(step, []).append(request)
        for step, requests in ready.items():
            result = self._retry(f"{step.value}", lambda: self.policy.run_due(step, requests, self._delete))
            self._retry("ack", lambda: self._send_acks(requests, result.outcomes, result.remaining))
            self.policy.finish(step, requests)
            logger.info("Carried out %d due %s steps", len(requests), step.value)

    def _find_work(self, batch: Batch, request_id: str | None) -> Work:
        for work in batch.work:
            if work.request.request_id == request_id:
                return work
        raise TombstoneError(
            f"Store {self.spec.name} rejected request {request_id}, which is not in the batch; "
            "a store must name the request it rejects."
        )

    @property
    def producer(self) -> DurableProducer:
        if self._producer is None:
            raise TombstoneError("The worker's producer is not created yet; call run() first.")
        return self._producer

    def _send_dead_letters(self, poison: list[Poison]) -> None:
        for item in poison:
            envelope, key, headers = build_dead_letter(item.message, item.position, item.reason, item.error,
                                                       self.worker_id)
            self.producer.send(self.kafka.dead_letter_topic, key, self._dead_letters.serialize(envelope), headers)
        self.producer.confirm(self.spec.ack_timeout_s)
        for item in poison:
            self.metrics.dead_letters.labels(self.spec.name, item.reason).inc()
            logger.warning("%s dead-lettered to %s with reason %s", item.position,
                           self.kafka.dead_letter_topic, item.reason)

    def _send_acks(self, requests: list[DeletionRequest], outcomes: dict[str, Outcome],
                   remaining: dict[str, int]) -> None:
        sent = []
        for request in requests:
            key = work_key(request)
            outcome = outcomes.get(key)
            if outcome is None:
                continue
            ack = build_ack(request, outcome, remaining.get(key, 0), self.spec.name, self.worker_id,
                            self.pseudonymizer, reconcile=self.reconciling)
            self.producer.send(self.kafka.proofs_topic, ack.proof_key, self._acks.serialize(ack))
            sent.append((request, outcome))
        self.producer.confirm(self.spec.ack_timeout_s)
        # Counted once per batch, because a labels() lookup per request is a measurable part of the ack step.
        statuses = Counter(outcome.status.value for _, outcome in sent)
        for status, count in statuses.items():
            self.metrics.deletes.labels(self.spec.name, status).inc(count)
        if sent:
            self.metrics.items.labels(self.spec.name).inc(
                sum(outcome.items_affected for _, outcome in sent if not outcome.replayed))
        if logger.isEnabledFor(logging.DEBUG):
            for request, outcome in sent:
                logger.debug("Request %s: %s (%d items)%s", request.request_id, outcome.status.value,
                             outcome.items_affected, " replayed" if outcome.replayed else "")

    def _on_retry_error(self, error: BaseException) -> None:
        if isinstance(error, StoreUnavailableError):
            self.metrics.store_up.labels(self.spec.name).set(0)
