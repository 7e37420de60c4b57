"""ObjectStore against real files in tmp_path; mtimes are set explicitly, never waited for."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tombstone.errors import StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import ObjectStoreConfig
from tombstone.stores.objects import ObjectStore

CUTOFF_MS = 1_700_000_000_000


def at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def make_request(subject_id: str, data_class: str = "exports", cutoff: int = CUTOFF_MS) -> DeletionRequest:
    return DeletionRequest(
        subject_type="customer", subject_id=subject_id, data_class=data_class,
        reason="user_request", requested_by="test", cutoff_at=at_ms(cutoff),
    )


@pytest.fixture
def config(tmp_path: Path) -> ObjectStoreConfig:
    return ObjectStoreConfig(kind="objects", root=str(tmp_path / "objects"))


@pytest.fixture
def store(config: ObjectStoreConfig):
    store = ObjectStore("exports", config)
    store.open()
    yield store
    store.close()


def put(store: ObjectStore, name: str, modified_ms: int = CUTOFF_MS - 1, subject: str = "customer:17",
        data_class: str = "exports") -> Path:
    return store.put_object(subject, name, b"name,email\nAda,ada@example.com\n", data_class, modified_ms)


def test_put_object_layout(store: ObjectStore, config: ObjectStoreConfig) -> None:
    path = put(store, "2024.csv")

    digest = hashlib.sha256(b"customer:17").hexdigest()
    assert path == Path(config.root) / "customer" / digest / "exports" / "2024.csv"
    assert (path.parent.parent / "_subject").read_text() == "customer:17"
    assert path.stat().st_mtime_ns == (CUTOFF_MS - 1) * 1_000_000


def test_apply_deletes_objects_at_and_before_cutoff(store: ObjectStore) -> None:
    put(store, "old.csv", CUTOFF_MS - 5000)
    put(store, "at.csv", CUTOFF_MS)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 2
    assert outcome.replayed is False
    assert store.scan_subject("customer:17") == 0


def test_apply_keeps_objects_after_cutoff(store: ObjectStore) -> None:
    put(store, "old.csv")
    kept = put(store, "new.csv", CUTOFF_MS + 1)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert kept.is_file()


def test_apply_keeps_other_subjects(store: ObjectStore) -> None:
    put(store, "a.csv")
    other = put(store, "a.csv", subject="customer:18")

    store.apply([make_request("17")])

    assert other.is_file()


def test_apply_replay_returns_receipt(store: ObjectStore) -> None:
    put(store, "a.csv")
    put(store, "b.csv")
    request = make_request("17")
    first = store.apply([request])[request.request_id]

    second = store.apply([request])[request.request_id]

    assert second.replayed is True
    assert second.status is first.status
    assert second.items_affected == first.items_affected == 2


def test_apply_replay_deletes_objects_written_since(store: ObjectStore) -> None:
    request = make_request("17")
    store.apply([request])
    put(store, "late.csv")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.replayed is True
    assert store.scan_subject("customer:17") == 0


def test_apply_receipt_survives_reopen(store: ObjectStore) -> None:
    put(store, "a.csv")
    request = make_request("17")
    store.apply([request])
    store.close()
    store.open()

    outcome = store.apply([request])[request.request_id]

    assert outcome.replayed is True
    assert outcome.items_affected == 1


def test_apply_new_request_after_delete_is_absent(store: ObjectStore) -> None:
    put(store, "a.csv")
    store.apply([make_request("17")])
    again = make_request("17")

    outcome = store.apply([again])[again.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.items_affected == 0
    assert outcome.replayed is False


def test_count_remaining_zero_after_apply(store: ObjectStore) -> None:
    put(store, "a.csv")
    put(store, "b.csv", CUTOFF_MS + 1)
    request = make_request("17")
    before = store.count_remaining([request])

    store.apply([request])

    assert before == {request.request_id: 1}
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_deletes_only_request_data_class(store: ObjectStore) -> None:
    put(store, "a.csv")
    invoice = put(store, "invoice.pdf", data_class="billing")
    request = make_request("17", "billing")

    outcome = store.apply([request])[request.request_id]

    exports = make_request("17")
    assert outcome.items_affected == 1
    assert not invoice.exists()
    assert store.count_remaining([exports]) == {exports.request_id: 1}


def test_apply_batch_of_many_requests(store: ObjectStore) -> None:
    for customer in range(100):
        for offset in (-1, 0, 1):
            put(store, f"{offset}.csv", CUTOFF_MS + offset, subject=f"customer:{customer}")
    requests = [make_request(str(customer)) for customer in range(100)]

    outcomes = store.apply(requests)

    # Each customer has objects at cut-off -1, 0 and +1: two are deleted, one stays.
    assert len(outcomes) == 100
    assert {o.items_affected for o in outcomes.values()} == {2}
    assert set(store.count_remaining(requests).values()) == {0}
    assert sum(store.scan_subject(f"customer:{c}") for c in range(100)) == 100


def test_apply_batch_counts_each_object_once(store: ObjectStore) -> None:
    put(store, "a.csv", CUTOFF_MS - 20)
    put(store, "b.csv", CUTOFF_MS)
    early, late = make_request("17", cutoff=CUTOFF_MS - 10), make_request("17")

    outcomes = store.apply([early, late])

    assert outcomes[early.request_id].items_affected == 1
    assert outcomes[late.request_id].items_affected == 1


def test_apply_removes_emptied_subject_dir(store: ObjectStore) -> None:
    path = put(store, "a.csv")
    subject_dir = path.parent.parent

    store.apply([make_request("17")])

    assert not subject_dir.exists()


def test_apply_keeps_subject_file_while_objects_remain(store: ObjectStore) -> None:
    path = put(store, "a.csv")
    put(store, "invoice.pdf", data_class="billing")

    store.apply([make_request("17")])

    assert not path.parent.exists()
    assert (path.parent.parent / "_subject").read_text() == "customer:17"


def test_apply_deletes_leftover_temporary_file(store: ObjectStore) -> None:
    path = put(store, "a.csv")
    leftover = path.parent / ".put-interrupted"
    leftover.write_bytes(b"partial")
    os.utime(leftover, ns=((CUTOFF_MS - 1) * 1_000_000,) * 2)
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 2
    assert not leftover.exists()


def test_scan_subject_counts_everything(store: ObjectStore) -> None:
    put(store, "a.csv")
    put(store, "b.csv", CUTOFF_MS + 1)
    put(store, "invoice.pdf", data_class="billing")
    put(store, "a.csv", subject="customer:18")

    assert store.scan_subject("customer:17") == 3


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", ".hidden", "_subject", "x" * 256])
def test_put_object_rejects_bad_name(store: ObjectStore, name: str) -> None:
    with pytest.raises(ValueError):
        put(store, name)


def test_apply_io_error_is_unavailable(store: ObjectStore) -> None:
    path = put(store, "a.csv")
    # A file where the data-class directory should be makes listing it fail with ENOTDIR.
    blocked = make_request("17", "blocked")
    (path.parent.parent / "blocked").write_bytes(b"")

    with pytest.raises(StoreUnavailableError):
        store.apply([blocked])


def test_apply_removes_leftover_subject_file_copy(store: ObjectStore) -> None:
    path = put(store, "a.csv")
    subject_dir = path.parent.parent
    (subject_dir / ".put-interrupted").write_bytes(b"customer:17")

    store.apply([make_request("17")])

    assert not subject_dir.exists()
