"""TopicStore error mapping without a broker: an unreachable broker is a transient failure."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tombstone.errors import StoreUnavailableError
from tombstone.models import DeletionRequest
from tombstone.settings import KafkaSettings
from tombstone.spec import TopicStoreConfig
from tombstone.stores.topic import TopicStore


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def store(closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TopicStore]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port}")
    monkeypatch.setenv("TOMBSTONE_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("TOMBSTONE_DELIVERY_TIMEOUT_S", "1")
    config = TopicStoreConfig(kind="topic", topic="customer.profiles", data_class="customer_profile",
                              refresh_timeout_s=2)
    store = TopicStore("profiles-topic", config, KafkaSettings(), state_dir=tmp_path)
    store.open()
    yield store
    store.close()


def make_request() -> DeletionRequest:
    return DeletionRequest(subject_type="customer", subject_id="17", data_class="customer_profile",
                           reason="user_request", requested_by="test")


def test_apply_unreachable_broker_is_unavailable(store: TopicStore) -> None:
    with pytest.raises(StoreUnavailableError):
        store.apply([make_request()])


def test_count_remaining_unreachable_broker_is_unavailable(store: TopicStore) -> None:
    with pytest.raises(StoreUnavailableError):
        store.count_remaining([make_request()])


def test_publish_unreachable_broker_is_unavailable(store: TopicStore) -> None:
    with pytest.raises(StoreUnavailableError):
        store.publish([("customer:17", b"{}")])


def test_apply_unreachable_broker_writes_no_receipt(store: TopicStore) -> None:
    request = make_request()
    with pytest.raises(StoreUnavailableError):
        store.apply([request])

    assert store.receipts.lookup([request.request_id]) == {}
