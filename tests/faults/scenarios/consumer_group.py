"""Redelivery: a rebalance mid-batch, duplicates, a full replay, and a replay after re-creation."""

from __future__ import annotations

import time
import uuid

from tombstone.models import AckStatus

from tests.faults.harness import Context, ScenarioFailure, wait_until
from tests.faults.oracle import read_acks
from tests.faults.scenarios.common import expect_survived, seed_and_request, start_ready
from tests.faults.stores import SqliteUnderTest


def rebalance_mid_batch(ctx: Context) -> None:
    """A second replica joins while the first one's batch waits on a locked store."""
    store = ctx.store
    if not isinstance(store, SqliteUnderTest):
        raise ScenarioFailure("This scenario needs the SQLite store.")
    subjects = ctx.subjects(300)
    ctx.seed(subjects)
    ctx.seed(ctx.subjects(5, "b"))
    first = start_ready(ctx, batch_size=500)
    locker = store.lock()
    try:
        ctx.request(subjects)
        in_batch = wait_until(lambda: "Step apply failed" in first.log(), 60, "the first worker to retry its apply")
        ctx.expect("first worker holds a batch it cannot apply yet", in_batch)
        second = ctx.start_worker(batch_size=500)
        moved = wait_until(lambda: second.assigned() and "Revoked " in first.log(), 90,
                           "a partition to move to the second worker")
        ctx.expect("a partition moved to the second worker mid-batch", moved)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    ctx.wait_settled(timeout_s=180)
    expect_survived(ctx, first, second)


def duplicate_delivery(ctx: Context) -> None:
    """Every request is produced three times: twice before the worker reads it, once after."""
    requests = seed_and_request(ctx, 30)
    copies = [(f"copy-{r.request_id}", r.kafka_key.encode(), ctx.serde.serialize(r), frozenset()) for r in requests]
    ctx.produce_raw(copies)
    start_ready(ctx)
    ctx.wait_settled()
    ctx.produce_raw(copies)
    ctx.wait_settled()
    acks = [a for a in read_acks(ctx.kafka()) if a.store == ctx.store.name]
    wrong = [a for a in acks if (a.status, a.items_affected) != (AckStatus.DELETED, 2)]
    ctx.expect("every ack repeats the first outcome (DELETED, 2 items)", not wrong,
               f"{len(wrong)} of {len(acks)} acks differ, e.g. {wrong[0].status.value}/{wrong[0].items_affected}"
               if wrong else "")


def full_replay_new_group(ctx: Context) -> None:
    """After everything is proven, a worker under a new group id reads the topic from the start."""
    requests = seed_and_request(ctx, 40)
    first = start_ready(ctx)
    ctx.wait_settled()
    first.stop()
    before = ctx.ack_count()
    replay_group = f"{ctx.group_id}.replay-{uuid.uuid4().hex[:6]}"
    ctx.start_worker(group_id=replay_group)
    ctx.wait_settled(replay_group)
    after = ctx.ack_count()
    ctx.expect("the replay proves every request again", after - before >= len(requests),
               f"{after - before} new acks for {len(requests)} requests")


def stale_redelivery_after_recreation(ctx: Context) -> None:
    """Subjects are deleted, sign up again, and then their old requests arrive again twice."""
    subjects = ctx.subjects(20)
    ctx.seed(subjects)
    ctx.seed(ctx.subjects(5, "b"))
    requests = ctx.request(subjects)
    first = start_ready(ctx)
    ctx.wait_settled()
    first.stop()

    time.sleep(0.01)
    recreated = ctx.seed(subjects, per_subject=1, written_at_ms=int(time.time() * 1000))
    ctx.produce_raw([(f"old-{r.request_id}", r.kafka_key.encode(), ctx.serde.serialize(r), frozenset())
                     for r in requests])
    ctx.start_worker()
    ctx.wait_settled()
    replay_group = f"{ctx.group_id}.replay-{uuid.uuid4().hex[:6]}"
    ctx.start_worker(group_id=replay_group)
    ctx.wait_settled(replay_group)

    present = ctx.store.present(recreated)
    ctx.expect("data written after the cut-off survives both redeliveries", len(present) == len(recreated),
               f"{len(recreated) - len(present)} of {len(recreated)} re-created items were erased")
