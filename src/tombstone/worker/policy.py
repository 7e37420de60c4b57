"""Carry out a store's deletion policy for a batch of requests, and the steps owed later.

For each request the inventory entry of this store and data class decides:

==========  ============================================================  =========================
action      now                                                          later (from the schedule)
==========  ============================================================  =========================
delete      delete at or before the cut-off, verify nothing is left      -
hide        move out of normal reads, verify; ack HIDDEN                 purge, verify; ack PURGED
anonymize   clear the named fields, verify none is set; ack ANONYMIZED   -
retain      keep; ack RETAINED with the basis and the end date           delete at the end date
==========  ============================================================  =========================

A subject under a legal hold is acked RETAINED with the hold's basis, and its request
waits in the schedule until the hold is released. A CANCEL restores what was only hidden
(CANCELLED); after the purge it is refused (REJECTED, ``cancel_after_purge``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tombstone.errors import VerificationError
from tombstone.inventory import StoreAction, StoreEntry
from tombstone.models import AckStatus, DeletionRequest, RequestAction
from tombstone.stores.base import Outcome, Store
from tombstone.worker.holds import HoldBook
from tombstone.worker.schedule import Schedule, State, Step

logger = logging.getLogger(__name__)

CANCEL_SUFFIX = "#cancel"


def work_key(request: DeletionRequest) -> str:
    """Key of a request's outcome in a batch; a cancel shares the id of what it cancels."""
    return request.request_id + (CANCEL_SUFFIX if request.action is RequestAction.CANCEL else "")


@dataclass
class Result:
    """Outcomes and verified remaining counts, by ``work_key``."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        self.outcomes.update(other.outcomes)
        self.remaining.update(other.remaining)


class PolicyRunner:
    """The policy part of a worker; the delete path stays with the worker itself."""

    def __init__(self, store: Store, policies: dict[str, StoreEntry], schedule: Schedule,
                 holds: HoldBook | None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policies = policies
        self.schedule = schedule
        self.holds = holds
        self.clock = clock

    def check(self) -> None:
        """Fail at start-up when the store cannot carry out a policy of the inventory."""
        for data_class, entry in self.policies.items():
            self.store.check_policy(data_class, entry.action.value, entry.fields)

    def action(self, request: DeletionRequest) -> StoreAction:
        entry = self.policies.get(request.data_class)
        return entry.action if entry else StoreAction.DELETE

    def held(self, request: DeletionRequest) -> bool:
        return (self.holds is not None and request.action is RequestAction.DELETE
                and self.holds.get(request.subject_key) is not None)

    def needs_worker_delete(self, request: DeletionRequest) -> bool:
        """True for requests the worker's own delete path handles."""
        return (request.action is RequestAction.DELETE and not self.held(request)
                and self.action(request) is StoreAction.DELETE)

    def apply(self, requests: Sequence[DeletionRequest]) -> Result:
        """Apply every request that is not a plain delete; see the module docstring."""
        result = Result()
        groups: dict[str, list[DeletionRequest]] = {}
        for request in requests:
            if request.action is RequestAction.CANCEL:
                groups.setdefault("cancel", []).append(request)
            elif self.held(request):
                groups.setdefault("held", []).append(request)
            else:
                groups.setdefault(self.action(request).value, []).append(request)
        for name, handler in (("held", self._hold), ("hide", self._hide), ("anonymize", self._anonymize),
                              ("retain", self._retain), ("cancel", self._cancel)):
            if groups.get(name):
                result.merge(handler(groups[name]))
        return result

    # Steps taken now

    def _hold(self, requests: list[DeletionRequest]) -> Result:
        result = Result()
        remaining = self.store.count_remaining(requests)
        for request in requests:
            hold = self.holds.get(request.subject_key) if self.holds else None
            self.schedule.add(Step.HELD, request, 0)
            result.outcomes[request.request_id] = Outcome(
                AckStatus.RETAINED, 0, legal_basis=hold.legal_basis if hold else "legal hold",
                retained_until=hold.until if hold else None)
            result.remaining[request.request_id] = remaining.get(request.request_id, 0)
        return result

    def _hide(self, requests: list[DeletionRequest]) -> Result:
        outcomes = self.store.hide(requests)
        _verify(self.store, "hide", self.store.count_remaining(requests))
        result = Result()
        for request in requests:
            entry = self.policies[request.data_class]
            # The delay counts from the request, so a replay after a restore purges on time.
            due_ms = _time_to_ms(request.requested_at) + 1000 * (entry.purge_after_s or 0)
            self.schedule.add(Step.PURGE, request, due_ms)
            outcome = outcomes[request.request_id]
            result.outcomes[request.request_id] = _with(outcome, retained_until=_ms_to_time(due_ms))
            result.remaining[request.request_id] = 0
        return result

    def _anonymize(self, requests: list[DeletionRequest]) -> Result:
        result = Result()
        by_fields: dict[tuple[str, ...], list[DeletionRequest]] = {}
        for request in requests:
            by_fields.setdefault(tuple(self.policies[request.data_class].fields), []).append(request)
        for fields, group in by_fields.items():
            outcomes = self.store.anonymize(group, list(fields))
            _verify(self.store, "anonymize", self.store.count_identifying(group, list(fields)))
            for request in group:
                entry = self.policies[request.data_class]
                result.outcomes[request.request_id] = _with(outcomes[request.request_id],
                                                            legal_basis=entry.legal_basis)
                result.remaining[request.request_id] = 0
        return result

    def _retain(self, requests: list[DeletionRequest]) -> Result:
        result = Result()
        kept = self.store.count_remaining(requests)
        for request in requests:
            entry = self.policies[request.data_class]
            until = entry.retained_until(request.requested_at)
            self.schedule.add(Step.EXPIRE, request, _time_to_ms(until))
            result.outcomes[request.request_id] = Outcome(AckStatus.RETAINED, 0, legal_basis=entry.legal_basis,
                                                          retained_until=until)
            result.remaining[request.request_id] = kept.get(request.request_id, 0)
        return result

    def _cancel(self, requests: list[DeletionRequest]) -> Result:
        result = Result()
        restore = []
        for request in requests:
            key = work_key(request)
            purge = self.schedule.get(request.request_id, Step.PURGE)
            for step in (Step.HELD, Step.EXPIRE):
                if (entry := self.schedule.get(request.request_id, step)) and entry.state is State.PENDING:
                    self.schedule.finish(request.request_id, step, State.CANCELLED)
                    result.outcomes[key] = Outcome(AckStatus.CANCELLED, 0)
            if purge is not None and purge.state is State.DONE:
                result.outcomes[key] = Outcome(AckStatus.REJECTED, 0, reason_code="cancel_after_purge")
            elif purge is not None:
                restore.append(request)
            elif self.action(request) is StoreAction.HIDE and key not in result.outcomes:
                result.outcomes[key] = Outcome(AckStatus.CANCELLED, 0)  # nothing hidden here
        if restore:
            outcomes = self.store.restore(restore)
            for request in restore:
                self.schedule.finish(request.request_id, Step.PURGE, State.CANCELLED)
                result.outcomes[work_key(request)] = outcomes[request.request_id]
        for key in result.outcomes:
            result.remaining[key] = 0
        return result

    # Steps owed later

    def due(self) -> list[tuple[Step, DeletionRequest]]:
        """Pending steps whose time has come, including held requests whose hold is gone."""
        now_ms = int(self.clock() * 1000)
        ready = [(e.step, e.request) for step in (Step.PURGE, Step.EXPIRE) for e in self.schedule.due(step, now_ms)]
        for entry in self.schedule.due(Step.HELD):
            if self.holds is None or self.holds.get(entry.request.subject_key) is None:
                ready.append((Step.HELD, entry.request))
        return ready

    def run_due(self, step: Step, requests: list[DeletionRequest],
                delete: Callable[[list[DeletionRequest]], Result]) -> Result:
        """Carry out one due step; ``delete`` is the worker's verified delete path."""
        if step is Step.PURGE:
            outcomes = self.store.purge(requests)
            _verify(self.store, "purge", self.store.count_hidden(requests))
            return Result(outcomes, {r.request_id: 0 for r in requests})
        if step is Step.EXPIRE:
            return delete(requests)
        # Released holds: the policy applies now, as if the request had just arrived.
        plain = [r for r in requests if self.needs_worker_delete(r)]
        result = delete(plain) if plain else Result()
        result.merge(self.apply([r for r in requests if not self.needs_worker_delete(r)]))
        return result

    def finish(self, step: Step, requests: list[DeletionRequest]) -> None:
        for request in requests:
            self.schedule.finish(request.request_id, step)


def _verify(store: Store, step: str, counts: dict[str, int]) -> None:
    left = {rid: n for rid, n in counts.items() if n}
    if left:
        raise VerificationError(
            f"Store {store.name} still shows data of {len(left)} requests after the {step} "
            f"(first: request {next(iter(left))}); no ack is sent.")


def _with(outcome: Outcome, **changes: object) -> Outcome:
    from dataclasses import replace

    return replace(outcome, **changes)  # type: ignore[arg-type]


def _ms_to_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _time_to_ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value else 0
