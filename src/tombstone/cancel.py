"""``tombstone cancel``: withdraw a deletion request within its grace period.

A cancel is a new record on the requests topic with the same key and request id and the
action ``CANCEL``. Stores that only hid the data put it back and ack ``CANCELLED``. What a
store already deleted or purged cannot come back, so the command refuses a cancel once any
store purged, and names the stores that deleted at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tombstone.errors import InvalidRequestError
from tombstone.inventory import Inventory
from tombstone.ledger.ledger import Ledger
from tombstone.ledger.state import RequestView
from tombstone.models import AckStatus, DeletionRequest, RequestAction, utc_now
from tombstone.requester import Requester
from tombstone.settings import KafkaSettings

# Statuses after which the bytes are gone from a store, so a cancel cannot restore them.
GONE = frozenset({AckStatus.DELETED, AckStatus.PURGED, AckStatus.ANONYMIZED})


@dataclass(frozen=True)
class CancelPlan:
    cancel: DeletionRequest
    restorable: list[str]  # stores that hid the data, or have not acted yet
    gone: list[str]  # stores that deleted or anonymized at once


def plan_cancel(view: RequestView | None, request_id: str, requested_by: str,
                now: datetime | None = None) -> CancelPlan:
    """Check that a request may still be cancelled and build its CANCEL record.

    Raises:
        InvalidRequestError: unknown request, already cancelled, grace period over, or a
            store already purged the hidden data.
    """
    if view is None:
        raise InvalidRequestError(f"No deletion request {request_id} on the requests topic. "
                                  "Give an id printed by `tombstone request` or shown by `tombstone proof show`.")
    request = view.request
    if view.cancelled:
        raise InvalidRequestError(f"Request {request_id} is already cancelled.")
    now = now or utc_now()
    grace_end = request.requested_at + timedelta(milliseconds=request.grace_period_ms)
    if now > grace_end:
        raise InvalidRequestError(
            f"The grace period of request {request_id} ended at {grace_end.isoformat()} "
            f"({request.grace_period_ms / 1000:.0f} s after the request); it can no longer be cancelled.")
    purged = [f"{row.store} (at {at.isoformat()})" for row in view.rows
              for status, at in row.steps if status is AckStatus.PURGED]
    if purged:
        raise InvalidRequestError(
            f"Request {request_id} cannot be cancelled: its hidden data was already purged in "
            f"{', '.join(purged)}. Nothing there can be restored.")
    gone = sorted(row.store for row in view.rows if row.status in GONE)
    restorable = sorted(row.store for row in view.rows if row.store not in gone)
    cancel = request.model_copy(update={"action": RequestAction.CANCEL, "requested_by": requested_by})
    return CancelPlan(cancel, restorable, gone)


def cancel_request(kafka: KafkaSettings, inventory: Inventory, request_id: str, requested_by: str,
                   timeout_s: float = 30.0) -> CancelPlan:
    """Read the ledger, check the request, and produce its CANCEL record (confirmed)."""
    ledger = Ledger(inventory, kafka)
    try:
        ledger.refresh(timeout_s)
        plan = plan_cancel(ledger.state.view(request_id), request_id, requested_by)
    finally:
        ledger.close()
    requester = Requester(kafka, client_id="tombstone-cancel")
    try:
        requester.submit([plan.cancel])
    finally:
        requester.close()
    return plan
