"""A lagging worker whose unread request is compacted away by a newer one for the same key.

The requests topic gets one partition and settings that make the cleaner run within
seconds: ``segment.ms=1000``, ``min.compaction.lag.ms=0``, ``min.cleanable.dirty.ratio=0.01``
and ``delete.retention.ms=1000`` (the broker already sets ``log.cleaner.backoff.ms=500``).
"""

from __future__ import annotations

import time
from datetime import timedelta

from tombstone.inventory import load_inventory
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.ledger import Ledger
from tombstone.serde import RequestSerde

from tests.faults.harness import Context, now_utc, wait_until
from tests.faults.oracle import read_acks
from tests.faults.scenarios.common import start_ready
from tombstone.stores.base import cutoff_ms

TOPIC_CONFIG = {
    "segment.ms": "1000",
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000",
}


def _request_ids_on_topic(ctx: Context) -> set[str]:
    reader = TopicReader(ctx.kafka(), [ctx.kafka().requests_topic], client_id="fault-oracle")
    serde = RequestSerde()
    try:
        return {serde.deserialize(m.value()).request_id for m in reader.read_new(60) if m.value() is not None}
    finally:
        reader.close()


def superseded_while_lagging(ctx: Context) -> None:
    subject = ctx.subjects(1)[0]
    others = ctx.subjects(4)
    ctx.seed([subject, *others])
    ctx.seed(ctx.subjects(3, "b"))
    ctx.request(others[:2])
    worker = start_ready(ctx)
    ctx.wait_settled()
    worker.stop()

    # The worker is down. Request A, then data written after A's cut-off, then request B.
    first = ctx.request([subject], cutoff_at=now_utc() - timedelta(seconds=60))[0]
    ctx.seed([subject], per_subject=1, written_at_ms=cutoff_ms(first) + 1000)
    second = ctx.request([subject])[0]
    ctx.superseded.add(first.request_id)
    ledger = Ledger(load_inventory(ctx.inventory_path), ctx.kafka())
    try:
        ledger.refresh(60)
        # A record appended after segment.ms rolls the segment, so the cleaner may compact A away.
        time.sleep(1.5)
        ctx.request(others[2:3])
        compacted = wait_until(lambda: first.request_id not in _request_ids_on_topic(ctx), 120,
                               "the cleaner to remove request A", interval_s=1.0)
        ctx.expect("request A compacted away before the worker read it", compacted)

        ctx.start_worker()
        ctx.wait_settled()
        acked = {a.request_id for a in read_acks(ctx.kafka())}
        ctx.expect("worker never saw request A", first.request_id not in acked)
        ctx.expect("worker proved request B", second.request_id in acked)
        ledger.refresh(60)
        view = ledger.state.view(first.request_id)
        ctx.expect("ledger closes A as superseded by B",
                   view is not None and view.complete and view.superseded_by == second.request_id,
                   f"complete={view.complete if view else None}, superseded_by matches="
                   f"{view.superseded_by == second.request_id if view else None}")
    finally:
        ledger.close()
