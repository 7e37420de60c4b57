"""Worker killed with SIGKILL at each step of a batch, then restarted.

The named crash points come from ``TOMBSTONE_FAULT_CRASH_AT`` (``tombstone.faults``). The
worker has no crash point inside the store transaction, so that case is made from outside:
the suite watches SQLite's write lock and kills the worker while it holds it.
"""

from __future__ import annotations

import os
import sqlite3

from tests.faults.harness import Context, ScenarioFailure, wait_until
from tests.faults.scenarios.common import expect_crashed, seed_and_request, uncommitted
from tests.faults.stores import SqliteUnderTest


def _poison_first(ctx: Context) -> None:
    """Random bytes at the start of every partition, so the first batch always has poison."""
    for partition in range(ctx.requests_partitions):
        ctx.produce_raw([(f"random-{partition}", b"poison", b"\x00\xff" + os.urandom(40), frozenset({"bad_magic"}))],
                        partition=partition)


def crash_at(point: str):
    """Scenario: kill at ``point`` during the first batch, check the state it left, restart.

    Every batch contains requests, and with ``after_dead_letter`` also poison, so the first
    batch reaches the crash point and nothing before it was acked or committed.
    """

    def run(ctx: Context) -> None:
        if point == "after_dead_letter":
            _poison_first(ctx)
        seed_and_request(ctx, 40)
        crashed = ctx.start_worker(crash_at=point)
        expect_crashed(ctx, crashed, point)

        acks = ctx.ack_count()
        if point in ("after_dead_letter", "after_apply"):
            ctx.expect("no ack before the crash", acks == 0, f"{acks} acks")
        else:
            ctx.expect("acks confirmed before the crash", acks > 0, f"{acks} acks")
        if point == "after_commit":
            ctx.expect("offsets committed before the crash", not uncommitted(ctx), str(ctx.committed_offsets()))
        else:
            ctx.expect("nothing committed before the crash", uncommitted(ctx), str(ctx.committed_offsets()))

        ctx.start_worker()
        ctx.wait_settled()

    return run


def crash_in_sqlite_transaction(ctx: Context) -> None:
    """SIGKILL while a batch of thousands of requests is inside SQLite's write transaction."""
    store = ctx.store
    if not isinstance(store, SqliteUnderTest):
        raise ScenarioFailure("This scenario needs the SQLite store.")
    requests = seed_and_request(ctx, 3000, per_subject=2, bystanders=20)
    worker = ctx.start_worker(batch_size=5000)
    # Opening the store also writes (receipt table, WAL mode), so watch only after the worker joined.
    if not wait_until(worker.assigned, 60, "the worker to join its group", interval_s=0.01):
        raise ScenarioFailure("The worker did not join its group within 60 s")
    caught = wait_until(store.write_locked_by_other, 60, "the worker to hold SQLite's write lock", interval_s=0.002)
    worker.kill()
    ctx.expect("worker killed while it held the write lock", caught)

    receipts = _receipt_ids(store)
    present = store.present(ctx.items)
    torn = []
    for request in requests:
        items = [i.item_id for i in ctx.items if i.subject_id == request.subject_id]
        all_gone = not any(item in present for item in items)
        all_present = all(item in present for item in items)
        if (request.request_id in receipts and not all_gone) or (request.request_id not in receipts and not all_present):
            torn.append(request.request_id)
    ctx.expect("store state atomic after the kill", not torn,
               f"{len(torn)} requests have a receipt without their delete, or the reverse" if torn else "")
    ctx.note(f"{len(receipts)} of {len(requests)} receipts were committed when the worker was killed")
    ctx.expect("nothing committed before the crash", uncommitted(ctx), str(ctx.committed_offsets()))

    ctx.start_worker(batch_size=5000)
    ctx.wait_settled(timeout_s=240)


def _receipt_ids(store: SqliteUnderTest) -> set[str]:
    db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in db.execute("SELECT request_id FROM tombstone_receipts")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()
