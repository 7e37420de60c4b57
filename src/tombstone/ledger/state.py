"""Ledger state: requests × inventory × acks → per-request completion.

A request is complete when every store that the inventory names for its data class has
acked a terminal status other than REJECTED; a rejected request stays open and alerts. An ack for the same (request, store) replaces the earlier one,
as compaction of the proofs topic would, so each pair has exactly one status.

When compaction has replaced request A by a later request B with the same key, a worker
that was behind never reads A. A is then counted complete, as superseded, once B is
complete and B's cut-off is not earlier than A's, because B's delete covers A's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tombstone.inventory import Inventory
from tombstone.models import TERMINAL_STATUSES, AckStatus, DeletionAck, DeletionRequest, RequestAction


@dataclass(frozen=True)
class StoreRow:
    """Ledger record of one request in one store."""

    store: str
    status: AckStatus | None
    items_affected: int | None = None
    remaining: int | None = None
    applied_at: datetime | None = None
    worker: str | None = None
    expected: bool = True
    # Every status this store acked for the request, oldest first: HIDDEN, then PURGED.
    steps: tuple[tuple[AckStatus, datetime], ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, object]:
        return {
            "store": self.store,
            "status": self.status.value if self.status else "PENDING",
            "items_affected": self.items_affected,
            "remaining": self.remaining,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "worker": self.worker,
            "expected": self.expected,
            "steps": [{"status": status.value, "at": at.isoformat()} for status, at in self.steps],
        }


@dataclass(frozen=True)
class RequestView:
    request: DeletionRequest
    rows: list[StoreRow]
    complete: bool
    superseded_by: str | None = None
    cancelled: bool = False

    def to_dict(self, pseudonym: str | None = None) -> dict[str, object]:
        return {
            "request_id": self.request.request_id,
            "subject_pseudonym": pseudonym,
            "data_class": self.request.data_class,
            "reason": self.request.reason,
            "requested_at": self.request.requested_at.isoformat(),
            "complete": self.complete,
            "superseded_by": self.superseded_by,
            "cancelled": self.cancelled,
            "stores": [row.to_dict() for row in self.rows],
        }


@dataclass
class LedgerState:
    inventory: Inventory
    requests: dict[str, DeletionRequest] = field(default_factory=dict)
    acks: dict[tuple[str, str], DeletionAck] = field(default_factory=dict)
    # Request ids per requests-topic key, in arrival order.
    by_key: dict[str, list[str]] = field(default_factory=dict)
    # Statuses per (request, store) in arrival order, for HIDDEN then PURGED and the like.
    history: dict[tuple[str, str], list[tuple[AckStatus, datetime]]] = field(default_factory=dict)
    # Requests that a CANCEL record named.
    cancelled: set[str] = field(default_factory=set)
    # Stores that acked each request, so that a request's rows need not scan every ack.
    acked_stores: dict[str, set[str]] = field(default_factory=dict)

    def add_request(self, request: DeletionRequest) -> None:
        if request.action is RequestAction.CANCEL:
            self.cancelled.add(request.request_id)
            if request.request_id in self.requests:
                return
            # The cancel replaced the request on the compacted topic: keep it as the request.
        if request.request_id in self.requests:
            return
        self.requests[request.request_id] = request
        self.by_key.setdefault(request.kafka_key, []).append(request.request_id)

    def add_ack(self, ack: DeletionAck) -> None:
        self.acks[(ack.request_id, ack.store)] = ack
        self.acked_stores.setdefault(ack.request_id, set()).add(ack.store)
        steps = self.history.setdefault((ack.request_id, ack.store), [])
        if (ack.status, ack.applied_at) not in steps:
            steps.append((ack.status, ack.applied_at))

    def rows(self, request: DeletionRequest) -> list[StoreRow]:
        expected = self.inventory.stores_for(request.data_class)
        rows = [self._row(request.request_id, store, True) for store in expected]
        extra = sorted(s for s in self.acked_stores.get(request.request_id, ()) if s not in expected)
        rows.extend(self._row(request.request_id, store, False) for store in extra)
        return rows

    def _row(self, request_id: str, store: str, expected: bool) -> StoreRow:
        ack = self.acks.get((request_id, store))
        if ack is None:
            return StoreRow(store, None, expected=expected)
        return StoreRow(store, ack.status, ack.items_affected, ack.remaining, ack.applied_at,
                        ack.worker, expected, tuple(self.history.get((request_id, store), ())))

    def _own_complete(self, request: DeletionRequest, rows: list[StoreRow] | None = None) -> bool:
        # REJECTED ends a store's retries but blocks the request: the data may still be there.
        rows = [row for row in (self.rows(request) if rows is None else rows) if row.expected]
        return bool(rows) and all(row.terminal and row.status is not AckStatus.REJECTED for row in rows)

    def view(self, request_id: str) -> RequestView | None:
        request = self.requests.get(request_id)
        if request is None:
            return None
        rows = self.rows(request)
        cancelled = request_id in self.cancelled
        if self._own_complete(request, rows):
            return RequestView(request, rows, True, cancelled=cancelled)
        successor = self._completing_successor(request)
        return RequestView(request, rows, successor is not None, successor, cancelled)

    def _completing_successor(self, request: DeletionRequest) -> str | None:
        ids = self.by_key.get(request.kafka_key, [])
        later = ids[ids.index(request.request_id) + 1:] if request.request_id in ids else []
        for other_id in later:
            other = self.requests[other_id]
            if other.cutoff_at >= request.cutoff_at and self._own_complete(other):
                return other_id
        return None

    def rejected_and_open(self, view: RequestView) -> bool:
        """True for a request that a store rejected and no later request for its key repaired."""
        if not any(row.status is AckStatus.REJECTED for row in view.rows):
            return False
        ids = self.by_key.get(view.request.kafka_key, [])
        later = ids[ids.index(view.request.request_id) + 1:] if view.request.request_id in ids else []
        for other_id in later:
            other = self.requests[other_id]
            rows = self.rows(other)
            if (other.cutoff_at >= view.request.cutoff_at and self._own_complete(other)
                    and not any(row.status is AckStatus.REJECTED for row in rows)):
                return False
        return True

    def views(self) -> list[RequestView]:
        return [view for rid in self.requests if (view := self.view(rid)) is not None]
