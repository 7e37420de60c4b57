"""Measurements that run inside a benchmark child process.

Each phase takes a JSON-ready dict of parameters and returns a JSON-ready dict. A timed
window covers only the work being measured: loading stores, building input records and
joining a consumer group happen before it. Every window reports its events, wall seconds,
and the CPU seconds of this process (all its threads, librdkafka's included) and of the
broker process over the same window.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from tombstone.inventory import DataClass, Inventory, StoreEntry
from tombstone.kafka.producer import DurableProducer, producer_config
from tombstone.ledger.ledger import Ledger
from tombstone.ledger.service import LedgerMetrics
from tombstone.metrics import WorkerMetrics
from tombstone.models import DeletionRequest
from tombstone.pseudonym import Pseudonymizer
from tombstone.requester import Requester
from tombstone.serde import AckSerde, RequestSerde
from tombstone.serde.codec import HEADER_SIZE
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec
from tombstone.stores import build_store
from tombstone.stores.base import Outcome
from tombstone.worker.acks import build_ack
from tombstone.worker.loop import Worker, consumer_config

from bench import storekit
from bench.data import DATA_CLASS, SUBJECT_TYPE, DataSet
from bench.system import cpu_seconds

logger = logging.getLogger(__name__)

PSEUDONYMIZER = Pseudonymizer(b"bench-pseudonym-key-0123456789abcdef", "bench")
# The latency ledger refreshes again at once after a refresh that read records, and after
# this pause otherwise. Each refresh requests metadata and watermarks from the broker, so
# a shorter pause loads the broker and the CPUs more than it saves in latency.
IDLE_REFRESH_WAIT_S = float(os.environ.get("BENCH_LEDGER_IDLE_S", "0.005"))
Emit = Callable[[dict[str, Any]], None]


class Window:
    """Wall time and CPU time of this process and of the broker over one measurement."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.started = 0.0
        self.cpu = 0.0
        self.broker_cpu: float | None = None

    def start(self) -> Window:
        self.cpu = cpu_seconds(os.getpid()) or 0.0
        self.broker_cpu = cpu_seconds(self.broker_pid)
        self.started = time.perf_counter()
        return self

    def stop(self, events: int, **extra: Any) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        cpu = (cpu_seconds(os.getpid()) or 0.0) - self.cpu
        broker_end = cpu_seconds(self.broker_pid)
        broker = broker_end - self.broker_cpu if broker_end is not None and self.broker_cpu is not None else None
        return {
            "events": events,
            "seconds": seconds,
            "rate": events / seconds if seconds > 0 else 0.0,
            "cpu_us_per_event": 1e6 * cpu / events if events else None,
            "broker_cpu_us_per_event": 1e6 * broker / events if events and broker is not None else None,
            **extra,
        }


def kafka_settings(params: dict[str, Any]) -> KafkaSettings:
    """Kafka settings with the topics of ``params["topics"]``, or the defaults where it has none."""
    topics = {name: value for name, value in params.get("topics", {}).items()}
    names = {"requests": "requests_topic", "proofs": "proofs_topic", "dead_letters": "dead_letter_topic",
             "holds": "holds_topic"}
    return KafkaSettings(bootstrap_servers=params["bootstrap"],
                         **{names[key]: value for key, value in topics.items() if key in names})


def consumer_spec(params: dict[str, Any], name: str, group: str, store: dict[str, Any],
                  batch_size: int | None = None) -> ConsumerSpec:
    return ConsumerSpec.model_validate({
        "name": name, "data_classes": [DATA_CLASS], "group_id": group,
        "batch_size": batch_size or params["batch_size"], "poll_timeout_s": 1.0, "metrics_port": 0,
        "metrics_host": "127.0.0.1", "state_dir": os.path.join(params["workdir"], "state", name),
        "store": store,
    })


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# Producing (B1, B2)


def produce_raw(params: dict[str, Any]) -> dict[str, Any]:
    """Produce pre-encoded requests with a bare confluent-kafka Producer; flush once at the end.

    With ``params["acks_for"]`` (store names) it produces one ack per request and store
    instead, to the topic given as the requests topic. ``params["passes"]`` sends the
    records that many times in one window, because one pass is too short to time well.

    ``params["config"]`` is "durable" (the project's producer settings: acks=all,
    idempotence, linger.ms=5) or "acks1" (the same with acks=1 and no idempotence).
    """
    kafka = kafka_settings(params)
    overrides = {"acks": 1, "enable.idempotence": False} if params["config"] == "acks1" else {}
    config = producer_config(kafka, "bench-raw-producer", **overrides)
    producer = Producer(config)
    data = DataSet.from_dict(params["data"])
    keys, values = data.acks(params["acks_for"]) if params.get("acks_for") else data.encoded()
    if params.get("warm_up"):
        _warm_up(producer, kafka.requests_topic, keys[0], values[0])
    topic = kafka.requests_topic
    passes = params.get("passes", 1)
    gc.collect()
    window = Window(params["broker_pid"]).start()
    produce, poll = producer.produce, producer.poll
    for _ in range(passes):
        for index, (key, value) in enumerate(zip(keys, values, strict=True)):
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    poll(0.01)
            if index & 1023 == 0:
                poll(0)
    left = producer.flush(60)
    result = window.stop(passes * len(values), passes=passes)
    if left:
        raise RuntimeError(f"{left} records were not delivered within 60 s")
    return result


def _warm_up(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    """Fetch metadata and, for an idempotent producer, its producer id, outside the window.

    The record is the data set's first, which the measured records overwrite on the
    compacted topic.
    """
    producer.produce(topic, value, key)
    if producer.flush(30):
        raise RuntimeError(f"the warm-up record to {topic} was not delivered within 30 s")


def produce_ours(params: dict[str, Any]) -> dict[str, Any]:
    """Build DeletionRequest models, then submit them all with ``Requester`` (one confirm).

    The models have the same fields as the raw phase's records, so the bytes are identical.
    """
    kafka = kafka_settings(params)
    requester = Requester(kafka, client_id="bench-requester")
    data = DataSet.from_dict(params["data"])
    # Outside the window: topic metadata and the idempotent producer id, with one request
    # that the measured ones overwrite on the compacted topic.
    requester.submit([DeletionRequest(**data.fields(0))])
    fields = [data.fields(i) for i in range(data.count)]
    gc.collect()
    window = Window(params["broker_pid"]).start()
    requests = [DeletionRequest(**item) for item in fields]
    requester.submit(requests)
    result = window.stop(len(requests))
    requester.close()
    return result


# Consuming (B3, B6, B10)


def consume_raw(params: dict[str, Any]) -> dict[str, Any]:
    """Consume ``count`` records with the worker's consumer settings and a bare loop.

    The window opens when the group assigns the partitions, as the worker's does, so both
    include fetching from the broker but not joining the group.
    """
    kafka = kafka_settings(params)
    spec = consumer_spec(params, "bench-raw", params["group"], {"kind": "null"})
    consumer = Consumer(consumer_config(spec, kafka, "bench-raw-consumer"))
    window = Window(params["broker_pid"])
    consumer.subscribe([kafka.requests_topic], on_assign=lambda c, partitions: window.start())
    target = params["count"]
    seen = 0
    deadline = time.monotonic() + 120
    while seen < target and time.monotonic() < deadline:
        # Never ask for more than remain, or consume() waits out its timeout for the tail.
        messages = consumer.consume(min(params["batch_size"], target - seen), 1.0)
        seen += sum(1 for m in messages if m.error() is None)
    result = window.stop(seen)
    consumer.close()
    _check_count(seen, target, "raw consume")
    return result


def commit_per_message(params: dict[str, Any]) -> dict[str, Any]:
    """Consume and commit every record synchronously, as a worker without batching would."""
    kafka = kafka_settings(params)
    spec = consumer_spec(params, "bench-raw", params["group"], {"kind": "null"})
    consumer = Consumer(consumer_config(spec, kafka, "bench-commit-consumer"))
    consumer.subscribe([kafka.requests_topic])
    target = params["count"]
    seen = 0
    window: Window | None = None
    deadline = time.monotonic() + 120
    while seen < target and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error() is not None:
            continue
        if window is None:
            window = Window(params["broker_pid"]).start()
        consumer.commit(message=message, asynchronous=False)
        seen += 1
    result = window.stop(seen) if window else {"events": 0}
    consumer.close()
    _check_count(seen, target, "per-message commit")
    return result


def _check_count(seen: int, target: int, what: str) -> None:
    if seen < target:
        raise RuntimeError(f"{what} read {seen} of {target} records within its deadline")


# The worker (B3, B4, B6, B8, B9)


class TimedWorker(Worker):
    """The real worker, timed from its partition assignment until ``target`` records are handled.

    With ``commits=False`` it never commits offsets (the B6 baseline); everything else is
    the production code path.
    """

    def __init__(self, *args: Any, target: int | None, broker_pid: int | None, commits: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.commits = commits
        self.seen = 0
        self.batches = 0
        self.last_batch_ns = 0
        self.window = Window(broker_pid)
        self.result: dict[str, Any] | None = None

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if not self.assignment and self.target is not None:
            self.window.start()
        super()._on_assign(consumer, partitions)

    def process(self, messages: Any) -> None:
        super().process(messages)
        self.seen += len(messages)
        self.batches += 1
        self.last_batch_ns = time.monotonic_ns()
        if self.target is not None and self.result is None and self.seen >= self.target:
            self.result = self.window.stop(self.seen, batches=self.batches,
                                           mean_batch=self.seen / self.batches)
            self.stop.set()

    def _commit(self, batch: Any) -> None:
        if self.commits:
            super()._commit(batch)
        else:
            batch.drop_partitions(self._revoked)


def _worker(params: dict[str, Any], name: str, store: dict[str, Any], target: int | None,
            commits: bool = True, stop: threading.Event | None = None,
            inventory: Inventory | None = None) -> TimedWorker:
    kafka = kafka_settings(params)
    spec = consumer_spec(params, name, params["group"], store)
    return TimedWorker(spec, kafka, build_store(spec, kafka), PSEUDONYMIZER, metrics=WorkerMetrics(name),
                       stop=stop or threading.Event(), target=target, broker_pid=params["broker_pid"],
                       commits=commits, inventory=inventory)


def worker_run(params: dict[str, Any]) -> dict[str, Any]:
    """Load a fresh store, then run the worker until it handled every request of the topic."""
    data = DataSet.from_dict(params["data"])
    store, tag = params["store"], params["tag"]
    storekit.load(store, data, tag)
    try:
        worker = _worker(params, tag, store, data.count, commits=params.get("commits", True))
        gc.collect()
        worker.run()
        if worker.result is None:
            raise RuntimeError(f"worker {tag} stopped after {worker.seen} of {data.count} records")
        return worker.result
    finally:
        storekit.remove(store, tag)


def sink_parts(params: dict[str, Any]) -> dict[str, Any]:
    """Time the worker's parts one at a time: decode, store apply and verify, ack produce.

    Returns microseconds of wall time per event for each part, measured over the same
    requests and batch size as ``worker_run``.
    """
    data = DataSet.from_dict(params["data"])
    store_config, tag = params["store"], params["tag"]
    _, values = data.encoded()
    storekit.load(store_config, data, tag)
    kafka = kafka_settings(params)
    spec = consumer_spec(params, tag, params["group"], store_config)
    store = build_store(spec, kafka)
    try:
        store.open()
        serde = RequestSerde()
        gc.collect()

        decode = Window(params["broker_pid"]).start()
        requests = [serde.deserialize(value) for value in values]
        decoded = decode.stop(len(requests))

        sink = Window(params["broker_pid"]).start()
        outcomes: dict[str, Outcome] = {}
        for batch in _chunks(requests, params["batch_size"]):
            outcomes.update(store.apply(batch))
            store.count_remaining(batch)
        sunk = sink.stop(len(requests))
        deleted = sum(1 for o in outcomes.values() if o.items_affected)
        if store_config["kind"] != "null" and deleted != len(requests):
            raise RuntimeError(f"store {tag} deleted items of {deleted} of {len(requests)} requests")

        producer = DurableProducer(producer_config(kafka, "bench-parts"))
        producer.check_reachable(kafka.proofs_topic, 10)
        acks = AckSerde()
        ack_window = Window(params["broker_pid"]).start()
        for request in requests:
            ack = build_ack(request, outcomes[request.request_id], 0, tag, "bench-parts", PSEUDONYMIZER)
            producer.send(kafka.proofs_topic, ack.proof_key, acks.serialize(ack))
        producer.confirm(60)
        acked = ack_window.stop(len(requests))
        producer.close()
    finally:
        store.close()
        storekit.remove(store_config, tag)
    return {"decode": decoded, "sink": sunk, "ack": acked}


# Store batching (B5)


def sink_batched(params: dict[str, Any]) -> dict[str, Any]:
    """Delete through the store's own ``apply``, one call per batch."""
    data = DataSet.from_dict(params["data"])
    store_config, tag = params["store"], params["tag"]
    storekit.load(store_config, data, tag)
    spec = consumer_spec(params, tag, params["group"], store_config)
    store = build_store(spec, kafka_settings(params))
    requests = data.requests()
    try:
        store.open()
        gc.collect()
        window = Window(params["broker_pid"]).start()
        deleted = 0
        for batch in _chunks(requests, params["batch_size"]):
            deleted += sum(o.items_affected for o in store.apply(batch).values())
        result = window.stop(len(requests), deleted=deleted)
    finally:
        store.close()
        storekit.remove(store_config, tag)
    return result


def sink_per_row(params: dict[str, Any]) -> dict[str, Any]:
    """Delete through the store's own ``apply``, one request per call.

    Each call does the same work for its request as a batched call does (receipt lookup,
    delete, receipt), in its own transaction (SQLite, PostgreSQL) or its own round trips
    (Redis), so the ratio to ``sink_batched`` is what batching saves.
    """
    data = DataSet.from_dict(params["data"])
    store_config, tag = params["store"], params["tag"]
    storekit.load(store_config, data, tag)
    spec = consumer_spec(params, tag, params["group"], store_config)
    store = build_store(spec, kafka_settings(params))
    requests = data.requests()
    try:
        store.open()
        gc.collect()
        window = Window(params["broker_pid"]).start()
        deleted = 0
        for request in requests:
            deleted += sum(o.items_affected for o in store.apply([request]).values())
        result = window.stop(len(requests), deleted=deleted)
    finally:
        store.close()
        storekit.remove(store_config, tag)
    return result


# The codec (B7)


def codec(params: dict[str, Any]) -> dict[str, Any]:
    """Records per second of AvroCodec and of bare fastavro calls on the same records.

    The bare side uses the parsed schema and one reused buffer. The sides alternate
    ``params["repeats"]`` times and each reports its best loop, which filters out
    interruptions by other processes on a shared machine.
    """
    data = DataSet.from_dict(params["data"])
    serde = RequestSerde()
    avro = serde.codec
    schema = avro._schema
    records = [request.model_dump(mode="python") for request in data.requests()]
    framed = [avro.encode(record) for record in records]
    bodies = [value[HEADER_SIZE:] for value in framed]
    buffer = io.BytesIO()

    def ours_encode() -> None:
        encode = avro.encode
        for record in records:
            encode(record)

    def bare_encode() -> None:
        writer = fastavro.schemaless_writer
        for record in records:
            buffer.seek(0)
            buffer.truncate()
            writer(buffer, schema, record)
            buffer.getvalue()

    def ours_decode() -> None:
        decode = avro.decode
        for value in framed:
            decode(value)

    def bare_decode() -> None:
        reader = fastavro.schemaless_reader
        for body in bodies:
            buffer.seek(0)
            buffer.truncate()
            buffer.write(body)
            buffer.seek(0)
            reader(buffer, schema, None)

    def container_encode() -> None:
        # Misuse guard: a whole Avro container file per record.
        for record in records:
            out = io.BytesIO()
            fastavro.writer(out, schema, [record])

    def serde_decode() -> None:
        deserialize = serde.deserialize
        for value in framed:
            deserialize(value)

    def serde_encode() -> None:
        serialize = serde.serialize
        for request in models:
            serialize(request)

    models = data.requests()
    loops = {"ours_encode": ours_encode, "bare_encode": bare_encode, "ours_decode": ours_decode,
             "bare_decode": bare_decode, "container_encode": container_encode,
             "serde_encode": serde_encode, "serde_decode": serde_decode}
    best: dict[str, float] = dict.fromkeys(loops, float("inf"))
    gc.collect()
    for _ in range(params["repeats"]):
        for name, loop in loops.items():
            started = time.perf_counter()
            loop()
            best[name] = min(best[name], time.perf_counter() - started)
    result: dict[str, Any] = {name: len(records) / seconds for name, seconds in best.items()}
    try:
        import msgspec

        packed = [msgspec.msgpack.encode({k: str(v) for k, v in record.items()}) for record in records]
        encoder = msgspec.msgpack.Encoder()
        started = time.perf_counter()
        for record in records:
            encoder.encode({k: str(v) for k, v in record.items()})
        result["msgpack_encode"] = len(records) / (time.perf_counter() - started)
        del packed
    except ImportError:
        result["msgpack_encode"] = None
    return result


# The ledger (B10)


def bench_inventory(stores: list[str]) -> Inventory:
    return Inventory(data_classes={DATA_CLASS: DataClass(
        subject_types=[SUBJECT_TYPE],
        stores=[StoreEntry(store=name, action="delete") for name in stores])})


def ledger_ingest(params: dict[str, Any]) -> dict[str, Any]:
    """Read the requests and proofs topics into a new ledger, then update its metrics.

    This is one refresh of ``tombstone ledger``: every ack is decoded, validated and joined
    with its request, and the completion gauges are recomputed. Events are acks.
    """
    kafka = kafka_settings(params)
    ledger = Ledger(bench_inventory(params["stores"]), kafka)
    metrics = LedgerMetrics()
    gc.collect()
    window = Window(params["broker_pid"]).start()
    ledger.refresh(120)
    metrics.update(ledger)
    acks = len(ledger.state.acks)
    result = window.stop(acks, complete=ledger.summary()["complete"])
    ledger.close()
    _check_count(acks, params["count"], "ledger refresh")
    return result


def consume_assigned(params: dict[str, Any]) -> dict[str, Any]:
    """Read a topic from the beginning with assigned partitions and a bare loop, no group.

    The topic is read ``params["passes"]`` times in one window, because one pass of a
    bare loop is too short to time well. The rate counts every record read.
    """
    kafka = kafka_settings(params)
    topic = params["topic"]
    # The fetch settings of the ledger's TopicReader, which also assigns and unassigns.
    consumer = Consumer({**kafka.client_config(), "group.id": "bench-unused", "enable.auto.commit": False,
                         "enable.auto.offset.store": False, "isolation.level": "read_committed",
                         "fetch.wait.max.ms": 10})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    passes = params.get("passes", 1)
    target = params["count"]
    seen = 0
    gc.collect()
    window = Window(params["broker_pid"]).start()
    deadline = time.monotonic() + 120
    for _ in range(passes):
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = 0
        while read < target and time.monotonic() < deadline:
            messages = consumer.consume(min(params["batch_size"], target - read), 1.0)
            read += sum(1 for m in messages if m.error() is None)
        consumer.unassign()
        _check_count(read, target, f"raw consume of {topic}")
        seen += read
    result = window.stop(seen, passes=passes)
    consumer.close()
    return result


# Services for B8 and B9: processes that run side by side until the parent stops them


class WorkerService:
    """A store worker running in a thread of this child until ``stop``."""

    def __init__(self, params: dict[str, Any], emit: Emit) -> None:
        self.tag, self.store = params["tag"], params["store"]
        storekit.load(self.store, DataSet.from_dict(params["data"]), self.tag)
        self.worker = _worker(params, self.tag, self.store, None)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"worker-{self.tag}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while len(self.worker.assignment) < params["partitions"]:
            if self.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.tag} did not get its partitions: {self.error!r}")
            time.sleep(0.02)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> dict[str, Any]:
        self.worker.stop.set()
        self.thread.join(60)
        storekit.remove(self.store, self.tag)
        if self.error is not None:
            raise RuntimeError(f"worker {self.tag} failed: {self.error!r}")
        return {"seen": self.worker.seen, "batches": self.worker.batches, "last_batch_ns": self.worker.last_batch_ns}


class LedgerService:
    """A ledger that refreshes continuously and notes when each request completes.

    A request whose trace id starts with ``lat`` carries the CLOCK_MONOTONIC time in
    nanoseconds at which it was built, so its end-to-end latency is known on completion.
    """

    def __init__(self, params: dict[str, Any], emit: Emit) -> None:
        self.emit = emit
        self.ledger = Ledger(bench_inventory(params["stores"]), kafka_settings(params))
        self.touched: set[str] = set()
        self.done: set[str] = set()
        self.latencies_ms: list[float] = []
        # Per store: time from building the request to the ledger reading its ack.
        self.ack_latencies_ms: dict[str, list[float]] = {}
        self.expect: int | None = None
        self.refreshes = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        state = self.ledger.state
        add_request, add_ack = state.add_request, state.add_ack

        def on_request(request: DeletionRequest) -> None:
            add_request(request)
            self.touched.add(request.request_id)

        def on_ack(ack: Any) -> None:
            add_ack(ack)
            self.touched.add(ack.request_id)
            request = state.requests.get(ack.request_id)
            trace = request.trace_id if request is not None else None
            if trace and trace.startswith("lat"):
                self.ack_latencies_ms.setdefault(ack.store, []).append((time.monotonic_ns() - int(trace[3:])) / 1e6)

        state.add_request = on_request  # type: ignore[method-assign]
        state.add_ack = on_ack  # type: ignore[method-assign]
        self.ledger.refresh(30)
        self.thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                count = self.ledger.refresh(30)
                self.refreshes += 1
                now = time.monotonic_ns()
                touched, self.touched = self.touched, set()
                with self.lock:
                    for request_id in touched:
                        if request_id in self.done:
                            continue
                        view = self.ledger.state.view(request_id)
                        if view is None or not view.complete:
                            continue
                        self.done.add(request_id)
                        trace = view.request.trace_id or ""
                        if trace.startswith("lat"):
                            self.latencies_ms.append((now - int(trace[3:])) / 1e6)
                    if self.expect is not None and len(self.done) >= self.expect:
                        self.expect = None
                        self.emit({"event": "complete", "at_ns": now, "done": len(self.done)})
                if count == 0:
                    self.stop_event.wait(IDLE_REFRESH_WAIT_S)
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self.emit({"event": "failed", "error": repr(exc)})

    def command(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if name == "expect":
                self.expect = params["count"]
                if len(self.done) >= self.expect:
                    self.expect = None
                    self.emit({"event": "complete", "at_ns": time.monotonic_ns(), "done": len(self.done)})
                return {"done": len(self.done)}
            if name == "latencies":
                values, self.latencies_ms = self.latencies_ms, []
                by_store, self.ack_latencies_ms = self.ack_latencies_ms, {}
                return {"latencies_ms": values, "ack_p50_ms": {
                    store: sorted(v)[len(v) // 2] for store, v in by_store.items() if v}}
            if name == "status":
                return {"done": len(self.done), "refreshes": self.refreshes}
        raise ValueError(f"Unknown ledger command {name}")

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(60)
        self.ledger.close()
        if self.error is not None:
            raise RuntimeError(f"ledger failed: {self.error!r}")
        return {"done": len(self.done), "refreshes": self.refreshes}


class HopService:
    """A bare consumer that notes how long each record took from its produce call."""

    def __init__(self, params: dict[str, Any], emit: Emit) -> None:
        kafka = kafka_settings(params)
        spec = consumer_spec(params, "bench-hop", params["group"], {"kind": "null"})
        self.consumer = Consumer(consumer_config(spec, kafka, "bench-hop-consumer"))
        self.assigned = threading.Event()
        self.consumer.subscribe([params["topic"]], on_assign=lambda c, ps: self.assigned.set())
        self.latencies_ms: list[float] = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="hop", daemon=True)
        self.thread.start()
        if not self.assigned.wait(60):
            raise RuntimeError("the hop consumer got no partitions within 60 s")

    def _run(self) -> None:
        while not self.stop_event.is_set():
            message = self.consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            now = time.monotonic_ns()
            with self.lock:
                self.latencies_ms.append((now - int.from_bytes(message.value()[:8], "big")) / 1e6)

    def command(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        if name == "latencies":
            with self.lock:
                values, self.latencies_ms = self.latencies_ms, []
            return {"latencies_ms": values}
        raise ValueError(f"Unknown hop command {name}")

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(30)
        self.consumer.close()
        return {}


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "produce_raw": produce_raw,
    "produce_ours": produce_ours,
    "consume_raw": consume_raw,
    "commit_per_message": commit_per_message,
    "worker_run": worker_run,
    "sink_parts": sink_parts,
    "sink_batched": sink_batched,
    "sink_per_row": sink_per_row,
    "codec": codec,
    "ledger_ingest": ledger_ingest,
    "consume_assigned": consume_assigned,
}
SERVICES = {"worker": WorkerService, "ledger": LedgerService, "hop": HopService}
