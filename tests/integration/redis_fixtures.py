"""Fixtures for tests against the project's Redis server.

``bash deploy/local/services.sh start`` runs it on 127.0.0.1, port TOMBSTONE_REDIS_PORT
(default 56379). A test that needs it fails with that instruction when the server does not
respond, and is never skipped. Import the fixtures into a test module by name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from tombstone.spec import RedisStoreConfig
from tombstone.stores.redis import RedisStore

REDIS_PORT = int(os.environ.get("TOMBSTONE_REDIS_PORT", "56379"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"


@pytest.fixture
def redis_url() -> str:
    """URL of the project's Redis server, after checking that it responds to PING."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}), so this Redis test cannot run. "
                    "Start it with `bash deploy/local/services.sh start`.", pytrace=False)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client for checks that bypass the store."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix that no other test uses. Its keys are deleted after the test."""
    namespace = f"tombstone-test-{uuid.uuid4().hex[:12]}"
    yield namespace
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        # SCAN here is test cleanup only, and the store under test never scans.
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture
def make_redis_store(redis_url: str, redis_namespace: str) -> Iterator[Callable[..., RedisStore]]:
    """Build and open a RedisStore whose index prefix is the test's namespace."""
    opened: list[RedisStore] = []

    def make(name: str = "cache", data_classes: tuple[str, ...] = ("customer_profile", "billing"),
             **options: object) -> RedisStore:
        config = RedisStoreConfig(kind="redis", url=redis_url, index_prefix=f"{redis_namespace}:index",
                                  data_classes=list(data_classes), health_check_interval_s=0)
        store = RedisStore(name, config, **options)  # type: ignore[arg-type]
        store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
