"""Housekeeping without Kafka: candidate selection, the horizon, metrics and the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tombstone.cli import build_parser
from tombstone.inventory import Inventory
from tombstone.ledger.housekeeping import (
    Housekeeper,
    HousekeepingMetrics,
    KeyPosition,
    older_than,
    select_candidates,
)
from tombstone.ledger.service import LedgerMetrics
from tombstone.ledger.state import LedgerState
from tombstone.models import AckStatus, DeletionAck, DeletionRequest
from tombstone.settings import KafkaSettings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INVENTORY = Inventory.model_validate({"data_classes": {"profile": {
    "subject_types": ["customer"],
    "stores": [{"store": "db", "action": "delete"}, {"store": "cache", "action": "delete"}]}}})


def request(request_id: str, subject_id: str, age: timedelta) -> DeletionRequest:
    at = NOW - age
    return DeletionRequest(request_id=request_id, subject_type="customer", subject_id=subject_id,
                           data_class="profile", reason="user_request", requested_by="test",
                           requested_at=at, cutoff_at=at)


def ack(req: DeletionRequest, store: str, status: AckStatus = AckStatus.DELETED) -> DeletionAck:
    return DeletionAck(request_id=req.request_id, store=store, worker="w", status=status, items_affected=1,
                       remaining=0, applied_at=req.requested_at, data_class="profile",
                       subject_pseudonym="p", pseudonym_key_id="k")


def state_with(requests: list[DeletionRequest], acks: list[DeletionAck]) -> LedgerState:
    state = LedgerState(INVENTORY)
    for item in requests:
        state.add_request(item)
    for item in acks:
        state.add_ack(item)
    return state


def latest_of(*requests: DeletionRequest) -> dict[bytes, KeyPosition]:
    """Index entries as the requests topic would have them, one offset per request in order."""
    return {r.kafka_key.encode(): KeyPosition(0, offset, r.request_id) for offset, r in enumerate(requests)}


def proven(req: DeletionRequest, status: AckStatus = AckStatus.DELETED) -> list[DeletionAck]:
    return [ack(req, "db", status), ack(req, "cache", status)]


def test_complete_latest_request_selected() -> None:
    done = request("a", "1", timedelta(days=2))
    state = state_with([done], proven(done))

    candidates = select_candidates(state, latest_of(done))

    assert [c.request.request_id for c in candidates] == ["a"]
    assert candidates[0].key == b"customer:1/profile"


@pytest.mark.parametrize("status", [AckStatus.ABSENT, AckStatus.RETAINED, AckStatus.ANONYMIZED,
                                    AckStatus.PURGED, AckStatus.CANCELLED])
def test_other_terminal_statuses_selected(status: AckStatus) -> None:
    done = request("a", "1", timedelta(days=2))
    state = state_with([done], proven(done, status))

    assert len(select_candidates(state, latest_of(done))) == 1


def test_pending_store_not_selected() -> None:
    half = request("a", "1", timedelta(days=2))
    state = state_with([half], [ack(half, "db")])

    assert select_candidates(state, latest_of(half)) == []


def test_hidden_store_not_selected() -> None:
    hidden = request("a", "1", timedelta(days=2))
    state = state_with([hidden], [ack(hidden, "db"), ack(hidden, "cache", AckStatus.HIDDEN)])

    assert select_candidates(state, latest_of(hidden)) == []


def test_rejected_store_not_selected() -> None:
    rejected = request("a", "1", timedelta(days=2))
    state = state_with([rejected], [ack(rejected, "db"), ack(rejected, "cache", AckStatus.REJECTED)])

    assert select_candidates(state, latest_of(rejected)) == []


def test_newer_open_request_not_selected() -> None:
    older, newer = request("a", "1", timedelta(days=3)), request("b", "1", timedelta(days=2))
    state = state_with([older, newer], proven(older))

    assert select_candidates(state, {b"customer:1/profile": KeyPosition(0, 1, "b")}) == []


def test_earlier_open_request_blocks_key() -> None:
    # The later request's cut-off is earlier, so it does not supersede the rejected one.
    rejected = request("a", "1", timedelta(days=2))
    later = request("b", "1", timedelta(days=3)).model_copy(update={"requested_at": NOW - timedelta(days=1)})
    state = state_with([rejected, later],
                       [ack(rejected, "db", AckStatus.REJECTED), ack(rejected, "cache"), *proven(later)])

    assert select_candidates(state, {b"customer:1/profile": KeyPosition(0, 1, "b")}) == []


def test_earlier_superseded_request_allows_key() -> None:
    older, newer = request("a", "1", timedelta(days=3)), request("b", "1", timedelta(days=2))
    state = state_with([older, newer], proven(newer))

    candidates = select_candidates(state, {b"customer:1/profile": KeyPosition(0, 1, "b")})

    assert [c.request.request_id for c in candidates] == ["b"]


def test_tombstoned_key_not_selected() -> None:
    done = request("a", "1", timedelta(days=2))
    state = state_with([done], proven(done))

    assert select_candidates(state, {b"customer:1/profile": KeyPosition(0, 1, None, tombstone=True)}) == []


def test_undecodable_latest_value_not_selected() -> None:
    done = request("a", "1", timedelta(days=2))
    state = state_with([done], proven(done))

    assert select_candidates(state, {b"customer:1/profile": KeyPosition(0, 1, None)}) == []


def test_request_unknown_to_ledger_not_selected() -> None:
    state = state_with([], [])

    assert select_candidates(state, {b"customer:1/profile": KeyPosition(0, 0, "a")}) == []


def test_candidates_sorted_oldest_first() -> None:
    young, old = request("a", "1", timedelta(hours=1)), request("b", "2", timedelta(days=9))
    state = state_with([young, old], [*proven(young), *proven(old)])

    candidates = select_candidates(state, latest_of(young, old))

    assert [c.request.request_id for c in candidates] == ["b", "a"]


def test_older_than_excludes_horizon_itself() -> None:
    at_horizon, past = request("a", "1", timedelta(days=1)), request("b", "2", timedelta(days=1, seconds=1))
    state = state_with([at_horizon, past], [*proven(at_horizon), *proven(past)])
    candidates = select_candidates(state, latest_of(at_horizon, past))

    eligible = older_than(candidates, timedelta(days=1), NOW)

    assert [c.request.request_id for c in eligible] == ["b"]


@pytest.mark.parametrize("horizon", [timedelta(0), timedelta(seconds=-1)])
def test_housekeeper_rejects_non_positive_horizon(horizon: timedelta) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Housekeeper(KafkaSettings(bootstrap_servers="127.0.0.1:1"), horizon)


def test_metrics_without_subject_labels() -> None:
    ledger_metrics = LedgerMetrics()
    metrics = HousekeepingMetrics(ledger_metrics.registry)

    metrics.observe(3, NOW - timedelta(hours=2), NOW)
    metrics.tombstones.inc(2)

    registry = ledger_metrics.registry
    assert registry.get_sample_value("tombstone_housekeeping_oldest_candidate_age_seconds") == 7200
    assert registry.get_sample_value("tombstone_housekeeping_retained_complete_requests") == 3
    assert registry.get_sample_value("tombstone_housekeeping_tombstones_written_total") == 2
    assert registry.get_sample_value("tombstone_ledger_oldest_open_request_age_seconds") == 0
    samples = [s for family in registry.collect() for s in family.samples]
    assert all(s.name.startswith("tombstone_") for s in samples)
    assert {label for s in samples for label in s.labels} <= {"state", "result", "le"}


def test_metrics_oldest_candidate_zero_when_none() -> None:
    metrics = HousekeepingMetrics()

    metrics.observe(0, None, NOW)

    assert metrics.registry.get_sample_value("tombstone_housekeeping_oldest_candidate_age_seconds") == 0


def test_ledger_horizon_off_by_default() -> None:
    args = build_parser().parse_args(["ledger"])

    assert args.backup_horizon_s is None


def test_housekeeping_requires_horizon(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["housekeeping"])

    assert "--backup-horizon-s" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_housekeeping_rejects_invalid_horizon(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["housekeeping", "--backup-horizon-s", value])

    assert value in capsys.readouterr().err
