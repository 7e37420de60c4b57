"""``LedgerState``: completion of requests from the inventory and the acks of each store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tombstone.inventory import Inventory
from tombstone.ledger.state import LedgerState
from tombstone.models import TERMINAL_STATUSES, AckStatus, DeletionAck, DeletionRequest

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

INVENTORY = Inventory.model_validate(
    {
        "data_classes": {
            "customer_profile": {
                "subject_types": ["customer"],
                "stores": [{"store": "sqlite", "action": "delete"}, {"store": "search", "action": "delete"}],
            },
            "billing": {"subject_types": ["customer"], "stores": [{"store": "warehouse", "action": "delete"}]},
        }
    }
)


def make_request(request_id: str, cutoff_at: datetime = T0, **changes: Any) -> DeletionRequest:
    values: dict[str, Any] = {
        "request_id": request_id,
        "subject_type": "customer",
        "subject_id": "17",
        "data_class": "customer_profile",
        "reason": "user_request",
        "requested_by": "cli",
        "requested_at": cutoff_at,
        "cutoff_at": cutoff_at,
    }
    values.update(changes)
    return DeletionRequest(**values)


def make_ack(request_id: str, store: str, status: AckStatus = AckStatus.DELETED,
             items_affected: int = 1) -> DeletionAck:
    return DeletionAck(
        request_id=request_id,
        store=store,
        worker=f"{store}-0",
        status=status,
        items_affected=items_affected,
        remaining=0,
        data_class="customer_profile",
        subject_pseudonym="ab" * 32,
        pseudonym_key_id="k1",
    )


def state_with(*requests: DeletionRequest) -> LedgerState:
    state = LedgerState(INVENTORY)
    for request in requests:
        state.add_request(request)
    return state


def complete_all(state: LedgerState, request_id: str) -> None:
    for store in ("sqlite", "search"):
        state.add_ack(make_ack(request_id, store))


def is_complete(state: LedgerState, request_id: str) -> bool:
    view = state.view(request_id)
    assert view is not None
    return view.complete


# --- completion -------------------------------------------------------------------------


def test_view_without_acks_is_pending() -> None:
    state = state_with(make_request("r-1"))

    view = state.view("r-1")

    assert view is not None
    assert view.complete is False
    assert [(row.store, row.status) for row in view.rows] == [("sqlite", None), ("search", None)]


def test_view_unknown_request_is_none() -> None:
    assert state_with().view("r-404") is None


def test_completion_needs_every_store() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite"))

    assert is_complete(state, "r-1") is False


def test_completion_with_every_store_terminal() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite", AckStatus.DELETED, items_affected=3))
    state.add_ack(make_ack("r-1", "search", AckStatus.ABSENT, items_affected=0))

    assert is_complete(state, "r-1") is True


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES - {AckStatus.REJECTED}))
def test_completion_accepts_terminal_status(status: AckStatus) -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite"))
    state.add_ack(make_ack("r-1", "search", status))

    assert is_complete(state, "r-1") is True


def test_completion_blocked_by_rejected() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite"))
    state.add_ack(make_ack("r-1", "search", AckStatus.REJECTED))

    assert is_complete(state, "r-1") is False


def test_completion_excludes_hidden() -> None:
    # HIDDEN is logically gone but physically still there, so it is not terminal.
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite"))
    state.add_ack(make_ack("r-1", "search", AckStatus.HIDDEN))

    assert is_complete(state, "r-1") is False


def test_completion_unknown_data_class_never_complete() -> None:
    # With no store to prove it, a request must not count as done.
    state = state_with(make_request("r-1", data_class="telemetry"))

    assert is_complete(state, "r-1") is False


def test_completion_uses_request_data_class() -> None:
    state = state_with(make_request("r-1", data_class="billing"))

    state.add_ack(make_ack("r-1", "sqlite"))
    state.add_ack(make_ack("r-1", "search"))
    assert is_complete(state, "r-1") is False

    state.add_ack(make_ack("r-1", "warehouse"))
    assert is_complete(state, "r-1") is True


# --- duplicate and unexpected acks ------------------------------------------------------


def test_duplicate_ack_keeps_one_row() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite", AckStatus.DELETED, items_affected=3))
    state.add_ack(make_ack("r-1", "sqlite", AckStatus.ABSENT, items_affected=0))

    view = state.view("r-1")
    assert view is not None
    sqlite_rows = [row for row in view.rows if row.store == "sqlite"]
    assert len(sqlite_rows) == 1
    assert sqlite_rows[0].status is AckStatus.ABSENT
    assert len(view.rows) == 2


def test_duplicate_ack_replaces_status() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite", AckStatus.HIDDEN))
    state.add_ack(make_ack("r-1", "sqlite", AckStatus.PURGED))
    state.add_ack(make_ack("r-1", "search"))

    assert is_complete(state, "r-1") is True


def test_unexpected_store_shows_as_not_expected() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "cache"))

    view = state.view("r-1")
    assert view is not None
    rows = {row.store: row for row in view.rows}
    assert rows["cache"].expected is False
    assert rows["cache"].status is AckStatus.DELETED
    assert rows["sqlite"].expected is True
    assert rows["search"].expected is True


def test_unexpected_store_only_on_its_request() -> None:
    state = state_with(make_request("r1"), make_request("r2"))
    state.add_ack(make_ack("r1", "cache"))
    state.add_ack(make_ack("r2", "exports"))
    state.add_ack(make_ack("r2", "cache"))

    first = [row.store for row in state.view("r1").rows]
    second = [row.store for row in state.view("r2").rows]

    assert first == ["sqlite", "search", "cache"]
    assert second == ["sqlite", "search", "cache", "exports"]


def test_unexpected_store_does_not_complete() -> None:
    state = state_with(make_request("r-1"))

    state.add_ack(make_ack("r-1", "sqlite"))
    state.add_ack(make_ack("r-1", "cache"))

    assert is_complete(state, "r-1") is False


def test_unexpected_store_pending_does_not_block() -> None:
    state = state_with(make_request("r-1"))

    complete_all(state, "r-1")
    state.add_ack(make_ack("r-1", "cache", AckStatus.HIDDEN))

    assert is_complete(state, "r-1") is True


def test_ack_before_request_counts() -> None:
    # The proofs topic may be read before the requests topic.
    state = LedgerState(INVENTORY)
    complete_all(state, "r-1")

    state.add_request(make_request("r-1"))

    assert is_complete(state, "r-1") is True


def test_view_to_dict_marks_pending() -> None:
    state = state_with(make_request("r-1"))
    state.add_ack(make_ack("r-1", "sqlite"))

    view = state.view("r-1")
    assert view is not None
    stores = {row["store"]: row for row in view.to_dict()["stores"]}  # type: ignore[union-attr]
    assert stores["sqlite"]["status"] == "DELETED"
    assert stores["search"]["status"] == "PENDING"


# --- superseded requests ----------------------------------------------------------------


def test_superseded_by_later_complete_request() -> None:
    state = state_with(make_request("r-old", T0), make_request("r-new", T0 + timedelta(hours=1)))

    complete_all(state, "r-new")

    view = state.view("r-old")
    assert view is not None
    assert view.complete is True
    assert view.superseded_by == "r-new"


def test_superseded_by_equal_cutoff() -> None:
    state = state_with(make_request("r-old", T0), make_request("r-new", T0))

    complete_all(state, "r-new")

    view = state.view("r-old")
    assert view is not None
    assert view.complete is True
    assert view.superseded_by == "r-new"


def test_not_superseded_by_earlier_cutoff() -> None:
    # The later request deletes only data up to its earlier cut-off, so data written
    # between the two cut-offs may remain.
    state = state_with(make_request("r-old", T0), make_request("r-new", T0 - timedelta(seconds=1)))

    complete_all(state, "r-new")

    view = state.view("r-old")
    assert view is not None
    assert view.complete is False
    assert view.superseded_by is None


def test_not_superseded_by_incomplete_request() -> None:
    state = state_with(make_request("r-old", T0), make_request("r-new", T0 + timedelta(hours=1)))

    state.add_ack(make_ack("r-new", "sqlite"))

    view = state.view("r-old")
    assert view is not None
    assert view.complete is False
    assert view.superseded_by is None


def test_not_superseded_by_earlier_arrival() -> None:
    state = state_with(make_request("r-new", T0 + timedelta(hours=1)), make_request("r-old", T0))

    complete_all(state, "r-new")

    view = state.view("r-old")
    assert view is not None
    assert view.superseded_by is None


def test_not_superseded_by_other_data_class() -> None:
    # Same subject, other data class: another key on the requests topic.
    state = state_with(make_request("r-old", T0),
                       make_request("r-new", T0 + timedelta(hours=1), data_class="billing"))

    state.add_ack(make_ack("r-new", "warehouse"))

    view = state.view("r-old")
    assert view is not None
    assert view.complete is False


def test_not_superseded_by_other_subject() -> None:
    state = state_with(make_request("r-old", T0),
                       make_request("r-new", T0 + timedelta(hours=1), subject_id="18"))

    complete_all(state, "r-new")

    assert is_complete(state, "r-old") is False


def test_own_completion_has_no_superseded_by() -> None:
    state = state_with(make_request("r-old", T0), make_request("r-new", T0 + timedelta(hours=1)))

    complete_all(state, "r-old")
    complete_all(state, "r-new")

    view = state.view("r-old")
    assert view is not None
    assert view.complete is True
    assert view.superseded_by is None


def test_add_request_twice_keeps_first() -> None:
    state = state_with(make_request("r-1", T0))

    state.add_request(make_request("r-1", T0 + timedelta(hours=1)))

    assert state.requests["r-1"].cutoff_at == T0
    assert state.by_key[make_request("r-1").kafka_key] == ["r-1"]


def test_views_lists_every_request() -> None:
    state = state_with(make_request("r-1"), make_request("r-2", subject_id="18"))

    assert [view.request.request_id for view in state.views()] == ["r-1", "r-2"]
