"""The broker killed, stopped cleanly, or frozen while a worker works through a backlog.

The worker takes two requests per batch, so the backlog of 600 takes many batches and the
fault lands in the middle of the run. The broker is a single node (replication factor 1),
so these scenarios test the clients' retries, not Kafka's replication.
"""

from __future__ import annotations

import time

from tests.faults.harness import Context, ScenarioFailure
from tests.faults.scenarios.common import expect_survived, seed_and_request, start_ready

BACKLOG = 600
BATCH = 2


def _broker(ctx: Context):
    if ctx.suite.broker is None:
        raise ScenarioFailure("This scenario needs the suite's own broker; it cannot run against "
                              "KAFKA_BOOTSTRAP_SERVERS.")
    return ctx.suite.broker


def _start_backlog(ctx: Context) -> tuple[list, object]:
    requests = seed_and_request(ctx, BACKLOG, per_subject=1)
    worker = start_ready(ctx, batch_size=BATCH)
    if not ctx.wait_acks(10, timeout_s=60):
        raise ScenarioFailure("The worker sent no acks within 60 s, before any fault")
    return requests, worker


def _expect_mid_run(ctx: Context, acks_at_fault: int) -> None:
    ctx.expect("fault hit in the middle of the backlog", acks_at_fault < BACKLOG,
               f"{acks_at_fault} acks of {BACKLOG} requests when the fault began")


def broker_sigkill_restart(ctx: Context) -> None:
    broker = _broker(ctx)
    _, worker = _start_backlog(ctx)
    acks = ctx.ack_count()
    broker.kill()
    time.sleep(5)
    broker.restart()
    _expect_mid_run(ctx, acks)
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)


def broker_sigterm_restart(ctx: Context) -> None:
    broker = _broker(ctx)
    _, worker = _start_backlog(ctx)
    acks = ctx.ack_count()
    broker.terminate()
    time.sleep(3)
    broker.restart()
    _expect_mid_run(ctx, acks)
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)


def broker_sigstop_pause(ctx: Context) -> None:
    """SIGSTOP for 20 s: the broker keeps its sockets open but sends no responses, like a long GC pause."""
    broker = _broker(ctx)
    _, worker = _start_backlog(ctx)
    acks = ctx.ack_count()
    broker.pause()
    try:
        time.sleep(20)
    finally:
        broker.resume()
    _expect_mid_run(ctx, acks)
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)
