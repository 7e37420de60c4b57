"""The contract every derived store implements, and the receipt book.

A store applies a batch of deletion requests idempotently and reports, per request, what
it did. The worker calls, in this order::

    outcomes = store.apply(requests)          # deletes, writes receipts
    remaining = store.count_remaining(requests)  # verification, at or before each cut-off

Cut-off rule: a store deletes only items last written at or before ``request.cutoff_at``.
A replayed old request therefore never erases data that was legitimately re-created.

Receipts: for each (request, store) the outcome of the first apply is recorded. A request
that is delivered again (after a crash between apply and offset commit) reports the
recorded outcome, so the ledger records one terminal status. The delete itself runs again:
at the same cut-off it finds nothing, and after a failed verification it removes what a
concurrent writer left behind. Stores with transactions keep receipts in the same
transaction as the delete; others use a ``ReceiptBook`` beside their data.
"""

from __future__ import annotations

import abc
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tombstone.errors import ConfigError
from tombstone.models import AckStatus, DeletionRequest

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Outcome:
    """Result of one apply for one request."""

    status: AckStatus
    items_affected: int
    replayed: bool = False
    reason_code: str | None = None
    # RETAINED and ANONYMIZED name the legal basis. RETAINED and HIDDEN give the end date.
    legal_basis: str | None = None
    retained_until: datetime | None = None

    @classmethod
    def from_count(cls, deleted: int) -> Outcome:
        return cls(AckStatus.DELETED if deleted else AckStatus.ABSENT, deleted)


def cutoff_ms(request: DeletionRequest) -> int:
    """Convert the request's cut-off to epoch milliseconds, rounding down.

    Integer arithmetic, because ``timestamp() * 1000`` is a float product that can land
    just below the exact millisecond (2038-07-12T11:33:25.140Z gives ...139), so an item
    written exactly at the cut-off would survive. A naive cut-off is taken as local time,
    as ``datetime.timestamp`` does.
    """
    since_epoch = request.cutoff_at.astimezone(UTC) - _EPOCH
    return since_epoch // timedelta(milliseconds=1)


class Store(abc.ABC):
    """A derived store that contains copies of subjects' data.

    Constructors only keep configuration; ``open`` connects or opens files.
    """

    kind: str = "abstract"

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def open(self) -> None:
        """Connect to or open the store."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and file handles."""

    @abc.abstractmethod
    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete each request's data at or before its cut-off; return outcomes by request id.

        Must be idempotent: a request with a receipt runs its delete again but returns
        the receipt's outcome with ``replayed=True``.

        Raises:
            StoreUnavailableError: transient failure; nothing was recorded as applied.
            PermanentRecordError: a request that can never be applied (the worker
                dead-letters it; call again without it).
        """

    @abc.abstractmethod
    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        """Count, by request id, the items still present at or before each cut-off."""

    @abc.abstractmethod
    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        """Count every item of a subject (of one data class if given), whatever its time.

        For independent audits: hidden items count too, because their bytes are still there.
        """

    # Deletion policies other than "delete now". Stores that cannot hide or rewrite fields
    # keep these defaults, and a worker refuses to start with such a policy for them.

    #: Inventory actions this store carries out ("retain" needs nothing from the store).
    actions: frozenset[str] = frozenset({"delete", "retain"})

    def check_policy(self, data_class: str, action: str, fields: Sequence[str] = ()) -> None:
        """Raise at start-up when the inventory requests an action this store cannot do.

        Raises:
            ConfigError: naming the store, the data class and the action.
        """
        if action not in self.actions:
            raise ConfigError(
                f"Store {self.name} ({self.kind}) cannot {action} data class {data_class}; it supports "
                f"{', '.join(sorted(self.actions))}. Change the store's action in the inventory."
            )

    def hide(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Stop normal reads from showing each request's items, keeping the bytes (HIDDEN)."""
        raise self._unsupported("hide")

    def purge(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete the items that ``hide`` kept for each request (PURGED)."""
        raise self._unsupported("purge")

    def restore(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Put back the items that ``hide`` kept for each request (CANCELLED)."""
        raise self._unsupported("restore")

    def count_hidden(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        """Count, by request id, the hidden items that a purge has not removed yet."""
        return {request.request_id: 0 for request in requests}

    def anonymize(self, requests: Sequence[DeletionRequest], fields: Sequence[str]) -> dict[str, Outcome]:
        """Rewrite ``fields`` of each request's items and keep the items (ANONYMIZED)."""
        raise self._unsupported("anonymize")

    def count_identifying(self, requests: Sequence[DeletionRequest], fields: Sequence[str]) -> dict[str, int]:
        """Count, by request id, items at or before the cut-off whose ``fields`` are still set."""
        raise self._unsupported("anonymize")

    def _unsupported(self, action: str) -> ConfigError:
        return ConfigError(f"Store {self.name} ({self.kind}) cannot {action}; see Store.actions.")

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalFile:
    """A small SQLite file of worker-local state, opened with WAL and full fsync."""

    what = "State file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def _create(self, db: sqlite3.Connection) -> None:
        """Create the file's tables when they are missing."""

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._create(self._db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.what} {self.path} is not open; call open() first.")
        return self._db


class ReceiptBook(LocalFile):
    """Outcomes of applied requests in a small SQLite file, for stores without transactions.

    A receipt is written after the store's delete and before the ack is sent. A crash
    between the two leaves no receipt, so the replay applies again, finds nothing and
    reports ``ABSENT``: still exactly one ack for the request and store.
    """

    what = "Receipt book"

    def _create(self, db: sqlite3.Connection) -> None:
        ensure_receipt_table(db)

    def lookup(self, request_ids: Iterable[str]) -> dict[str, Outcome]:
        return lookup_receipts(self.db, request_ids)

    def record(self, outcomes: dict[str, Outcome]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            record_receipts(self.db, outcomes)


RECEIPT_TABLE = "tombstone_receipts"


def ensure_receipt_table(db: sqlite3.Connection) -> None:
    """Create the receipt table in a SQLite database when it is missing."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {RECEIPT_TABLE} ("
        " request_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
        " items_affected INTEGER NOT NULL, applied_at_ms INTEGER NOT NULL)"
    )


def lookup_receipts(db: sqlite3.Connection, request_ids: Iterable[str]) -> dict[str, Outcome]:
    ids = list(request_ids)
    found: dict[str, Outcome] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT request_id, status, items_affected FROM {RECEIPT_TABLE} "
            f"WHERE request_id IN ({marks})", chunk,
        )
        for request_id, status, items in rows:
            found[request_id] = Outcome(AckStatus(status), items, replayed=True)
    return found


def record_receipts(db: sqlite3.Connection, outcomes: dict[str, Outcome]) -> None:
    """Insert receipts inside the caller's transaction; existing receipts are kept."""
    now = int(time.time() * 1000)
    db.executemany(
        f"INSERT OR IGNORE INTO {RECEIPT_TABLE} VALUES (?, ?, ?, ?)",
        [(rid, o.status.value, o.items_affected, now) for rid, o in outcomes.items() if not o.replayed],
    )
