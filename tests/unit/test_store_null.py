"""NullStore: contains no data and reports ABSENT."""

from __future__ import annotations

from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import NullStoreConfig
from tombstone.stores.null import NullStore


def make_request(subject_id: str) -> DeletionRequest:
    return DeletionRequest(subject_type="customer", subject_id=subject_id, data_class="customer_profile",
                           reason="user_request", requested_by="test")


def test_apply_reports_absent_for_batch() -> None:
    requests = [make_request(str(i)) for i in range(100)]

    with NullStore("null", NullStoreConfig(kind="null")) as store:
        outcomes = store.apply(requests)

    assert set(outcomes) == {r.request_id for r in requests}
    assert {o.status for o in outcomes.values()} == {AckStatus.ABSENT}
    assert {o.items_affected for o in outcomes.values()} == {0}


def test_apply_replay_reports_same_status() -> None:
    request = make_request("17")
    store = NullStore("null", NullStoreConfig(kind="null"))

    first = store.apply([request])[request.request_id]
    second = store.apply([request])[request.request_id]

    assert second.status is first.status is AckStatus.ABSENT
    assert second.items_affected == first.items_affected == 0


def test_count_remaining_and_scan_are_zero() -> None:
    request = make_request("17")
    store = NullStore("null", NullStoreConfig(kind="null"))

    assert store.count_remaining([request]) == {request.request_id: 0}
    assert store.scan_subject("customer:17") == 0
