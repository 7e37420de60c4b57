"""A rebalance during a retry wait must not leave partitions paused for good.

librdkafka keeps a partition's pause flag when the partition is revoked and later assigned
back to the same consumer (confluentinc/librdkafka#1849, confluent-kafka-go#193). A worker
that pauses for a retry and resumes only its current assignment then never reads the
partitions it lost during the wait and got back later.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.helpers import ProofReader, WorkerThread, seed_customers, wait_for, write_sqlite_spec
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _submit(ids: range) -> list:
    requester = Requester(KafkaSettings())
    try:
        return requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                                 for i in ids])
    finally:
        requester.close()


def _assigned(worker: WorkerThread) -> int:
    # Calling consumer.assignment() from this thread while the worker thread is inside
    # consume() can block, so the worker's own record of its assignment is read instead.
    return len(worker.worker.assignment)


def test_partition_revoked_during_retry_resumes(
    tmp_path: Path, proof_reader: ProofReader, start_worker: Callable[[Path], WorkerThread]
) -> None:
    spec = write_sqlite_spec(tmp_path)
    spec.write_text(spec.read_text().replace('path = "', 'busy_timeout_s = 0.2\npath = "', 1))
    database = tmp_path / "operational.sqlite"
    seed_customers(database, range(1, 101))
    first = start_worker(spec)
    wait_for(lambda: _assigned(first) == 2, what="the first worker to own both partitions")

    # A held write lock makes the first worker retry with its partitions paused.
    locker = sqlite3.connect(database, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    first_wave = _submit(range(1, 21))
    registry = first.worker.metrics.registry
    wait_for(lambda: (registry.get_sample_value("tombstone_retries_total",
                                                {"store": "operational-db", "step": "apply"}) or 0) >= 1,
             what="a retry of the apply step")

    # A second replica joins during the wait and takes one partition.
    second = start_worker(spec)
    wait_for(lambda: _assigned(second) == 1 and _assigned(first) == 1, what="one partition per worker")
    locker.execute("ROLLBACK")
    locker.close()
    wait_for(lambda: proof_reader.refresh() or
             {a.request_id for a in proof_reader.acks} >= {r.request_id for r in first_wave},
             what="acks for the first wave")

    # The second replica leaves, and its partition goes back to the first worker.
    second.join()
    wait_for(lambda: _assigned(first) == 2, what="the first worker to own both partitions again")
    second_wave = _submit(range(21, 101))
    wanted = {r.request_id for r in second_wave}
    try:
        wait_for(lambda: proof_reader.refresh() or {a.request_id for a in proof_reader.acks} >= wanted,
                 timeout_s=60, what="acks for the second wave")
    except AssertionError:
        acked = wanted & {a.request_id for a in proof_reader.acks}
        paused = registry.get_sample_value("tombstone_partitions_paused", {"store": "operational-db"})
        pytest.fail(f"{len(wanted) - len(acked)} of {len(wanted)} requests were never proven after the "
                    f"rebalance; the worker reports {paused} paused partitions")
