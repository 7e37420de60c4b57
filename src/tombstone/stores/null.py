"""A store that contains no data, for benchmarks and pipeline tests."""

from __future__ import annotations

from collections.abc import Sequence

from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import NullStoreConfig
from tombstone.stores.base import Outcome, Store


class NullStore(Store):
    """Reports ``ABSENT`` for every request and keeps no receipts.

    A replayed request therefore reports ``ABSENT`` again with ``replayed=False``, which is
    the same terminal status as the first time.
    """

    kind = "null"

    def __init__(self, name: str, config: NullStoreConfig) -> None:
        super().__init__(name)
        self.config = config

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        return {r.request_id: Outcome(AckStatus.ABSENT, 0) for r in requests}

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        return {r.request_id: 0 for r in requests}

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        return 0
