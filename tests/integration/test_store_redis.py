"""RedisStore against the project's Redis server: cut-offs, receipts, races and round trips."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis

from tests.integration.redis_fixtures import (  # noqa: F401  (fixtures)
    make_redis_store,
    redis_client,
    redis_namespace,
    redis_url,
)
from tombstone.errors import PermanentRecordError, StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest, utc_now
from tombstone.requester import new_request
from tombstone.stores.base import cutoff_ms

pytestmark = pytest.mark.integration

# An hour ago, because a request's cut-off may not be later than the time of the request.
CUTOFF = utc_now() - timedelta(hours=1)
CUTOFF_MS = cutoff_ms(new_request("customer:1", "customer_profile", "user_request", "test", cutoff_at=CUTOFF))


def _request(subject: str, data_class: str = "customer_profile", cutoff_at: datetime = CUTOFF) -> DeletionRequest:
    return new_request(subject, data_class, "user_request", "test", cutoff_at=cutoff_at)


def _command_name(args: tuple[Any, ...]) -> str:
    first = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    return first.split()[0].upper()


class Recorder:
    """Records the command names of each request that a store's connections send.

    ``trips`` has one list per round trip. ``before_send`` runs before each request is sent,
    so a test can change the server state at a chosen step.
    """

    def __init__(self) -> None:
        self.trips: list[list[str]] = []
        self.before_send: Callable[[list[str]], None] | None = None
        self._names: list[str] = []

    def client_factory(self, url: str, **options: Any) -> redis.Redis:
        recorder = self

        class RecordingConnection(redis.Connection):
            def send_command(self, *args: Any, **options: Any) -> None:
                recorder._names = [_command_name(args)]
                super().send_command(*args, **options)

            def pack_commands(self, commands: Any) -> Any:
                recorder._names = [_command_name(tuple(command)) for command in commands]
                return super().pack_commands(commands)

            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                names = recorder._names
                recorder.trips.append(names)
                if recorder.before_send is not None:
                    recorder.before_send(names)
                super().send_packed_command(command, check_health)

        return redis.Redis.from_url(url, connection_class=RecordingConnection, **options)


def _command_calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()}


def test_apply_deletes_at_or_before_cutoff(make_redis_store, redis_client, redis_namespace) -> None:
    store = make_redis_store()
    ns = redis_namespace
    store.put("customer:1", "customer_profile", f"{ns}:before", b"a", CUTOFF_MS - 1000)
    store.put("customer:1", "customer_profile", f"{ns}:at", {"name": "Ann"}, CUTOFF_MS)
    store.put("customer:1", "customer_profile", f"{ns}:after", b"c", CUTOFF_MS + 1)
    request = _request("customer:1")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 2
    assert not outcome.replayed
    assert redis_client.exists(f"{ns}:before", f"{ns}:at") == 0
    assert redis_client.get(f"{ns}:after") == b"c"
    index = store.index_key("customer:1", "customer_profile")
    assert redis_client.zrange(index, 0, -1, withscores=True) == [(f"{ns}:after".encode(), CUTOFF_MS + 1)]


def test_apply_keeps_key_rewritten_after_cutoff(make_redis_store, redis_client, redis_namespace) -> None:
    store = make_redis_store()
    key = f"{redis_namespace}:profile"
    store.put("customer:2", "customer_profile", key, b"old", CUTOFF_MS - 1000)
    store.put("customer:2", "customer_profile", key, b"new", CUTOFF_MS + 1000)
    request = _request("customer:2")

    outcome = store.apply([request])[request.request_id]

    assert outcome.status is AckStatus.ABSENT
    assert redis_client.get(key) == b"new"
    assert store.scan_subject("customer:2") == 1
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_put_during_apply_survives(make_redis_store, redis_client, redis_namespace, caplog) -> None:
    recorder = Recorder()
    store = make_redis_store(client_factory=recorder.client_factory)
    writer = make_redis_store()
    key = f"{redis_namespace}:profile"
    store.put("customer:3", "customer_profile", key, b"old", CUTOFF_MS - 1000)
    store.put("customer:3", "customer_profile", f"{redis_namespace}:orders", b"o", CUTOFF_MS - 1000)
    request = _request("customer:3")

    def rewrite_once(names: list[str]) -> None:
        # Between the read and the EXEC, as a concurrent application would.
        if names[0] == "MULTI" and "UNLINK" in names and recorder.before_send is not None:
            recorder.before_send = None
            writer.put("customer:3", "customer_profile", key, b"new", CUTOFF_MS + 1000)

    recorder.before_send = rewrite_once
    with caplog.at_level(logging.INFO, logger="tombstone.stores.redis"):
        outcome = store.apply([request])[request.request_id]

    assert "attempt 1 of 5" in caplog.text
    assert outcome.status is AckStatus.DELETED
    assert outcome.items_affected == 1
    assert redis_client.get(key) == b"new"
    assert redis_client.exists(f"{redis_namespace}:orders") == 0
    index = store.index_key("customer:3", "customer_profile")
    assert redis_client.zscore(index, key) == CUTOFF_MS + 1000
    assert redis_client.hget(store.receipts_key, request.request_id) == b"DELETED:1"


def test_apply_contended_raises_unavailable(make_redis_store, redis_client, redis_namespace) -> None:
    recorder = Recorder()
    store = make_redis_store(client_factory=recorder.client_factory)
    writer = make_redis_store()
    key = f"{redis_namespace}:profile"
    store.put("customer:4", "customer_profile", key, b"v", CUTOFF_MS - 1000)
    request = _request("customer:4")

    def rewrite(names: list[str]) -> None:
        if names[0] == "MULTI" and "UNLINK" in names:
            writer.put("customer:4", "customer_profile", key, b"v", CUTOFF_MS - 1000)

    recorder.before_send = rewrite
    with pytest.raises(StoreUnavailableError, match="5 attempts"):
        store.apply([request])

    assert redis_client.get(key) == b"v"
    assert redis_client.hget(store.receipts_key, request.request_id) is None


def test_apply_connection_lost_unavailable(make_redis_store, redis_client, redis_namespace) -> None:
    recorder = Recorder()
    name = f"cache-{redis_namespace[-12:]}"
    store = make_redis_store(name=name, client_factory=recorder.client_factory)
    key = f"{redis_namespace}:profile"
    store.put("customer:17", "customer_profile", key, b"v", CUTOFF_MS - 1000)
    request = _request("customer:17")

    def kill_connections(names: list[str]) -> None:
        # Close the store's connections on the server while its keys are WATCHed.
        if names[0] == "MULTI" and recorder.before_send is not None:
            recorder.before_send = None
            for client in redis_client.client_list():
                if client["name"] == f"tombstone-{name}":
                    redis_client.client_kill_filter(_id=client["id"])

    recorder.before_send = kill_connections
    with pytest.raises(StoreUnavailableError) as raised:
        store.apply([request])

    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    assert redis_client.get(key) == b"v"
    outcome = store.apply([request])[request.request_id]
    assert (outcome.status, outcome.items_affected) == (AckStatus.DELETED, 1)
    assert redis_client.exists(key) == 0

def test_apply_replay_returns_receipt(make_redis_store, redis_client, redis_namespace) -> None:
    store = make_redis_store()
    ns = redis_namespace
    for name in ("a", "b"):
        store.put("customer:5", "customer_profile", f"{ns}:{name}", b"v", CUTOFF_MS - 1000)
    request = _request("customer:5")
    first = store.apply([request])[request.request_id]
    # A backfill with an old write time: the replayed delete removes it, the receipt stays.
    store.put("customer:5", "customer_profile", f"{ns}:late", b"v", CUTOFF_MS - 500)

    replay = store.apply([request])[request.request_id]

    assert (first.status, first.items_affected, first.replayed) == (AckStatus.DELETED, 2, False)
    assert (replay.status, replay.items_affected, replay.replayed) == (AckStatus.DELETED, 2, True)
    assert redis_client.exists(f"{ns}:late") == 0
    assert redis_client.hget(store.receipts_key, request.request_id) == b"DELETED:2"


def test_apply_new_request_absent(make_redis_store, redis_client) -> None:
    store = make_redis_store()
    request = _request("customer:6")

    outcome = store.apply([request])[request.request_id]

    assert (outcome.status, outcome.items_affected, outcome.replayed) == (AckStatus.ABSENT, 0, False)
    assert redis_client.hget(store.receipts_key, request.request_id) == b"ABSENT:0"
    assert store.count_remaining([request]) == {request.request_id: 0}


def test_apply_only_request_data_class(make_redis_store, redis_client, redis_namespace) -> None:
    store = make_redis_store()
    ns = redis_namespace
    store.put("customer:7", "customer_profile", f"{ns}:profile", b"p", CUTOFF_MS - 1000)
    store.put("customer:7", "billing", f"{ns}:invoice", b"i", CUTOFF_MS - 1000)
    store.put("customer:8", "customer_profile", f"{ns}:other", b"o", CUTOFF_MS - 1000)
    request = _request("customer:7", "billing")

    outcome = store.apply([request])[request.request_id]

    assert (outcome.status, outcome.items_affected) == (AckStatus.DELETED, 1)
    assert redis_client.exists(f"{ns}:invoice") == 0
    assert redis_client.get(f"{ns}:profile") == b"p"
    assert redis_client.get(f"{ns}:other") == b"o"
    assert store.scan_subject("customer:7") == 1
    assert store.scan_subject("customer:8") == 1


def test_apply_same_subject_counts_once(make_redis_store, redis_namespace) -> None:
    store = make_redis_store()
    store.put("customer:9", "customer_profile", f"{redis_namespace}:old", b"v", CUTOFF_MS - 2000)
    store.put("customer:9", "customer_profile", f"{redis_namespace}:new", b"v", CUTOFF_MS - 1000)
    early = _request("customer:9", cutoff_at=CUTOFF - timedelta(milliseconds=1500))
    late = _request("customer:9")

    outcomes = store.apply([early, late])

    assert outcomes[early.request_id].items_affected == 1
    assert outcomes[late.request_id].items_affected == 1
    assert store.scan_subject("customer:9") == 0


def test_apply_batch_bounded_round_trips(make_redis_store, redis_client, redis_namespace) -> None:
    recorder = Recorder()
    store = make_redis_store(client_factory=recorder.client_factory)
    subjects = [f"customer:{i}" for i in range(1000)]
    calls_before = _command_calls(redis_client)
    for subject in subjects:
        for name in ("profile", "session"):
            store.put(subject, "customer_profile", f"{redis_namespace}:{subject}:{name}", b"v", CUTOFF_MS - 1)
    store.apply([_request("customer:warm-up")])  # opens the second connection that apply uses
    requests = [_request(subject) for subject in subjects]
    recorder.trips.clear()

    outcomes = store.apply(requests)
    apply_trips = list(recorder.trips)
    recorder.trips.clear()
    remaining = store.count_remaining(requests)
    count_trips = list(recorder.trips)
    recorder.trips.clear()
    scanned = sum(store.scan_subject(subject) for subject in subjects[:10])
    calls = _command_calls(redis_client)

    assert all(o.status is AckStatus.DELETED and o.items_affected == 2 for o in outcomes.values())
    assert [trip[0] for trip in apply_trips] == ["WATCH", "ZRANGEBYSCORE", "WATCH", "EXISTS", "MULTI"]
    delete_trip = apply_trips[-1]
    assert delete_trip[-1] == "EXEC"
    assert delete_trip.count("UNLINK") == 1000
    assert delete_trip.count("HSETNX") == 1000
    assert set(remaining.values()) == {0}
    assert len(count_trips) == 1
    assert scanned == 0
    for command in ("keys", "scan"):
        assert calls.get(command, 0) == calls_before.get(command, 0), f"the store issued {command.upper()}"


def test_count_remaining_finds_leftovers(make_redis_store, redis_client, redis_namespace) -> None:
    store = make_redis_store()
    ns = redis_namespace
    for name in ("a", "b", "c"):
        store.put("customer:10", "customer_profile", f"{ns}:{name}", b"v", CUTOFF_MS - 1000)
    request = _request("customer:10")
    store.apply([request])
    assert store.count_remaining([request]) == {request.request_id: 0}

    redis_client.set(f"{ns}:a", b"written without put")
    store.put("customer:10", "customer_profile", f"{ns}:b", b"backfill", CUTOFF_MS - 10)
    store.put("customer:10", "customer_profile", f"{ns}:c", b"fresh", CUTOFF_MS + 10)

    assert store.count_remaining([request]) == {request.request_id: 2}


def test_scan_subject_counts_every_class(make_redis_store, redis_namespace) -> None:
    store = make_redis_store()
    store.put("customer:11", "customer_profile", f"{redis_namespace}:p", b"v", CUTOFF_MS + 5000)
    store.put("customer:11", "billing", f"{redis_namespace}:b", {"total": 3}, CUTOFF_MS - 5000)

    assert store.scan_subject("customer:11") == 2
    assert store.scan_subject("customer:12") == 0


def test_put_replaces_hash_fields(make_redis_store, redis_client, redis_namespace) -> None:
    store = make_redis_store()
    key = f"{redis_namespace}:h"
    store.put("customer:13", "billing", key, {"a": "1", "b": "2"})
    written = store.put("customer:13", "billing", key, {"c": "3"})

    assert redis_client.hgetall(key) == {b"c": b"3"}
    assert redis_client.zscore(store.index_key("customer:13", "billing"), key) == written


@pytest.mark.parametrize("data_class, key, value, error", [
    ("unknown_class", "k", b"v", ValueError),
    ("billing", "", b"v", ValueError),
    ("billing", "{ns}:index:x", b"v", ValueError),
    ("billing", "k", "text", TypeError),
    ("billing", "k", {}, ValueError),
    ("billing", "k", {"f": True}, TypeError),
])
def test_put_invalid_input_raises(make_redis_store, redis_namespace, data_class, key, value, error) -> None:
    store = make_redis_store()

    with pytest.raises(error):
        store.put("customer:14", data_class, key.format(ns=redis_namespace), value)


def test_apply_wrongtype_index_rejected(make_redis_store, redis_client) -> None:
    store = make_redis_store()
    redis_client.set(store.index_key("customer:15", "customer_profile"), b"not a sorted set")
    request = _request("customer:15")

    with pytest.raises(PermanentRecordError) as raised:
        store.apply([request, _request("customer:16")])

    assert raised.value.request_id == request.request_id
    assert raised.value.reason == "redis_index_wrong_type"
    assert "customer:15" not in str(raised.value)

