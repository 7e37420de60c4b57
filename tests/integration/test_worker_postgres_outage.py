"""A worker with a PostgreSQL store: a 30 s server outage (pause, retry, complete), and a
request whose subject id the column cannot hold.

The outage test stops the project's own cluster (``pg_ctlcluster ... stop -m immediate``), so it
needs the rights to do that, and other tests must not use the cluster at the same time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.integration.helpers import ProofReader, committed_offsets, end_offsets, wait_for
from tests.integration.pg_fixtures import PgAdmin, start_cluster, stop_cluster
# Fixtures, imported so that pytest finds them.
from tests.integration.pg_fixtures import pg_admin, postgres_dsn  # noqa: F401
from tombstone.models import AckStatus, DeletionRequest
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0
ROWS_PER_SUBJECT = 2


def write_postgres_spec(directory: Path, name: str, table: str, dsn: str) -> Path:
    """A PostgreSQL consumer spec whose password comes from TOMBSTONE_PG_PASSWORD."""
    params = conninfo_to_dict(dsn)
    spec = directory / f"{name}.toml"
    spec.write_text(f"""
name = "{name}"
data_classes = ["customer_profile"]
group_id = "test.{name}"
batch_size = 100
poll_timeout_s = 0.2
state_dir = "{directory / 'state'}"

[retry]
initial_backoff_s = 0.2
max_backoff_s = 2.0
jitter_s = 0.2

[store]
kind = "postgresql"
host = "{params.get('host', '127.0.0.1')}"
port = {params.get('port', 5432)}
dbname = "{params['dbname']}"
user = "{params['user']}"
password = "${{TOMBSTONE_PG_PASSWORD}}"
connect_timeout_s = 2
statement_timeout_s = 10

[[store.tables]]
table = "{table}"
data_class = "customer_profile"
subject_type = "customer"
subject_column = "customer_id"
subject_id_type = "integer"
""", encoding="utf-8")
    return spec


def submit(ids: Iterable[int | str]) -> list[DeletionRequest]:
    requester = Requester(KafkaSettings())
    try:
        return requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                                 for i in ids])
    finally:
        requester.close()


def acked(reader: ProofReader, requests: list[DeletionRequest]) -> int:
    reader.refresh()
    wanted = {r.request_id for r in requests}
    return len({a.request_id for a in reader.acks} & wanted)


def log_count(caplog: pytest.LogCaptureFixture, prefix: str) -> int:
    return sum(record.getMessage().startswith(prefix) for record in caplog.records
               if record.name in ("tombstone.worker.loop", "tombstone.kafka.member"))


def test_outage_pauses_then_completes(tmp_path: Path, pg_admin: PgAdmin, postgres_dsn: str,  # noqa: F811
                                      proof_reader: ProofReader, start_worker, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="tombstone.worker.loop")
    caplog.set_level(logging.INFO, logger="tombstone.kafka.member")  # rebalance lines
    monkeypatch.setenv("TOMBSTONE_PG_PASSWORD", conninfo_to_dict(postgres_dsn).get("password", ""))
    table = pg_admin.create_table("customer", "customer_id bigint, name text, updated_at_ms bigint")
    pg_admin.conn.cursor().executemany(
        f'INSERT INTO "{table}" VALUES (%s, %s, 1)',
        [(i, f"name {i}") for i in range(1, 41) for _ in range(ROWS_PER_SUBJECT)])
    store = pg_admin.store_name("outage")
    spec = write_postgres_spec(tmp_path, store, table, postgres_dsn)
    kafka, group = KafkaSettings(), load_spec(spec).consumer_group
    worker = start_worker(spec)
    # Consumer.assignment() called from this thread blocks while the worker thread sits in
    # consume(), so membership is read from the worker's rebalance log lines instead.
    wait_for(lambda: log_count(caplog, "Assigned") >= 1, what="the worker to join its group")
    before = submit(range(1, 6))
    wait_for(lambda: acked(proof_reader, before) == 5, what="5 acks before the outage")
    wait_for(lambda: committed_offsets(group, kafka) == end_offsets(kafka), what="the commit before the outage")
    committed_before = committed_offsets(group, kafka)
    assigned_before = log_count(caplog, "Assigned")
    registry = worker.worker.metrics.registry
    labels = {"store": store, "step": "apply"}
    retries_before = registry.get_sample_value("tombstone_retries_total", labels) or 0

    stopped_at = time.monotonic()
    try:
        stop_cluster()
        during = submit(range(6, 31))
        wait_for(lambda: (registry.get_sample_value("tombstone_retries_total", labels) or 0) >= retries_before + 2,
                 what="two retries of the apply step")
        assert registry.get_sample_value("tombstone_partitions_paused", {"store": store}) >= 1
        assert registry.get_sample_value("tombstone_store_up", {"store": store}) == 0
        while time.monotonic() - stopped_at < OUTAGE_S:
            assert committed_offsets(group, kafka) == committed_before, "offsets committed while PostgreSQL was down"
            assert log_count(caplog, "Revoked") == 0, "the worker lost its partitions during the outage"
            assert worker.thread.is_alive(), f"the worker stopped during the outage: {worker.error!r}"
            time.sleep(1)
        assert acked(proof_reader, during) == 0
        retries_down = registry.get_sample_value("tombstone_retries_total", labels)
    finally:
        start_cluster(postgres_dsn)
        pg_admin.reconnect()

    wait_for(lambda: acked(proof_reader, during) == 25, timeout_s=90, what="25 acks after the outage")
    wait_for(lambda: committed_offsets(group, kafka) == end_offsets(kafka), what="the commit after the outage")
    # Read before join(), because leaving the group at shutdown revokes the partitions.
    assigned_after, revoked_after = log_count(caplog, "Assigned"), log_count(caplog, "Revoked")
    worker.join()

    assert retries_down >= retries_before + 2
    assert assigned_after == assigned_before
    assert revoked_after == 0
    assert registry.get_sample_value("tombstone_partitions_paused", {"store": store}) == 0
    assert registry.get_sample_value("tombstone_store_up", {"store": store}) == 1
    acks = [a for a in proof_reader.acks if a.store == store]
    assert Counter(a.request_id for a in acks) == Counter(r.request_id for r in before + during)
    assert {a.status for a in acks} == {AckStatus.DELETED}
    assert {(a.items_affected, a.remaining) for a in acks} == {(ROWS_PER_SUBJECT, 0)}
    assert pg_admin.count(table, "customer_id BETWEEN 1 AND 30") == 0
    assert pg_admin.count(table, "customer_id BETWEEN 31 AND 40") == 10 * ROWS_PER_SUBJECT


def test_worker_rejects_bad_id_deletes_rest(tmp_path: Path, pg_admin: PgAdmin, postgres_dsn: str,  # noqa: F811
                                            proof_reader: ProofReader, start_worker,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMBSTONE_PG_PASSWORD", conninfo_to_dict(postgres_dsn).get("password", ""))
    table = pg_admin.create_table("customer", "customer_id bigint, name text, updated_at_ms bigint")
    pg_admin.conn.cursor().executemany(f'INSERT INTO "{table}" VALUES (%s, %s, 1)',
                                       [(i, f"name {i}") for i in range(1, 4)])
    store = pg_admin.store_name("reject")
    spec = write_postgres_spec(tmp_path, store, table, postgres_dsn)
    first, bad, second = submit(["1", "1_7", "2"])
    worker = start_worker(spec)

    wait_for(lambda: acked(proof_reader, [first, bad, second]) == 3, what="3 acks")
    worker.join()

    status = {a.request_id: (a.status, a.reason_code) for a in proof_reader.acks if a.store == store}
    assert status[first.request_id] == (AckStatus.DELETED, None)
    assert status[second.request_id] == (AckStatus.DELETED, None)
    assert status[bad.request_id] == (AckStatus.REJECTED, "subject_id_type")
    assert [d.reason for d in proof_reader.dead_letters] == ["subject_id_type"]
    assert pg_admin.count(table, "customer_id IN (1, 2)") == 0
    assert pg_admin.count(table, "customer_id = 3") == 1
