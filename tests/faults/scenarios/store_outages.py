"""Store outages while requests arrive: PostgreSQL and Redis stopped, SQLite locked.

The PostgreSQL and Redis scenarios stop the project's own servers from ``make services``
(the Debian cluster ``tombstone`` on port 55432, Redis on 56379), so nothing else may use
them while the suite runs. Each scenario starts its server again in a ``finally`` block.
"""

from __future__ import annotations

import os
import subprocess
import time
from urllib.parse import urlsplit

import psycopg
import redis

from tests.faults.harness import REPO_ROOT, Context, ScenarioFailure, wait_until
from tests.faults.scenarios.common import expect_survived, start_ready
from tests.faults.stores import PG_DSN, REDIS_URL, SqliteUnderTest

PG_VERSION = os.environ.get("TOMBSTONE_PG_VERSION", "15")
PG_CLUSTER = "tombstone"
OUTAGE_S = 15.0


def _outage(ctx: Context, stop, start) -> None:
    """Make requests before and during an outage, and expect no ack and no commit during it."""
    first = ctx.subjects(20)
    during = ctx.subjects(60)
    ctx.seed(first + during)
    ctx.seed(ctx.subjects(5, "b"))
    ctx.request(first)
    worker = start_ready(ctx)
    if not (ctx.wait_acks(len(first), timeout_s=60) and ctx.wait_settled(timeout_s=60)):
        raise ScenarioFailure("The worker did not finish the requests made before the outage")
    committed = ctx.committed_offsets()
    try:
        stop()
        ctx.request(during)
        time.sleep(OUTAGE_S)
        acks_during = ctx.ack_count()
        committed_during = ctx.committed_offsets()
    finally:
        start()
    ctx.expect("no ack while the store is down", acks_during == len(first),
               f"{acks_during - len(first)} acks for requests made during the outage")
    ctx.expect("no commit while the store is down", committed_during == committed,
               f"committed {committed_during}, before the outage {committed}")
    ctx.wait_settled(timeout_s=180)
    expect_survived(ctx, worker)


def _pg_answers() -> bool:
    try:
        psycopg.connect(PG_DSN, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def _stop_postgres() -> None:
    subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop", "-m", "immediate"], check=True, timeout=60)


def _start_postgres() -> None:
    subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"], check=False, timeout=120)
    if not wait_until(_pg_answers, 60, "PostgreSQL to accept connections", interval_s=0.5):
        raise ScenarioFailure("PostgreSQL did not come back within 60 s; run `make services`.")


def postgres_outage(ctx: Context) -> None:
    """``pg_ctlcluster ... stop -m immediate`` for 15 s, as a crash of the server would."""
    _outage(ctx, _stop_postgres, _start_postgres)


def _redis_answers() -> bool:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _stop_redis() -> None:
    # redis-cli reports the closed connection after SHUTDOWN, so its exit status means nothing.
    port = urlsplit(REDIS_URL).port or 6379
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True, timeout=30, check=False)
    if not wait_until(lambda: not _redis_answers(), 30, "Redis to stop"):
        raise ScenarioFailure("Redis did not stop within 30 s")


def _start_redis() -> None:
    result = subprocess.run(["bash", "deploy/local/services.sh", "start"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    if result.returncode != 0 or not wait_until(_redis_answers, 60, "Redis to answer"):
        raise ScenarioFailure(f"deploy/local/services.sh start failed (exit {result.returncode}), so Redis is "
                              "still down; run `make services`.")


def redis_outage(ctx: Context) -> None:
    """``SHUTDOWN NOSAVE`` for 15 s. The server's append-only file keeps the values across it."""
    _outage(ctx, _stop_redis, _start_redis)


def sqlite_locked(ctx: Context) -> None:
    """Another writer holds SQLite's write lock for 15 s."""
    store = ctx.store
    if not isinstance(store, SqliteUnderTest):
        raise ScenarioFailure("This scenario needs the SQLite store.")
    holder: list = []
    _outage(ctx, lambda: holder.append(store.lock()), lambda: _release(holder))


def _release(holder: list) -> None:
    for locker in holder:
        locker.execute("ROLLBACK")
        locker.close()
