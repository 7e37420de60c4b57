"""A Redis store's worker across a 30 s Redis outage: pause, retry, no commit, then every request once.

The test stops the project's Redis server with SHUTDOWN NOSAVE. The server runs with
appendonly yes, and SHUTDOWN writes and fsyncs the AOF, so the cached values survive the
restart. The server is started again in a ``finally`` block, whatever the test's outcome.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.integration.helpers import ProofReader, committed_offsets, end_offsets, wait_for
from tests.integration.redis_fixtures import (  # noqa: F401  (fixtures)
    REDIS_PORT,
    REDIS_URL,
    make_redis_store,
    redis_client,
    redis_namespace,
    redis_url,
)
from tombstone.models import AckStatus, DeletionRequest
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = 30
WARM_UP = range(0, 1)
DELETED_SUBJECTS = range(1, 21)
KEPT_SUBJECTS = range(21, 26)
KEY_NAMES = ("profile", "session")


def _write_redis_spec(directory: Path, index_prefix: str) -> Path:
    spec = directory / "cache.toml"
    spec.write_text(f"""
name = "cache"
data_classes = ["customer_profile"]
group_id = "test.cache.{uuid.uuid4().hex[:12]}"
batch_size = 100
poll_timeout_s = 0.2
state_dir = "{directory / 'state'}"

[retry]
initial_backoff_s = 0.1
max_backoff_s = 1.0
jitter_s = 0.1

[store]
kind = "redis"
url = "{REDIS_URL}"
index_prefix = "{index_prefix}"
socket_timeout_s = 2.0
health_check_interval_s = 1.0
data_classes = ["customer_profile"]
""", encoding="utf-8")
    return spec


def _request(ids: range) -> list[DeletionRequest]:
    requester = Requester(KafkaSettings())
    try:
        return requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                                 for i in ids])
    finally:
        requester.close()


def _redis_answers() -> bool:
    client = redis.Redis(port=REDIS_PORT, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _stop_redis() -> None:
    # redis-cli reports the closed connection after SHUTDOWN, so its exit code means nothing here.
    subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave"],
                   capture_output=True, timeout=30, check=False)
    wait_for(lambda: not _redis_answers(), timeout_s=30, what="Redis to stop")


def _start_redis() -> None:
    result = subprocess.run(["bash", "deploy/local/services.sh", "start"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (
        f"deploy/local/services.sh start failed with exit code {result.returncode}, so Redis is "
        f"still down:\n{result.stdout}\n{result.stderr}")
    wait_for(_redis_answers, timeout_s=60, what="Redis to answer after the restart")


def _caught_up(group: str, kafka: KafkaSettings) -> bool:
    """Whether the group committed every partition that has records up to its end."""
    committed = committed_offsets(group, kafka)
    return all(committed[partition] == end for partition, end in end_offsets(kafka).items() if end > 0)


def _keys(namespace: str, ids: range) -> list[str]:
    return [f"{namespace}:customer:{i}:{name}" for i in ids for name in KEY_NAMES]


def test_worker_redis_outage_completes(tmp_path: Path, proof_reader: ProofReader, start_worker,
                                       make_redis_store, redis_client, redis_namespace) -> None:
    loader = make_redis_store(data_classes=("customer_profile",))
    for i in [*WARM_UP, *DELETED_SUBJECTS, *KEPT_SUBJECTS]:
        for name in KEY_NAMES:
            loader.put(f"customer:{i}", "customer_profile", f"{redis_namespace}:customer:{i}:{name}", b"v")
    spec_path = _write_redis_spec(tmp_path, f"{redis_namespace}:index")
    worker = start_worker(spec_path)
    wait_for(lambda: worker.worker.health.ready, what="the worker to join its group")
    warm_up = _request(WARM_UP)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 1, what="the warm-up ack")
    kafka = KafkaSettings()
    group = load_spec(spec_path).consumer_group
    wait_for(lambda: _caught_up(group, kafka), what="the warm-up commit")
    committed_before = committed_offsets(group, kafka)
    registry = worker.worker.metrics.registry
    apply_retries = {"store": "cache", "step": "apply"}

    down_at = time.monotonic()
    try:
        _stop_redis()
        requests = _request(DELETED_SUBJECTS)
        wait_for(lambda: (registry.get_sample_value("tombstone_retries_total", apply_retries) or 0) >= 2,
                 what="two retries of the apply step while Redis is down")
        assert registry.get_sample_value("tombstone_partitions_paused", {"store": "cache"}) >= 1
        assert registry.get_sample_value("tombstone_store_up", {"store": "cache"}) == 0
        assert committed_offsets(group, kafka) == committed_before
        retries_early = registry.get_sample_value("tombstone_retries_total", apply_retries)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        proof_reader.refresh()
        assert len(proof_reader.acks) == 1, "an ack was sent while Redis was down"
        assert committed_offsets(group, kafka) == committed_before
        retries_while_down = registry.get_sample_value("tombstone_retries_total", apply_retries)
    finally:
        _start_redis()

    expected = len(WARM_UP) + len(DELETED_SUBJECTS)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= expected, timeout_s=120,
             what=f"{expected} acks after Redis returned")
    wait_for(lambda: _caught_up(group, kafka), what="the commit after the outage")
    worker.join()

    assert retries_while_down > retries_early, "the worker stopped retrying during the outage"
    acks_per_request = Counter(ack.request_id for ack in proof_reader.acks)
    assert acks_per_request == Counter({r.request_id: 1 for r in [*warm_up, *requests]})
    for ack in proof_reader.acks:
        assert (ack.status, ack.items_affected, ack.remaining) == (AckStatus.DELETED, len(KEY_NAMES), 0)
    assert redis_client.exists(*_keys(redis_namespace, DELETED_SUBJECTS)) == 0, "deletes were lost"
    assert redis_client.exists(*_keys(redis_namespace, KEPT_SUBJECTS)) == len(KEPT_SUBJECTS) * len(KEY_NAMES)
    assert registry.get_sample_value("tombstone_partitions_paused", {"store": "cache"}) == 0
    assert registry.get_sample_value("tombstone_store_up", {"store": "cache"}) == 1
