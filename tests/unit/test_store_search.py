"""SearchStore against a real tantivy index in tmp_path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tombstone.errors import StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest
from tombstone.spec import SearchStoreConfig
from tombstone.stores.search import SearchDocument, SearchStore

CUTOFF_MS = 1_700_000_000_000


def at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def make_request(subject_id: str, data_class: str = "tickets", cutoff: int = CUTOFF_MS) -> DeletionRequest:
    return DeletionRequest(
        subject_type="customer", subject_id=subject_id, data_class=data_class,
        reason="user_request", requested_by="test", cutoff_at=at_ms(cutoff),
    )


def doc(doc_id: str, subject: str = "customer:17", updated_at_ms: int = CUTOFF_MS - 1,
        data_class: str = "tickets") -> SearchDocument:
    return SearchDocument(doc_id, subject, data_class, updated_at_ms, f"printer broken {doc_id}")


@pytest.fixture
def config(tmp_path: Path) -> SearchStoreConfig:
    return SearchStoreConfig(kind="search", path=str(tmp_path / "index"))


@pytest.fixture
def store(config: SearchStoreConfig):
    store = SearchStore("search", config)
    store.open()
    yield store
    store.close()


def test_apply_deletes_documents_at_and_before_cutoff(store: SearchStore) -> None:
    store.add_documents([doc("a", updated_at_ms=CUTOFF_MS - 5000), doc("b", updated_at_ms=CUTOFF_MS)])
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 2
    assert outcome.replayed is False
    assert store.scan_subject("customer:17") == 0


def test_apply_keeps_documents_after_cutoff(store: SearchStore) -> None:
    store.add_documents([doc("a"), doc("b", updated_at_ms=CUTOFF_MS + 1)])
    request = make_request("17")

    outcome = store.apply([request])[request.request_id]

    assert outcome.items_affected == 1
    assert store.scan_subject("customer:17") == 1


def test_apply_keeps_other_subjects(store: SearchStore) -> None:
    store.add_documents([doc("a"), doc("b", subject="customer:170")])

    store.apply([make_request("17")])

    assert store.scan_subject("customer:170") == 1


def test_apply_replay_returns_receipt(store: SearchStore) -> None:
    store.add_documents([doc("a"), doc("b")])
    request = make_request("17")
    first = store.apply([request])[request.request_id]

    second = store.apply([request])[request.request_id]

    assert second.replayed is True
    assert second.status is first.status
    assert second.items_affected == first.items_affected == 2


def test_apply_replay_deletes_documents_added_since(store: SearchStore) -> None:
    request = make_request("17")
    store.apply([request])
    store.add_documents([doc("late")])

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.replayed is True
    assert store.scan_subject("customer:17") == 0


def test_apply_receipt_survives_reopen(store: SearchStore) -> None:
    store.add_documents([doc("a")])
    request = make_request("17")
    store.apply([request])
    store.close()
    store.open()

    outcome = store.apply([request])[request.request_id]

    assert outcome.replayed is True
    assert outcome.items_affected == 1


def test_apply_new_request_after_delete_is_absent(store: SearchStore) -> None:
    store.add_documents([doc("a")])
    store.apply([make_request("17")])
    again = make_request("17")

    outcome = store.apply([again])[again.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert outcome.items_affected == 0
    assert outcome.replayed is False


def test_count_remaining_zero_after_apply(store: SearchStore) -> None:
    store.add_documents([doc("a"), doc("b", updated_at_ms=CUTOFF_MS + 1)])
    request = make_request("17")
    before = store.count_remaining([request])

    store.apply([request])

    assert before == {request.request_id: 1}
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_deletes_only_request_data_class(store: SearchStore) -> None:
    store.add_documents([doc("a"), doc("p", data_class="profile")])
    request = make_request("17", "profile")

    outcome = store.apply([request])[request.request_id]

    tickets = make_request("17", "tickets")
    assert outcome.items_affected == 1
    assert store.count_remaining([tickets]) == {tickets.request_id: 1}


def test_apply_batch_of_many_requests(store: SearchStore) -> None:
    store.add_documents(
        doc(f"{customer}-{offset}", f"customer:{customer}", CUTOFF_MS + offset)
        for customer in range(200) for offset in (-1, 0, 1)
    )
    requests = [make_request(str(customer)) for customer in range(200)]

    outcomes = store.apply(requests)

    # Each customer has documents at cut-off -1, 0 and +1: two are deleted, one stays.
    assert len(outcomes) == 200
    assert {o.items_affected for o in outcomes.values()} == {2}
    assert set(store.count_remaining(requests).values()) == {0}
    assert store.index.searcher().num_docs == 200


def test_apply_batch_counts_each_document_once(store: SearchStore) -> None:
    store.add_documents([doc("a", updated_at_ms=CUTOFF_MS - 20), doc("b", updated_at_ms=CUTOFF_MS - 10),
                         doc("c", updated_at_ms=CUTOFF_MS)])
    early, late = make_request("17", cutoff=CUTOFF_MS - 10), make_request("17")

    outcomes = store.apply([early, late])

    assert outcomes[early.request_id].items_affected == 2
    assert outcomes[late.request_id].items_affected == 1


def test_apply_batch_later_request_first_takes_all(store: SearchStore) -> None:
    store.add_documents([doc("a", updated_at_ms=CUTOFF_MS - 20), doc("b", updated_at_ms=CUTOFF_MS)])
    early, late = make_request("17", cutoff=CUTOFF_MS - 10), make_request("17")

    outcomes = store.apply([late, early])

    assert outcomes[late.request_id].items_affected == 2
    assert outcomes[early.request_id].status is AckStatus.ABSENT


def test_add_documents_replaces_same_doc_id(store: SearchStore) -> None:
    store.add_documents([doc("a", updated_at_ms=CUTOFF_MS - 1)])

    store.add_documents([doc("a", updated_at_ms=CUTOFF_MS + 1)])

    request = make_request("17")
    assert store.scan_subject("customer:17") == 1
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_scan_subject_counts_everything(store: SearchStore) -> None:
    store.add_documents([doc("a"), doc("b", updated_at_ms=CUTOFF_MS + 1), doc("p", data_class="profile"),
                         doc("x", subject="customer:18")])

    assert store.scan_subject("customer:17") == 3


def test_open_second_writer_is_unavailable(store: SearchStore, config: SearchStoreConfig) -> None:
    other = SearchStore("search", config)

    with pytest.raises(StoreUnavailableError):
        other.open()


def test_receipts_live_beside_index(store: SearchStore, config: SearchStoreConfig) -> None:
    store.apply([make_request("17")])

    assert (Path(config.path).parent / "search.receipts.sqlite").is_file()
    assert not list(Path(config.path).glob("*.sqlite"))


def test_search_document_rejects_text_time() -> None:
    with pytest.raises(TypeError):
        SearchDocument("a", "customer:17", "tickets", "1700000000000", "text")  # type: ignore[arg-type]
