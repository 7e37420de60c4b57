"""RedisStore without a server: error translation, secrets, config checks and build_store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis

from tombstone.errors import ConfigError, StoreError, StoreUnavailableError
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec, RedisStoreConfig
from tombstone.stores import RedisStore, build_store

SECRET = "s3cret-value"


def _config(**fields: Any) -> RedisStoreConfig:
    return RedisStoreConfig(kind="redis", data_classes=["customer_profile"], **fields)


class FailingClient:
    """A client whose every call raises the given redis-py error."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = False

    def ping(self) -> None:
        raise self.error

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("error", [
    redis.ConnectionError("Error 111 connecting to 127.0.0.1:56379. Connection refused."),
    redis.TimeoutError("Timeout reading from socket"),
    redis.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.ReadOnlyError("You can't write against a read only replica."),
    redis.AuthenticationError("invalid username-password pair"),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
])
def test_open_transient_error_unavailable(error: Exception) -> None:
    client = FailingClient(error)
    store = RedisStore("cache", _config(), client_factory=lambda url, **options: client)

    with pytest.raises(StoreUnavailableError, match="Redis store cache failed to connect") as raised:
        store.open()

    assert raised.value.__cause__ is error
    assert client.closed
    with pytest.raises(RuntimeError, match="not open"):
        store.client


def test_open_other_error_store_error() -> None:
    client = FailingClient(redis.ResponseError("ERR unknown command 'PING'"))
    store = RedisStore("cache", _config(), client_factory=lambda url, **options: client)

    with pytest.raises(StoreError) as raised:
        store.open()

    assert not isinstance(raised.value, StoreUnavailableError)


def test_open_unreachable_server_unavailable() -> None:
    # Port 1 on loopback has no listener, so the connection is refused at once.
    store = RedisStore("cache", _config(url="redis://127.0.0.1:1/0", password=SECRET, socket_timeout_s=1))

    with pytest.raises(StoreUnavailableError, match="Connection refused") as raised:
        store.open()

    assert SECRET not in str(raised.value)


def test_open_passes_settings_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    received: dict[str, Any] = {}

    class Client:
        def ping(self) -> bool:
            return True

    def factory(url: str, **options: Any) -> Client:
        received.update(options, url=url)
        return Client()

    store = RedisStore("cache", _config(password=SECRET, socket_timeout_s=2.5, health_check_interval_s=7),
                       client_factory=factory)
    with caplog.at_level(logging.INFO, logger="tombstone.stores.redis"):
        store.open()

    assert received["password"] == SECRET
    assert received["socket_timeout"] == 2.5
    assert received["socket_connect_timeout"] == 2.5
    assert received["health_check_interval"] == 7
    assert "Redis store cache connected" in caplog.text
    assert SECRET not in caplog.text


def test_open_password_twice_config_error() -> None:
    store = RedisStore("cache", _config(url=f"redis://app:{SECRET}@127.0.0.1:6379/0", password="other"))

    with pytest.raises(ConfigError) as raised:
        store.open()

    assert SECRET not in str(raised.value)
    assert "redis://app:***@127.0.0.1:6379/0" in str(raised.value)


def test_open_empty_password_unset() -> None:
    received: dict[str, Any] = {}

    class Client:
        def ping(self) -> bool:
            return True

    def factory(url: str, **options: Any) -> Client:
        received.update(options)
        return Client()

    store = RedisStore("cache", _config(url="redis://app:pw@127.0.0.1:6379/0", password=""), client_factory=factory)
    store.open()

    assert received["password"] is None

def test_config_rejects_brace_in_prefix() -> None:
    with pytest.raises(pydantic.ValidationError):
        _config(index_prefix="cache:{tenant}")


def test_index_key_tags_subject() -> None:
    store = RedisStore("cache", _config(index_prefix="app:index"))

    assert store.index_key("customer:17", "customer_profile") == "app:index:customer_profile:{customer:17}"
    assert store.receipts_key == "app:index:receipts:cache"


def test_build_store_redis(tmp_path: Path) -> None:
    spec = ConsumerSpec(name="cache", data_classes=["customer_profile"], state_dir=str(tmp_path),
                        store={"kind": "redis", "url": "redis://127.0.0.1:56379/0",
                               "data_classes": ["customer_profile"]})

    built = build_store(spec, KafkaSettings())

    assert type(built) is RedisStore
    assert built.name == "cache"
