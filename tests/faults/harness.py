"""What a fault scenario works with: its topics, store, requests, poison records and workers.

Every scenario gets its own topics on the suite's broker, its own directory, and one store
under test. The suite produces requests and poison records on the direct listener and
remembers each one, so that the oracle can compare what was asked with what the store
contains and what the workers claimed. Workers are separate processes that reach the
broker through the fault proxy, log at DEBUG into the scenario directory and serve
``/metrics`` on a loopback port.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tombstone.errors import TombstoneError
from tombstone.kafka.admin import ensure_topics, pipeline_topics
from tombstone.models import DeletionRequest
from tombstone.requester import Requester, new_request
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings

from tests.faults.broker import FaultBroker
from tests.faults.stores import DATA_CLASS, SUBJECT_TYPE, Item, StoreUnderTest

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PSEUDONYM_KEY = "fault-suite-key-0123456789abcdef0123"
PSEUDONYM_KEY_ID = "faults"
# Items seeded "long ago": every request made during the run covers them.
OLD_MS = 1_600_000_000_000
METRICS_LINE = re.compile(r"Serving /metrics, /healthz and /readyz on [0-9.]+:(\d+)")
ASSIGNED_LINE = re.compile(r"Assigned \S+\[\d+\]")


@dataclass
class SuiteEnv:
    """What every scenario of one run shares."""

    direct_bootstrap: str
    worker_bootstrap: str
    work_dir: Path
    canary: str
    broker: FaultBroker | None = None


@dataclass
class Poison:
    """A record that a worker must dead-letter, and where the broker wrote it."""

    label: str
    partition: int
    offset: int
    reasons: frozenset[str]


@dataclass
class Expectation:
    label: str
    ok: bool
    detail: str = ""


class ScenarioFailure(AssertionError):
    """A scenario could not reach the state it needs, such as a crash that never happened."""


def wait_until(predicate: Callable[[], bool], timeout_s: float, description: str, interval_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true. Return False after ``timeout_s`` instead of raising."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return True
        except (KafkaException, TombstoneError, OSError, RuntimeError) as exc:
            # The broker may be down on purpose; the next poll tries again.
            logger.debug("Waiting for %s: %s", description, exc)
        if time.monotonic() > deadline:
            logger.warning("Timed out after %.0f s waiting for %s", timeout_s, description)
            return False
        time.sleep(interval_s)


class WorkerProcess:
    """One ``tombstone worker`` process of the scenario's store."""

    def __init__(self, ctx: Context, label: str, spec: Path, crash_at: str | None) -> None:
        self.ctx = ctx
        self.label = label
        self.spec = spec
        self.crash_at = crash_at
        self.log_path = ctx.dir / f"{label}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.scrapes = 0

    def start(self) -> WorkerProcess:
        env = self.ctx.worker_env()
        env.pop("TOMBSTONE_FAULT_CRASH_AT", None)
        if self.crash_at:
            env["TOMBSTONE_FAULT_CRASH_AT"] = self.crash_at
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tombstone.cli", "-vv", "worker", str(self.spec)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
        logger.info("Started worker %s (pid %d%s)", self.label, self.process.pid,
                    f", crash point {self.crash_at}" if self.crash_at else "")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def assigned(self) -> bool:
        """True once the worker's log shows that it was assigned at least one partition."""
        return ASSIGNED_LINE.search(self.log()) is not None

    def metrics_port(self) -> int | None:
        match = METRICS_LINE.search(self.log())
        return int(match.group(1)) if match else None

    def scrape(self) -> str | None:
        """Fetch ``/metrics`` and keep a copy in the scenario directory for the privacy scan."""
        port = self.metrics_port()
        if port is None or not self.alive():
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode("utf-8", errors="replace")
        except OSError as exc:
            logger.warning("Cannot scrape worker %s on port %d: %s", self.label, port, exc)
            return None
        self.scrapes += 1
        (self.ctx.dir / f"{self.label}.metrics.{self.scrapes}.txt").write_text(text, encoding="utf-8")
        return text

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Scrape and return the sum of the samples of ``name`` whose labels include ``labels``."""
        text = self.scrape() or ""
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{", 1)[0] != name:
                continue
            if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
                continue
            total += float(value)
        return total

    def wait_exit(self, timeout_s: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout_s: float = 45.0) -> int | None:
        """Scrape, then SIGTERM and wait, with SIGKILL after ``timeout_s``. Return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.scrape()
        self.process.send_signal(signal.SIGTERM)
        status = self.wait_exit(timeout_s)
        if status is None:
            logger.warning("Worker %s ignored SIGTERM for %.0f s; killing it", self.label, timeout_s)
            self.kill()
            return self.process.returncode
        return status


@dataclass
class Context:
    """One scenario's run: call its methods from the scenario function."""

    id: str
    index: int
    suite: SuiteEnv
    dir: Path
    store: StoreUnderTest
    requests_partitions: int = 3
    requests_topic_config: dict[str, str] = field(default_factory=dict)
    batch_size: int = 50
    ack_timeout_s: float = 10.0
    items: list[Item] = field(default_factory=list)
    # Every request the suite produced, by id, including requests encoded without validation.
    produced: dict[str, DeletionRequest] = field(default_factory=dict)
    # Ids of the requests that the store must carry out.
    valid: set[str] = field(default_factory=set)
    # Valid requests that compaction replaced by a newer one before any worker read them.
    superseded: set[str] = field(default_factory=set)
    poison: list[Poison] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    settle_timeout_s: float = 120.0
    expect_all_proven: bool = True

    def __post_init__(self) -> None:
        tag = f"{self.id.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        self.topics = {
            "TOMBSTONE_REQUESTS_TOPIC": f"faults.{tag}.requests",
            "TOMBSTONE_PROOFS_TOPIC": f"faults.{tag}.proofs",
            "TOMBSTONE_DEAD_LETTER_TOPIC": f"faults.{tag}.dead-letters",
            "TOMBSTONE_HOLDS_TOPIC": f"faults.{tag}.holds",
        }
        self.group_id = f"faults.{tag}.group"
        self.inventory_path = self.dir / "inventory.toml"
        self._serial = 0
        self._settles = 0
        self._specs = 0
        self._requester: Requester | None = None
        self._raw_producer: Producer | None = None
        self.serde = RequestSerde()

    # Set-up

    def setup(self) -> None:
        """Write the inventory and create the scenario's topics on the direct listener."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.inventory_path.write_text(f"""
[data_classes.{DATA_CLASS}]
subject_types = ["{SUBJECT_TYPE}"]
stores = [{{ store = "{self.store.name}", action = "delete" }}]
""", encoding="utf-8")
        kafka = self.kafka()
        specs = []
        for spec in pipeline_topics(kafka, partitions=3):
            if spec.name == kafka.requests_topic:
                spec = replace(spec, partitions=self.requests_partitions,
                               config={**spec.config, **self.requests_topic_config})
            specs.append(spec)
        ensure_topics(AdminClient(kafka.client_config()), specs)

    def kafka(self) -> KafkaSettings:
        """Settings of the suite's own clients: the direct listener, never the proxy."""
        return KafkaSettings(
            bootstrap_servers=self.suite.direct_bootstrap,
            requests_topic=self.topics["TOMBSTONE_REQUESTS_TOPIC"],
            proofs_topic=self.topics["TOMBSTONE_PROOFS_TOPIC"],
            dead_letter_topic=self.topics["TOMBSTONE_DEAD_LETTER_TOPIC"],
            holds_topic=self.topics["TOMBSTONE_HOLDS_TOPIC"],
        )

    def base_env(self, bootstrap: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.topics)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOMBSTONE_BOOTSTRAP_SERVERS": bootstrap,
            "TOMBSTONE_INVENTORY": str(self.inventory_path),
            "TOMBSTONE_PSEUDONYM_KEY": PSEUDONYM_KEY,
            "TOMBSTONE_PSEUDONYM_KEY_ID": PSEUDONYM_KEY_ID,
            "TOMBSTONE_DATA_DIR": str(self.dir),
            "TOMBSTONE_PG_PASSWORD": os.environ.get("TOMBSTONE_PG_PASSWORD", "tombstone"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")])),
        })
        return env

    def worker_env(self) -> dict[str, str]:
        return self.base_env(self.suite.worker_bootstrap)

    # Subjects and items

    def subjects(self, count: int, label: str = "s") -> list[str]:
        """New subject ids that start with the run's canary, so a privacy scan can find them."""
        ids = []
        for _ in range(count):
            self._serial += 1
            ids.append(f"{self.suite.canary}-{self.index:02d}{label}-{self._serial:05d}")
        return ids

    def seed(self, subject_ids: Iterable[str], per_subject: int = 2, written_at_ms: int = OLD_MS) -> list[Item]:
        items = [Item(sid, f"{sid}#{written_at_ms}#{n}", written_at_ms)
                 for sid in subject_ids for n in range(per_subject)]
        self.store.seed(items)
        self.items.extend(items)
        return items

    # Requests and raw records, always on the direct listener

    @property
    def requester(self) -> Requester:
        if self._requester is None:
            self._requester = Requester(self.kafka(), client_id="fault-suite")
        return self._requester

    def build_requests(self, subject_ids: Iterable[str], cutoff_at: datetime | None = None) -> list[DeletionRequest]:
        return [new_request(f"{SUBJECT_TYPE}:{sid}", DATA_CLASS, "user_request", "fault-suite", cutoff_at=cutoff_at)
                for sid in subject_ids]

    def request(self, subject_ids: Iterable[str], cutoff_at: datetime | None = None,
                valid: bool = True) -> list[DeletionRequest]:
        """Produce one deletion request per subject and wait until the broker confirmed them."""
        requests = self.build_requests(subject_ids, cutoff_at)
        self.submit(requests, valid)
        return requests

    def submit(self, requests: list[DeletionRequest], valid: bool = True) -> None:
        for request in requests:
            self.produced[request.request_id] = request
            if valid:
                self.valid.add(request.request_id)
        self.requester.submit(requests)

    @property
    def raw_producer(self) -> Producer:
        if self._raw_producer is None:
            self._raw_producer = Producer({
                **self.kafka().client_config(), "client.id": "fault-suite-raw", "enable.idempotence": True,
                "acks": "all", "partitioner": "murmur2_random", "message.max.bytes": 10_000_000,
                "linger.ms": 5})
        return self._raw_producer

    def produce_raw(self, records: list[tuple[str, bytes | None, bytes | None, frozenset[str]]],
                    headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> list[Poison]:
        """Produce (label, key, value, reasons) records and remember where each landed.

        An empty ``reasons`` marks a record that must not be dead-lettered, such as a null
        value. ``partition`` overrides the key's partition for every record.
        """
        reports: list[Any] = [None] * len(records)

        def report(index: int) -> Callable[[Any, Any], None]:
            def on_delivery(error: Any, message: Any) -> None:
                reports[index] = (error, message.partition() if error is None else -1,
                                  message.offset() if error is None else -1)
            return on_delivery

        for index, (_, key, value, _) in enumerate(records):
            placement = {} if partition is None else {"partition": partition}
            self.raw_producer.produce(self.kafka().requests_topic, key=key, value=value, headers=headers,
                                      on_delivery=report(index), **placement)
            self.raw_producer.poll(0)
        left = self.raw_producer.flush(60)
        if left:
            raise ScenarioFailure(f"{left} raw records were not confirmed by the broker within 60 s")
        positions = []
        for (label, _, _, reasons), outcome in zip(records, reports, strict=True):
            error, partition, offset = outcome
            if error is not None:
                raise ScenarioFailure(f"The broker rejected raw record {label}: {error}")
            poison = Poison(label, partition, offset, reasons)
            if reasons:
                self.poison.append(poison)
            positions.append(poison)
        return positions

    def encode_raw(self, request: DeletionRequest, **changes: Any) -> bytes:
        """Encode a request with field values that the model would reject, bypassing validation."""
        record = request.model_dump(mode="python")
        record.update(changes)
        return self.serde.codec.encode(record)

    # Workers

    def write_spec(self, group_id: str | None = None, batch_size: int | None = None,
                   ack_timeout_s: float | None = None) -> Path:
        group = group_id or self.group_id
        if group not in self.groups:
            self.groups.append(group)
        self._specs += 1
        spec = self.dir / f"spec-{self._specs}.toml"
        spec.write_text(f"""
name = "{self.store.name}"
data_classes = ["{DATA_CLASS}"]
group_id = "{group}"
batch_size = {batch_size or self.batch_size}
poll_timeout_s = 0.2
ack_timeout_s = {ack_timeout_s or self.ack_timeout_s}
metrics_port = 0
metrics_host = "127.0.0.1"
state_dir = "{self.dir / 'state'}"

[retry]
initial_backoff_s = 0.2
max_backoff_s = 2.0
jitter_s = 0.2
{self.store.spec_store_section()}""", encoding="utf-8")
        return spec

    def start_worker(self, crash_at: str | None = None, group_id: str | None = None,
                     batch_size: int | None = None, ack_timeout_s: float | None = None) -> WorkerProcess:
        spec = self.write_spec(group_id, batch_size, ack_timeout_s)
        worker = WorkerProcess(self, f"worker-{len(self.workers) + 1}", spec, crash_at)
        self.workers.append(worker.start())
        return worker

    def wait_ready(self, worker: WorkerProcess, timeout_s: float = 60.0) -> None:
        """Wait until the worker joined its group and owns partitions."""
        if not wait_until(lambda: worker.assigned() and worker.metrics_port() is not None,
                          timeout_s, f"worker {worker.label} to join its group"):
            raise ScenarioFailure(f"Worker {worker.label} did not join its group within {timeout_s:.0f} s "
                                  f"(alive: {worker.alive()})")

    def stop_workers(self) -> None:
        for worker in self.workers:
            status = worker.stop()
            if worker.crash_at is None and status not in (0, None) and status != -signal.SIGKILL:
                self.expect(f"{worker.label} exits cleanly", False, f"exit status {status}")

    # Offsets and acks, read on the direct listener

    def _consumer(self, group: str) -> Consumer:
        return Consumer({**self.kafka().client_config(), "group.id": group, "enable.auto.commit": False})

    def committed_offsets(self, group: str | None = None) -> dict[int, int]:
        consumer = self._consumer(group or self.group_id)
        try:
            topic = self.kafka().requests_topic
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
            return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        finally:
            consumer.close()

    def end_offsets(self) -> dict[int, int]:
        consumer = self._consumer(f"faults-end-offsets-{uuid.uuid4().hex[:6]}")
        try:
            topic = self.kafka().requests_topic
            metadata = consumer.list_topics(topic, timeout=10)
            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in metadata.topics[topic].partitions}
        finally:
            consumer.close()

    def caught_up(self, group: str | None = None) -> bool:
        committed = self.committed_offsets(group)
        return all(committed.get(p) == end for p, end in self.end_offsets().items() if end > 0)

    def wait_settled(self, group: str | None = None, timeout_s: float | None = None) -> bool:
        """Wait until the group committed the end of every partition, and record the result as an expectation."""
        group = group or self.group_id
        timeout = timeout_s or self.settle_timeout_s
        ok = wait_until(lambda: self.caught_up(group), timeout, f"group {group} to commit every record",
                        interval_s=0.5)
        self._settles += 1
        number = self.groups.index(group) + 1 if group in self.groups else 1
        self.expect(f"consumer group {number} caught up (wait {self._settles})", ok,
                    "" if ok else f"not caught up after {timeout:.0f} s: committed {self.committed_offsets(group)}, "
                                  f"end {self.end_offsets()}")
        return ok

    def ack_count(self) -> int:
        from tests.faults.oracle import read_acks

        return len(read_acks(self.kafka()))

    def wait_acks(self, count: int, timeout_s: float = 60.0) -> bool:
        return wait_until(lambda: self.ack_count() >= count, timeout_s, f"{count} acks", interval_s=0.3)

    # Results

    def expect(self, label: str, ok: bool, detail: str = "") -> bool:
        self.expectations.append(Expectation(label, bool(ok), detail))
        if not ok:
            logger.warning("Scenario %s: expectation failed: %s %s", self.id, label, detail)
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.kill()
        if self._requester is not None:
            self._requester.close()
        if self._raw_producer is not None:
            self._raw_producer.flush(10)


def now_utc() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
