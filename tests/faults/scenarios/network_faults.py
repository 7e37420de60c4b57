"""Network faults between the worker and the broker, injected by the fault proxy.

Workers reach the broker only through the FAULTY listener, whose advertised address is
the proxy, so every connection they open is subject to the fault. The suite's producer
and oracle use the direct listener and see no fault.
"""

from __future__ import annotations

import time

from tests.faults.harness import Context, ScenarioFailure
from tests.faults.proxy import FaultProxy
from tests.faults.scenarios.common import Repeater, expect_survived, seed_and_request, start_ready

BACKLOG = 400
BATCH = 2
# librdkafka's default session.timeout.ms, which the worker does not change.
SESSION_TIMEOUT_S = 45.0


def _proxy(ctx: Context) -> FaultProxy:
    if ctx.suite.broker is None:
        raise ScenarioFailure("This scenario needs the fault proxy in front of the suite's own broker.")
    return ctx.suite.broker.proxy


def _start_backlog(ctx: Context, **options: object):
    seed_and_request(ctx, BACKLOG, per_subject=1)
    worker = start_ready(ctx, batch_size=BATCH, **options)
    if not ctx.wait_acks(10, timeout_s=60):
        raise ScenarioFailure("The worker sent no acks within 60 s, before any fault")
    return worker


def _expect_mid_run(ctx: Context, acks_at_fault: int) -> None:
    ctx.expect("fault hit in the middle of the backlog", acks_at_fault < BACKLOG,
               f"{acks_at_fault} acks of {BACKLOG} requests when the fault began")


def latency_spike_during_acks(ctx: Context) -> None:
    """0.7 to 1 s each way for 15 s, while the worker waits at most 1 s for ack confirmations.

    A produce round trip then takes longer than the worker's wait, so ack steps time out and
    are retried, which writes some acks twice. The latency stays below what would make the
    worker's 10 s read of the legal-holds topic time out.
    """
    proxy = _proxy(ctx)
    worker = _start_backlog(ctx, ack_timeout_s=1.0)
    acks = ctx.ack_count()
    retries_before = worker.metric("tombstone_retries_total", {"step": "ack"})
    proxy.set_latency(0.7, jitter_s=0.3)
    try:
        time.sleep(15)
        retries = worker.metric("tombstone_retries_total", {"step": "ack"}) - retries_before
    finally:
        proxy.clear()
    _expect_mid_run(ctx, acks)
    ctx.expect("ack confirmations timed out during the spike", retries > 0, f"{retries:.0f} ack retries")
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)


def blackhole_then_recover(ctx: Context, seconds: float = 20.0) -> None:
    """Hold all traffic for ``seconds``, shorter than the 45 s session timeout, then heal."""
    proxy = _proxy(ctx)
    worker = _start_backlog(ctx)
    acks = ctx.ack_count()
    proxy.blackhole()
    try:
        time.sleep(seconds)
        during = ctx.ack_count()
    finally:
        proxy.heal()
    _expect_mid_run(ctx, acks)
    # Acks already on their way may land at the start of the blackhole, none after.
    ctx.note(f"acks: {acks} before the blackhole, {during} at its end")
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)
    if seconds > SESSION_TIMEOUT_S:
        log = worker.log()
        evicted = "session timed out" in log or "UNKNOWN_MEMBER_ID" in log
        ctx.expect("the group evicted the worker and it rejoined", evicted,
                   "" if evicted else "the worker log shows no session timeout and no unknown-member error")


def blackhole_past_session_timeout(ctx: Context) -> None:
    """Hold all traffic for 55 s: the group coordinator evicts the worker, which must rejoin and replay."""
    blackhole_then_recover(ctx, seconds=55.0)


def reset_mid_produce(ctx: Context) -> None:
    """Reset every connection with a TCP RST each second for 12 s while acks are produced."""
    proxy = _proxy(ctx)
    worker = _start_backlog(ctx)
    acks = ctx.ack_count()
    with Repeater(proxy.reset_all, 1.0) as resets:
        time.sleep(12)
    _expect_mid_run(ctx, acks)
    ctx.expect("connections were reset", resets.calls >= 10 and proxy.stats().resets > 0,
               f"{resets.calls} reset rounds, {proxy.stats().resets} connections reset")
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)


def close_after_bytes(ctx: Context) -> None:
    """For 12 s every connection is cut after 2 KiB, in the middle of a Kafka frame."""
    proxy = _proxy(ctx)
    worker = _start_backlog(ctx)
    acks = ctx.ack_count()
    before = proxy.stats().closed_after_bytes
    proxy.close_after_bytes(2048)
    proxy.reset_all()
    try:
        time.sleep(12)
    finally:
        proxy.clear()
    _expect_mid_run(ctx, acks)
    cut = proxy.stats().closed_after_bytes - before
    ctx.expect("connections were cut mid-stream", cut > 0, f"{cut} connections cut")
    ctx.wait_settled(timeout_s=240)
    expect_survived(ctx, worker)
