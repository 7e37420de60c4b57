"""Steps a worker owes later: purges after hiding, deletes after retention, held requests.

The schedule is a SQLite file in the worker's state directory, next to its receipts, so it
survives restarts. Entries are written before the ack of the first step is sent, so a
crash in between replays the request and writes the same entry again (the primary key
makes that a no-op). An entry is marked done only after the ack of its second step is
confirmed.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from tombstone.models import DeletionRequest
from tombstone.serde import RequestSerde
from tombstone.stores.base import LocalFile


class Step(enum.StrEnum):
    PURGE = "purge"  # hidden now, purge when due
    EXPIRE = "expire"  # retained now, delete when the retention ends
    HELD = "held"  # under a legal hold, apply the policy when the hold is released


class State(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Entry:
    step: Step
    request: DeletionRequest
    due_ms: int
    state: State


class Schedule(LocalFile):
    """Pending steps by (request id, step), in a SQLite file."""

    what = "Schedule"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._serde = RequestSerde()

    def _create(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS tombstone_schedule ("
            " request_id TEXT NOT NULL, step TEXT NOT NULL, due_ms INTEGER NOT NULL,"
            " state TEXT NOT NULL, request BLOB NOT NULL, updated_ms INTEGER NOT NULL,"
            " PRIMARY KEY (request_id, step))")

    def add(self, step: Step, request: DeletionRequest, due_ms: int) -> None:
        """Owe ``step`` for ``request`` at ``due_ms``; an existing entry is kept as it is."""
        self.db.execute("INSERT OR IGNORE INTO tombstone_schedule VALUES (?, ?, ?, ?, ?, ?)",
                        (request.request_id, step.value, due_ms, State.PENDING.value,
                         self._serde.serialize(request), _now_ms()))

    def get(self, request_id: str, step: Step) -> Entry | None:
        row = self.db.execute("SELECT step, request, due_ms, state FROM tombstone_schedule "
                              "WHERE request_id = ? AND step = ?", (request_id, step.value)).fetchone()
        return self._entry(row) if row else None

    def due(self, step: Step, now_ms: int | None = None, limit: int = 500) -> list[Entry]:
        """Pending entries of ``step`` due at ``now_ms`` (all pending ones when it is None)."""
        query = "SELECT step, request, due_ms, state FROM tombstone_schedule WHERE step = ? AND state = ?"
        params: list[object] = [step.value, State.PENDING.value]
        if now_ms is not None:
            query += " AND due_ms <= ?"
            params.append(now_ms)
        rows = self.db.execute(query + " ORDER BY due_ms LIMIT ?", [*params, limit]).fetchall()
        return [self._entry(row) for row in rows]

    def finish(self, request_id: str, step: Step, state: State = State.DONE) -> None:
        self.db.execute("UPDATE tombstone_schedule SET state = ?, updated_ms = ? WHERE request_id = ? AND step = ?",
                        (state.value, _now_ms(), request_id, step.value))

    def pending_count(self) -> dict[str, int]:
        rows = self.db.execute("SELECT step, count(*) FROM tombstone_schedule WHERE state = ? GROUP BY step",
                               (State.PENDING.value,)).fetchall()
        return {step: count for step, count in rows}

    def _entry(self, row: tuple[str, bytes, int, str]) -> Entry:
        return Entry(Step(row[0]), self._serde.deserialize(row[1]), row[2], State(row[3]))


def _now_ms() -> int:
    return int(time.time() * 1000)
