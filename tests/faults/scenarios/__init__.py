"""The fault scenarios, in the order the suite runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.harness import Context
from tests.faults.scenarios import (
    bad_input,
    broker_faults,
    compaction,
    consumer_group,
    crash_points,
    network_faults,
    store_outages,
)
from tests.faults.stores import PostgresUnderTest, RedisUnderTest, SqliteUnderTest, StoreUnderTest


def sqlite(directory: Path) -> StoreUnderTest:
    return SqliteUnderTest(directory)


def sqlite_short_busy_timeout(directory: Path) -> StoreUnderTest:
    # A short busy timeout turns a held lock into quick apply retries instead of one 30 s wait.
    return SqliteUnderTest(directory, busy_timeout_s=0.2)


def postgres(directory: Path) -> StoreUnderTest:
    return PostgresUnderTest()


def redis_cache(directory: Path) -> StoreUnderTest:
    return RedisUnderTest()


@dataclass(frozen=True)
class ScenarioDef:
    id: str
    summary: str
    run: Callable[[Context], None]
    store: Callable[[Path], StoreUnderTest] = sqlite
    # Needs the suite's own broker and proxy: it kills, pauses or cuts off the broker.
    needs_fault_broker: bool = False
    # Part of the quick subset that `make test` runs.
    smoke: bool = False
    context: dict[str, object] = field(default_factory=dict)


SCENARIOS: list[ScenarioDef] = [
    # A. Crash points in the worker (SIGKILL, then restart).
    ScenarioDef("crash_after_dead_letter", "killed after poison is dead-lettered, before apply",
                crash_points.crash_at("after_dead_letter")),
    ScenarioDef("crash_after_apply", "killed after the store delete, before any ack",
                crash_points.crash_at("after_apply")),
    ScenarioDef("crash_after_ack", "killed after acks are confirmed, before the commit",
                crash_points.crash_at("after_ack")),
    ScenarioDef("crash_before_commit", "killed right before the offset commit",
                crash_points.crash_at("before_commit")),
    ScenarioDef("crash_after_commit", "killed right after the offset commit",
                crash_points.crash_at("after_commit")),
    ScenarioDef("crash_in_sqlite_transaction", "killed while a 3000-request batch holds the SQLite transaction",
                crash_points.crash_in_sqlite_transaction),
    ScenarioDef("crash_after_apply_postgres", "PostgreSQL store killed after apply, before any ack",
                crash_points.crash_at("after_apply"), store=postgres),
    # B. Broker.
    ScenarioDef("broker_sigkill_restart", "broker SIGKILLed mid-backlog, restarted 5 s later",
                broker_faults.broker_sigkill_restart, needs_fault_broker=True),
    ScenarioDef("broker_sigterm_restart", "broker shut down cleanly mid-backlog, restarted",
                broker_faults.broker_sigterm_restart, needs_fault_broker=True),
    ScenarioDef("broker_sigstop_20s", "broker frozen with SIGSTOP for 20 s mid-backlog",
                broker_faults.broker_sigstop_pause, needs_fault_broker=True),
    # B. Network, through the fault proxy.
    ScenarioDef("net_latency_spike_during_acks", "0.7-1 s latency each way for 15 s, ack timeout 1 s",
                network_faults.latency_spike_during_acks, needs_fault_broker=True),
    ScenarioDef("net_blackhole_20s", "all worker traffic held for 20 s, then delivered",
                network_faults.blackhole_then_recover, needs_fault_broker=True),
    ScenarioDef("net_blackhole_past_session_timeout", "all worker traffic held for 55 s (session timeout 45 s)",
                network_faults.blackhole_past_session_timeout, needs_fault_broker=True),
    ScenarioDef("net_reset_mid_produce", "every connection reset each second for 12 s",
                network_faults.reset_mid_produce, needs_fault_broker=True),
    ScenarioDef("net_close_after_2KiB", "every connection cut after 2 KiB for 12 s",
                network_faults.close_after_bytes, needs_fault_broker=True),
    # C. Stores.
    ScenarioDef("postgres_outage_15s", "PostgreSQL stopped (immediate) for 15 s",
                store_outages.postgres_outage, store=postgres),
    ScenarioDef("redis_outage_15s", "Redis SHUTDOWN NOSAVE for 15 s",
                store_outages.redis_outage, store=redis_cache),
    ScenarioDef("sqlite_locked_15s", "another writer holds the SQLite write lock for 15 s",
                store_outages.sqlite_locked, store=sqlite_short_busy_timeout),
    # D. Consumer group and redelivery.
    ScenarioDef("rebalance_mid_batch", "second replica joins while the first one's batch waits",
                consumer_group.rebalance_mid_batch, store=sqlite_short_busy_timeout),
    ScenarioDef("duplicate_delivery", "every request produced three times",
                consumer_group.duplicate_delivery, smoke=True),
    ScenarioDef("full_replay_new_group", "a new consumer group replays the topic from the start",
                consumer_group.full_replay_new_group),
    ScenarioDef("stale_redelivery_after_recreation", "old requests delivered again after the subjects returned",
                consumer_group.stale_redelivery_after_recreation),
    # E. Compaction.
    ScenarioDef("compaction_superseded_while_lagging", "request compacted away by a newer one while the worker is down",
                compaction.superseded_while_lagging,
                context={"requests_partitions": 1, "requests_topic_config": compaction.TOPIC_CONFIG}),
    # F. Bad input.
    ScenarioDef("poison_random_bytes", "30 random values and 5 null values among valid requests",
                bad_input.random_bytes),
    ScenarioDef("poison_truncated_avro_every_cut", "one request cut at every byte offset",
                bad_input.truncated_avro_every_cut, smoke=True),
    ScenarioDef("poison_trailing_garbage", "valid requests followed by extra bytes",
                bad_input.trailing_garbage),
    ScenarioDef("poison_json_instead_of_avro", "requests written as JSON",
                bad_input.json_instead_of_avro),
    ScenarioDef("poison_unknown_schema_fingerprint", "valid bodies behind unknown schema fingerprints",
                bad_input.unknown_schema_fingerprint),
    ScenarioDef("poison_oversized_keys_and_values", "2 MiB value, 3000-byte key, 3000- and 257-byte subject ids",
                bad_input.oversized_keys_and_values,
                context={"requests_topic_config": {"max.message.bytes": "5000000"}}),
    ScenarioDef("poison_control_characters", "NUL, CR LF, ANSI escapes, DEL, NEL, U+2028 in subject ids",
                bad_input.control_characters_in_subject, smoke=True),
]
