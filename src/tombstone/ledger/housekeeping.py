"""Tombstone housekeeping: remove fully proven, old requests from the requests topic.

The requests topic keeps every open request as a non-null value, so that a lagging worker
and a store restored from backup can still read it. Once every store has proven a request
and every backup that could predate the deletion has expired, the request has no reader
left. Housekeeping then produces a real Kafka tombstone (the key with a null value), and
compaction removes first the request's value and, ``delete.retention.ms`` later, the
tombstone itself.

A key is nulled only when all of these hold:

- its latest value on the topic is a request that the ledger counts complete by its own
  acks (every store named by the inventory acked a terminal status other than REJECTED);
- every earlier request that the ledger has read for the key is complete as well;
- that request's ``requested_at`` is older than the backup horizon;
- the key still has no newer record when the partition is read again just before the
  tombstone is produced.

A newer request for the key that lands between that second read and the tombstone is
found afterwards by reading the partition once more, and is produced again (see
``Housekeeper._restore_overwritten``).

Log lines name request ids, never Kafka keys, because a key contains the subject id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter, Gauge

from tombstone.errors import DecodeError, DeliveryError
from tombstone.kafka.producer import Delivery, DurableProducer, producer_config
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.ledger import Ledger
from tombstone.ledger.state import LedgerState
from tombstone.metrics import PREFIX
from tombstone.models import DeletionRequest
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPosition:
    """The latest record of one key on the requests topic."""

    partition: int
    offset: int
    # None for a tombstone and for a value that cannot be decoded.
    request_id: str | None
    tombstone: bool = False


@dataclass(frozen=True)
class Candidate:
    """A complete request that is still the latest value of its key."""

    key: bytes
    position: KeyPosition
    request: DeletionRequest

    def age(self, now: datetime) -> timedelta:
        return now - self.request.requested_at


@dataclass
class HousekeepingReport:
    """Counts of one housekeeping run."""

    # Complete requests that are still the latest value of their key.
    retained_complete: int = 0
    # Of those, requests older than the backup horizon.
    older_than_horizon: int = 0
    # Tombstones that the broker confirmed.
    tombstoned: int = 0
    # Candidates whose key received a newer record before the tombstone was produced.
    skipped_newer: int = 0
    # Newer requests that a tombstone nulled and that were produced again.
    restored: int = 0
    dry_run: bool = False
    oldest_candidate_requested_at: datetime | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "retained_complete": self.retained_complete,
            "older_than_horizon": self.older_than_horizon,
            "tombstoned": self.tombstoned,
            "skipped_newer": self.skipped_newer,
            "restored": self.restored,
            "dry_run": self.dry_run,
            "oldest_candidate_requested_at": (self.oldest_candidate_requested_at.isoformat()
                                              if self.oldest_candidate_requested_at else None),
        }


def select_candidates(state: LedgerState, latest: Mapping[bytes, KeyPosition]) -> list[Candidate]:
    """Return the complete requests that are the latest value of their key, oldest first.

    The latest request must be complete by its own acks, and every earlier request that the
    ledger has read for the key must be complete as well, by its own acks or as superseded.
    A key whose latest value is a tombstone, cannot be decoded or is not yet known to the
    ledger has no candidate.
    """
    candidates: list[Candidate] = []
    for key, position in latest.items():
        if position.tombstone or position.request_id is None:
            continue
        view = state.view(position.request_id)
        if view is None or not view.complete or view.superseded_by is not None:
            continue
        if not _earlier_requests_complete(state, view.request):
            continue
        candidates.append(Candidate(key, position, view.request))
    candidates.sort(key=lambda c: c.request.requested_at)
    return candidates


def _earlier_requests_complete(state: LedgerState, request: DeletionRequest) -> bool:
    # An earlier request that is still open, for example because a store rejected it, keeps
    # the key, so housekeeping removes only keys whose every known request is complete.
    for request_id in state.by_key.get(request.kafka_key, []):
        if request_id == request.request_id:
            break
        view = state.view(request_id)
        if view is not None and not view.complete:
            return False
    return True


def older_than(candidates: Iterable[Candidate], horizon: timedelta, now: datetime) -> list[Candidate]:
    return [c for c in candidates if c.age(now) > horizon]


class RequestKeyIndex:
    """The latest record of every key on the requests topic, read without a consumer group.

    The ledger's own state records requests but not tombstones, and not which record of a
    key is the latest, so the index reads the requests topic a second time.
    """

    def __init__(self, kafka: KafkaSettings, read_timeout_s: float = 30.0) -> None:
        self.topic = kafka.requests_topic
        self.latest: dict[bytes, KeyPosition] = {}
        self._reader = TopicReader(kafka, [kafka.requests_topic], "tombstone-housekeeping")
        self._serde = RequestSerde()
        self._read_timeout_s = read_timeout_s

    def refresh(self, watch: Set[bytes] = frozenset()) -> list[Message]:
        """Read up to the current end of every partition and return the records of ``watch`` keys.

        Raises:
            RetriableKafkaError: the end was not reached within the read timeout.
        """
        watched: list[Message] = []
        for message in self._reader.read_new(self._read_timeout_s):
            key = message.key()
            if key is None:
                continue  # a compacted topic rejects keyless records, so none should arrive
            value = message.value()
            self.latest[key] = KeyPosition(message.partition(), message.offset(),
                                           self.request_id_of(value), value is None)
            if key in watch:
                watched.append(message)
        return watched

    def request_id_of(self, value: bytes | None) -> str | None:
        """Return the request id of a record's value, or None for a tombstone or an undecodable value."""
        if value is None:
            return None
        try:
            return self._serde.deserialize(value).request_id
        except DecodeError:
            return None  # the workers dead-letter such a value, and housekeeping never nulls its key

    def close(self) -> None:
        self._reader.close()


class HousekeepingMetrics:
    """Housekeeping series in the ledger's registry. No label names a subject."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tombstones = Counter(f"{PREFIX}_housekeeping_tombstones_written",
                                  "Null-value tombstones on the requests topic confirmed by the broker.",
                                  registry=r)
        self.restored = Counter(f"{PREFIX}_housekeeping_requests_restored",
                                "Newer requests that a housekeeping tombstone nulled and that were produced again.",
                                registry=r)
        self.runs = Counter(f"{PREFIX}_housekeeping_runs", "Housekeeping runs by result.", ["result"],
                            registry=r)
        self.retained = Gauge(f"{PREFIX}_housekeeping_retained_complete_requests",
                              "Complete requests that are still the latest value of their key.", registry=r)
        self.oldest_candidate = Gauge(
            f"{PREFIX}_housekeeping_oldest_candidate_age_seconds",
            "Age of the oldest complete request not yet tombstoned on the requests topic; 0 when none.",
            registry=r)
        self.horizon = Gauge(f"{PREFIX}_housekeeping_backup_horizon_seconds",
                             "Configured backup horizon; older complete requests are tombstoned.", registry=r)
        for result in ("ok", "failed"):
            self.runs.labels(result)

    def observe(self, retained: int, oldest_requested_at: datetime | None, now: datetime) -> None:
        self.retained.set(retained)
        age = (now - oldest_requested_at).total_seconds() if oldest_requested_at else 0.0
        self.oldest_candidate.set(max(0.0, age))


@dataclass
class _Written:
    candidate: Candidate
    delivery: Delivery


@dataclass
class Housekeeper:
    """Tombstone complete requests older than the backup horizon, as the module docstring describes.

    ``backup_horizon`` must be at least the longest backup retention of any store, plus the
    time requests take to complete. A backup taken after a request but before its store
    deleted the data still contains that data, and restoring it needs the request on the
    topic to reconcile the store.
    """

    kafka: KafkaSettings
    backup_horizon: timedelta
    dry_run: bool = False
    metrics: HousekeepingMetrics | None = None
    # Tombstones per produce-and-confirm round; the partitions are read again before each.
    batch_size: int = 500
    read_timeout_s: float = 30.0
    producer: DurableProducer | None = None
    index: RequestKeyIndex = field(init=False)

    def __post_init__(self) -> None:
        if self.backup_horizon <= timedelta(0):
            raise ValueError(f"The backup horizon must be positive, got {self.backup_horizon}.")
        self.index = RequestKeyIndex(self.kafka, self.read_timeout_s)
        if self.producer is None and not self.dry_run:
            self.producer = DurableProducer(producer_config(self.kafka, "tombstone-housekeeping"))
        if self.metrics is not None:
            self.metrics.horizon.set(self.backup_horizon.total_seconds())

    def run(self, ledger: Ledger, now: datetime | None = None) -> HousekeepingReport:
        """Tombstone every eligible request. Refresh ``ledger`` just before the call.

        Raises:
            RetriableKafkaError: the requests topic could not be read to its end.
            DeliveryError: a tombstone or a restored request was not confirmed. Tombstones
                confirmed before the error are counted in the metrics.
        """
        try:
            report = self._run(ledger.state, now or datetime.now(UTC))
        except Exception:
            if self.metrics is not None:
                self.metrics.runs.labels("failed").inc()
            raise
        if self.metrics is not None:
            self.metrics.runs.labels("ok").inc()
        return report

    def _run(self, state: LedgerState, now: datetime) -> HousekeepingReport:
        self.index.refresh()
        retained = select_candidates(state, self.index.latest)
        eligible = older_than(retained, self.backup_horizon, now)
        report = HousekeepingReport(retained_complete=len(retained), older_than_horizon=len(eligible),
                                    dry_run=self.dry_run)
        if not self.dry_run:
            for start in range(0, len(eligible), self.batch_size):
                self._tombstone_batch(eligible[start:start + self.batch_size], report)
        # Tombstoned requests stop being candidates at once, not at the next run.
        remaining = select_candidates(state, self.index.latest) if report.tombstoned else retained
        report.oldest_candidate_requested_at = remaining[0].request.requested_at if remaining else None
        if self.metrics is not None:
            self.metrics.observe(len(remaining), report.oldest_candidate_requested_at, now)
        if report.tombstoned or report.skipped_newer:
            logger.info("Housekeeping on %s: %d tombstones written, %d candidates skipped for a newer "
                        "record, %d newer requests produced again", self.index.topic, report.tombstoned,
                        report.skipped_newer, report.restored)
        return report

    def _tombstone_batch(self, batch: list[Candidate], report: HousekeepingReport) -> None:
        """Read the partitions again, then null each key whose latest record is unchanged."""
        assert self.producer is not None
        self.index.refresh()
        unchanged = []
        for candidate in batch:
            if self.index.latest.get(candidate.key) == candidate.position:
                unchanged.append(candidate)
            else:
                report.skipped_newer += 1
                logger.info("Request %s is no longer the latest value of its key, so it was not tombstoned",
                            candidate.request.request_id)
        if not unchanged:
            return

        # NOTE: Kafka has no conditional write. A request for the same key that the broker
        # appends after the read above and before the tombstone is nulled. That window is
        # one produce round trip, and _restore_overwritten produces the request again once
        # the tombstone is confirmed. If this process stops in between, the request's value
        # stays on the topic only until compaction, min.compaction.lag.ms or more later.
        written = [_Written(c, self.producer.send_tombstone(self.index.topic, c.key)) for c in unchanged]
        failure: DeliveryError | None = None
        try:
            self.producer.confirm(self.kafka.delivery_timeout_s)
        except DeliveryError as exc:
            failure = exc

        confirmed = [w for w in written if w.delivery.confirmed]
        report.tombstoned += len(confirmed)
        if self.metrics is not None:
            self.metrics.tombstones.inc(len(confirmed))
        for item in confirmed:
            logger.debug("Tombstoned request %s at %s[%s]@%s", item.candidate.request.request_id,
                         self.index.topic, item.delivery.partition, item.delivery.offset)

        # The confirmed tombstones may have landed after a newer request even when others failed.
        if confirmed:
            self._restore_overwritten(confirmed, report)
        if failure is not None:
            raise failure

    def _restore_overwritten(self, written: list[_Written], report: HousekeepingReport) -> None:
        """Produce again each newer request that landed between a candidate and its tombstone.

        Compaction would otherwise remove that request's value although its promise is open.
        A record that landed after the tombstone is the key's latest value already.
        """
        assert self.producer is not None
        by_key = {item.candidate.key: item for item in written}
        messages = self.index.refresh(watch=set(by_key))
        overwritten: dict[bytes, Message] = {}
        for message in messages:
            item = by_key[message.key()]
            if (message.value() is not None
                    and item.candidate.position.offset < message.offset() < item.delivery.offset):
                overwritten[message.key()] = message
        restored: list[str | None] = []
        for key, message in overwritten.items():
            latest = self.index.latest.get(key)
            if latest is None or latest.offset != by_key[key].delivery.offset:
                continue
            request_id = self.index.request_id_of(message.value())
            logger.warning("Request %s was written to its key just before the housekeeping tombstone "
                           "of request %s; producing it again", request_id,
                           by_key[key].candidate.request.request_id)
            self.producer.send(self.index.topic, key, message.value(), message.headers())
            restored.append(request_id)
        if not restored:
            return

        try:
            self.producer.confirm(self.kafka.delivery_timeout_s)
        except DeliveryError:
            # A later run cannot find these requests, because the tombstone is their key's latest record.
            logger.error("Requests %s were nulled by a housekeeping tombstone and producing them again "
                         "failed. Request those deletions again before compaction removes them; "
                         "`tombstone proof show REQUEST_ID` shows each request.",
                         ", ".join(str(r) for r in restored))
            raise
        report.restored += len(restored)
        if self.metrics is not None:
            self.metrics.restored.inc(len(restored))

    def close(self) -> None:
        self.index.close()
        if self.producer is not None:
            left = self.producer.close(self.kafka.delivery_timeout_s)
            if left:
                logger.error("%d housekeeping records were not delivered before closing", left)

