"""Housekeeping on the real broker: which requests get a tombstone, and compaction after it.

The requests topic of these tests compacts within seconds (``FAST_COMPACTION``). Acks are
produced by the tests themselves, so no worker runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.helpers import wait_for
from tombstone.cli import main
from tombstone.inventory import Inventory
from tombstone.kafka.producer import DurableProducer, producer_config
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.housekeeping import Housekeeper, HousekeepingMetrics, HousekeepingReport
from tombstone.ledger.ledger import Ledger
from tombstone.ledger.service import LedgerMetrics, run_ledger
from tombstone.models import AckStatus, DeletionAck, DeletionRequest, utc_now
from tombstone.requester import Requester
from tombstone.serde import AckSerde, RequestSerde
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration

STORES = ("operational-db", "search")
INVENTORY_TOML = """
[data_classes.customer_profile]
subject_types = ["customer"]
stores = [{ store = "operational-db", action = "delete" }, { store = "search", action = "delete" }]
"""
INVENTORY = Inventory.model_validate({"data_classes": {"customer_profile": {
    "subject_types": ["customer"],
    "stores": [{"store": store, "action": "delete"} for store in STORES]}}})

# Roll a segment on the first write after 100 ms, clean it at once, and drop tombstones
# 100 ms after the cleaner first saw them. The broker checks for work every
# log.cleaner.backoff.ms (500 ms in deploy/kafka/server.properties).
FAST_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "100",
    "min.compaction.lag.ms": "0",
}
HOUR = timedelta(hours=1)


@pytest.fixture
def kafka(kafka_env: dict[str, str], create_topic: Callable[..., str]) -> KafkaSettings:
    settings = KafkaSettings()
    create_topic(settings.requests_topic, 1, FAST_COMPACTION)
    create_topic(settings.proofs_topic, 1, {"cleanup.policy": "compact"})
    return settings


@pytest.fixture
def producer(kafka: KafkaSettings) -> Iterator[DurableProducer]:
    durable = DurableProducer(producer_config(kafka, "test-housekeeping"))
    yield durable
    durable.close()


def make_request(subject_id: str, age: timedelta) -> DeletionRequest:
    at = utc_now() - age
    return DeletionRequest(subject_type="customer", subject_id=subject_id, data_class="customer_profile",
                           reason="user_request", requested_by="test", requested_at=at, cutoff_at=at)


def submit(kafka: KafkaSettings, *requests: DeletionRequest) -> None:
    requester = Requester(kafka, client_id="test-housekeeping-requester")
    try:
        requester.submit(requests)
    finally:
        requester.close()


def prove(kafka: KafkaSettings, producer: DurableProducer, request: DeletionRequest, *stores: str,
          status: AckStatus = AckStatus.DELETED) -> None:
    serde = AckSerde()
    for store in stores:
        ack = DeletionAck(request_id=request.request_id, store=store, worker=f"test-{store}", status=status,
                          items_affected=1, remaining=0, data_class=request.data_class,
                          subject_pseudonym="pseudonym", pseudonym_key_id="test")
        producer.send(kafka.proofs_topic, ack.proof_key, serde.serialize(ack))
    producer.confirm(kafka.delivery_timeout_s)


def values_of(kafka: KafkaSettings, key: str) -> list[bytes | None]:
    """Every value of ``key`` on the requests topic, read from the beginning; None is a tombstone."""
    reader = TopicReader(kafka, [kafka.requests_topic], "test-housekeeping-reader")
    try:
        return [m.value() for m in reader.read_new() if m.key() == key.encode()]
    finally:
        reader.close()


def request_ids(values: list[bytes | None]) -> list[str | None]:
    serde = RequestSerde()
    return [serde.deserialize(v).request_id if v is not None else None for v in values]


def housekeep(kafka: KafkaSettings, horizon: timedelta, **options: object) -> HousekeepingReport:
    ledger = Ledger(INVENTORY, kafka)
    housekeeper = Housekeeper(kafka, horizon, **options)
    try:
        ledger.refresh()
        return housekeeper.run(ledger)
    finally:
        housekeeper.close()
        ledger.close()


def test_complete_old_request_compacted_away(kafka: KafkaSettings, producer: DurableProducer) -> None:
    request = make_request("1", 2 * HOUR)
    submit(kafka, request)
    prove(kafka, producer, request, *STORES)

    report = housekeep(kafka, HOUR)

    assert report.retained_complete == 1
    assert report.older_than_horizon == 1
    assert report.tombstoned == 1
    assert values_of(kafka, request.kafka_key)[-1] is None

    # Compaction needs a later segment: each filler write rolls the segment and dirties the log.
    filler = make_request("999999", timedelta(0))
    seen: list[list[str | None]] = []
    deadline = time.monotonic() + 180
    while True:
        submit(kafka, filler.model_copy(update={"request_id": f"filler-{len(seen)}"}))
        ids = request_ids(values_of(kafka, request.kafka_key))
        if not seen or seen[-1] != ids:
            seen.append(ids)
        if not ids:
            break
        assert time.monotonic() < deadline, f"the key was not compacted away within 180 s; states: {seen}"
        time.sleep(0.5)
    # Compaction only removes: the value went first, then the tombstone.
    assert all(state == seen[0][len(seen[0]) - len(state):] for state in seen), seen

    fresh = Ledger(INVENTORY, kafka)
    try:
        fresh.refresh()
        assert request.request_id not in fresh.state.requests
    finally:
        fresh.close()


def test_pending_and_rejected_not_tombstoned(kafka: KafkaSettings, producer: DurableProducer) -> None:
    pending = make_request("2", 2 * HOUR)
    rejected = make_request("3", 2 * HOUR)
    submit(kafka, pending, rejected)
    prove(kafka, producer, pending, "operational-db")
    prove(kafka, producer, rejected, "operational-db")
    prove(kafka, producer, rejected, "search", status=AckStatus.REJECTED)

    report = housekeep(kafka, timedelta(seconds=1))

    assert report.retained_complete == 0
    assert report.tombstoned == 0
    assert request_ids(values_of(kafka, pending.kafka_key)) == [pending.request_id]
    assert request_ids(values_of(kafka, rejected.kafka_key)) == [rejected.request_id]


def test_young_request_not_tombstoned(kafka: KafkaSettings, producer: DurableProducer) -> None:
    young = make_request("4", timedelta(0))
    submit(kafka, young)
    prove(kafka, producer, young, *STORES)
    metrics = HousekeepingMetrics()

    report = housekeep(kafka, HOUR, metrics=metrics)

    assert report.retained_complete == 1
    assert report.older_than_horizon == 0
    assert report.tombstoned == 0
    assert request_ids(values_of(kafka, young.kafka_key)) == [young.request_id]
    age = metrics.registry.get_sample_value("tombstone_housekeeping_oldest_candidate_age_seconds")
    assert 0 <= age < 120


def test_newer_open_request_keeps_key(kafka: KafkaSettings, producer: DurableProducer) -> None:
    older = make_request("5", 3 * HOUR)
    newer = make_request("5", 2 * HOUR)
    submit(kafka, older, newer)
    prove(kafka, producer, older, *STORES)

    report = housekeep(kafka, HOUR)

    assert report.retained_complete == 0
    assert report.tombstoned == 0
    assert request_ids(values_of(kafka, older.kafka_key)) == [older.request_id, newer.request_id]


def test_newer_request_before_recheck_skipped(kafka: KafkaSettings, producer: DurableProducer) -> None:
    older = make_request("6", 3 * HOUR)
    newer = make_request("6", timedelta(0))
    submit(kafka, older)
    prove(kafka, producer, older, *STORES)
    ledger = Ledger(INVENTORY, kafka)
    housekeeper = Housekeeper(kafka, HOUR)
    refresh = housekeeper.index.refresh
    calls: list[int] = []

    def refresh_after_newer_request(*args: object, **kwargs: object) -> object:
        # The second read is the check right before producing; the newer request lands first.
        calls.append(1)
        if len(calls) == 2:
            submit(kafka, newer)
        return refresh(*args, **kwargs)

    housekeeper.index.refresh = refresh_after_newer_request  # type: ignore[method-assign]
    try:
        ledger.refresh()
        report = housekeeper.run(ledger)
    finally:
        housekeeper.close()
        ledger.close()

    assert report.older_than_horizon == 1
    assert report.skipped_newer == 1
    assert report.tombstoned == 0
    assert request_ids(values_of(kafka, older.kafka_key)) == [older.request_id, newer.request_id]


class RacingProducer(DurableProducer):
    """Writes a newer request for the key just before each tombstone, as a racing requester would."""

    def __init__(self, kafka: KafkaSettings, newer: DeletionRequest) -> None:
        super().__init__(producer_config(kafka, "test-housekeeping-racing"))
        self.kafka = kafka
        self.newer = newer

    def send_tombstone(self, topic: str, key: bytes | str):  # type: ignore[no-untyped-def]
        submit(self.kafka, self.newer)
        return super().send_tombstone(topic, key)


def test_tombstone_after_newer_request_restores_it(kafka: KafkaSettings, producer: DurableProducer) -> None:
    older = make_request("7", 3 * HOUR)
    newer = make_request("7", timedelta(0))
    submit(kafka, older)
    prove(kafka, producer, older, *STORES)
    metrics = HousekeepingMetrics()

    report = housekeep(kafka, HOUR, producer=RacingProducer(kafka, newer), metrics=metrics)

    assert report.tombstoned == 1
    assert report.restored == 1
    ids = request_ids(values_of(kafka, older.kafka_key))
    assert ids == [older.request_id, newer.request_id, None, newer.request_id]
    assert metrics.registry.get_sample_value("tombstone_housekeeping_requests_restored_total") == 1
    assert housekeep(kafka, HOUR).tombstoned == 0


def test_cli_dry_run_then_tombstone(kafka: KafkaSettings, producer: DurableProducer, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY_TOML, encoding="utf-8")
    request = make_request("8", 2 * HOUR)
    submit(kafka, request)
    prove(kafka, producer, request, *STORES)
    command = ["housekeeping", "--backup-horizon-s", "3600", "--inventory", str(inventory)]

    assert main([*command, "--dry-run"]) == 0
    dry_run = capsys.readouterr().out
    assert "older than the backup horizon of 3600 s: 1" in dry_run
    assert "tombstoned: 0 (dry run, nothing written)" in dry_run
    assert request_ids(values_of(kafka, request.kafka_key)) == [request.request_id]

    assert main(command) == 0
    assert "tombstoned: 1" in capsys.readouterr().out
    assert request_ids(values_of(kafka, request.kafka_key))[-1] is None

    assert main([*command, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["retained_complete"] == 0
    assert again["tombstoned"] == 0


def test_ledger_service_tombstones_each_interval(kafka: KafkaSettings, producer: DurableProducer) -> None:
    request = make_request("9", 2 * HOUR)
    submit(kafka, request)
    prove(kafka, producer, request, *STORES)
    ledger = Ledger(INVENTORY, kafka)
    metrics = LedgerMetrics()
    housekeeper = Housekeeper(kafka, HOUR, metrics=HousekeepingMetrics(metrics.registry))
    stop = threading.Event()
    thread = threading.Thread(target=run_ledger, args=(ledger, metrics, stop, 0.2, housekeeper), daemon=True)
    registry = metrics.registry
    thread.start()
    try:
        wait_for(lambda: registry.get_sample_value("tombstone_housekeeping_tombstones_written_total") == 1,
                 timeout_s=60, what="one tombstone written by the ledger service")
        later = make_request("10", timedelta(0))
        submit(kafka, later)
        prove(kafka, producer, later, *STORES)
        wait_for(lambda: registry.get_sample_value("tombstone_housekeeping_retained_complete_requests") == 1,
                 timeout_s=60, what="the young request counted as retained")
    finally:
        stop.set()
        thread.join(30)
        housekeeper.close()
        ledger.close()

    assert not thread.is_alive()
    assert registry.get_sample_value("tombstone_housekeeping_tombstones_written_total") == 1
    assert registry.get_sample_value("tombstone_housekeeping_runs_total", {"result": "failed"}) == 0
    assert registry.get_sample_value("tombstone_housekeeping_backup_horizon_seconds") == 3600
    assert registry.get_sample_value("tombstone_ledger_oldest_open_request_age_seconds") == 0
    assert request_ids(values_of(kafka, request.kafka_key))[-1] is None
    assert request_ids(values_of(kafka, later.kafka_key)) == [later.request_id]
