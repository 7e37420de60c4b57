"""LedgerMetrics computed from a ledger state without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from tombstone.inventory import Inventory
from tombstone.ledger.service import LedgerMetrics
from tombstone.ledger.state import LedgerState
from tombstone.models import AckStatus, DeletionAck, DeletionRequest

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INVENTORY = Inventory.model_validate({"data_classes": {"profile": {
    "subject_types": ["customer"],
    "stores": [{"store": "db", "action": "delete", "max_delay_s": 3600}, {"store": "cache", "action": "delete", "max_delay_s": 60}]}}})


def request(subject_id: str, age: timedelta) -> DeletionRequest:
    at = NOW - age
    return DeletionRequest(subject_type="customer", subject_id=subject_id, data_class="profile",
                           reason="user_request", requested_by="test", requested_at=at, cutoff_at=at)


def ack(req: DeletionRequest, store: str, status: AckStatus, after: timedelta) -> DeletionAck:
    return DeletionAck(request_id=req.request_id, store=store, worker="w", status=status, items_affected=1,
                       remaining=0, applied_at=req.requested_at + after, data_class="profile",
                       subject_pseudonym="p", pseudonym_key_id="k")


def ledger_with(requests: list[DeletionRequest], acks: list[DeletionAck]) -> SimpleNamespace:
    state = LedgerState(INVENTORY)
    for item in requests:
        state.add_request(item)
    for item in acks:
        state.add_ack(item)
    return SimpleNamespace(state=state, undecodable=0)


def test_update_counts_pending_and_complete() -> None:
    done, waiting = request("1", timedelta(hours=2)), request("2", timedelta(seconds=30))
    ledger = ledger_with([done, waiting], [ack(done, "db", AckStatus.DELETED, timedelta(seconds=5)),
                                           ack(done, "cache", AckStatus.ABSENT, timedelta(seconds=9))])
    metrics = LedgerMetrics()
    metrics.started_at = NOW - timedelta(days=1)

    metrics.update(ledger, NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_requests", {"state": "complete"}) == 1
    assert metrics.registry.get_sample_value("tombstone_ledger_requests", {"state": "pending"}) == 1
    assert metrics.registry.get_sample_value("tombstone_ledger_oldest_open_request_age_seconds") == 30
    assert metrics.registry.get_sample_value("tombstone_ledger_request_completion_seconds_sum") == 9


def test_update_marks_overdue_by_store_bound() -> None:
    late = request("1", timedelta(minutes=5))
    ledger = ledger_with([late], [ack(late, "db", AckStatus.DELETED, timedelta(seconds=1))])
    metrics = LedgerMetrics()

    metrics.update(ledger, NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_overdue_requests") == 1


def test_update_not_overdue_within_bound() -> None:
    fresh = request("1", timedelta(seconds=30))
    metrics = LedgerMetrics()

    metrics.update(ledger_with([fresh], []), NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_overdue_requests") == 0


def test_update_counts_rejected() -> None:
    bad = request("1", timedelta(seconds=30))
    ledger = ledger_with([bad], [ack(bad, "db", AckStatus.REJECTED, timedelta(seconds=1))])
    metrics = LedgerMetrics()

    metrics.update(ledger, NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_rejected_requests") == 1


def test_completion_observed_once() -> None:
    done = request("1", timedelta(hours=1))
    ledger = ledger_with([done], [ack(done, "db", AckStatus.DELETED, timedelta(seconds=2)),
                                  ack(done, "cache", AckStatus.DELETED, timedelta(seconds=3))])
    metrics = LedgerMetrics()
    metrics.started_at = NOW - timedelta(days=1)

    metrics.update(ledger, NOW)
    metrics.update(ledger, NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_request_completion_seconds_count") == 1


def test_completion_before_start_not_observed() -> None:
    done = request("1", timedelta(hours=1))
    ledger = ledger_with([done], [ack(done, "db", AckStatus.DELETED, timedelta(seconds=2)),
                                  ack(done, "cache", AckStatus.DELETED, timedelta(seconds=3))])
    metrics = LedgerMetrics()
    metrics.started_at = NOW

    metrics.update(ledger, NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_request_completion_seconds_count") == 0


def test_rejected_cleared_by_later_success() -> None:
    first = request("1", timedelta(minutes=2))
    second = request("1", timedelta(minutes=1))
    ledger = ledger_with([first, second], [
        ack(first, "db", AckStatus.REJECTED, timedelta(seconds=1)),
        ack(first, "cache", AckStatus.DELETED, timedelta(seconds=1)),
        ack(second, "db", AckStatus.DELETED, timedelta(seconds=1)),
        ack(second, "cache", AckStatus.ABSENT, timedelta(seconds=1))])
    metrics = LedgerMetrics()

    metrics.update(ledger, NOW)

    assert metrics.registry.get_sample_value("tombstone_ledger_rejected_requests") == 0
