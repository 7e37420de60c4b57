"""The benchmarks B1 to B10: rounds of interleaved numerator and denominator phases.

Every benchmark runs one warm-up round, whose results are discarded, and then
``settings.rounds`` measured rounds. Within a round the numerator and the denominator run
back to back, in an order that alternates from round to round, and the round's ratio is
their quotient. A key's ``median`` is the median of its rounds' ratios.
"""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tombstone.kafka.producer import producer_config
from tombstone.models import DeletionRequest
from tombstone.requester import Requester
from tombstone.settings import KafkaSettings

from bench import storekit
from bench.cluster import PARTITIONS, Cluster
from bench.data import DataSet
from bench.pool import Child
from bench.settings import BenchSettings
from bench.system import cpu_seconds, load_average, uptime_line

logger = logging.getLogger(__name__)

TARGETS: dict[str, tuple[str, float]] = {
    "B1": (">=", 0.5), "B2": (">=", 0.9), "B3": (">=", 0.4), "B4": (">=", 0.8),
    "B5.sqlite": (">=", 100), "B5.postgresql": (">=", 20), "B5.redis": (">=", 5), "B6": (">=", 0.95),
    "B7.encode": (">=", 0.85), "B7.decode": (">=", 0.85), "B8.p50": ("<=", 3), "B8.p99": ("<=", 5),
    "B9": (">=", 1.3), "B10": (">=", 0.5),
}


# The bare producer sends the data set this many times per window: one pass lasts about
# 0.2 s, too short to time on a shared machine.
RAW_PRODUCE_PASSES = 5
# B3 and B6 commit every 1000 records, the batch size at which B6's target is set.
CONSUME_BATCH = 1000


def target_of(key: str) -> tuple[str, float]:
    return TARGETS.get(key) or TARGETS[key.split(".")[0]]


def median_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(sides: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of every numeric field of a phase result."""
    keys = {key for side in sides for key, value in side.items() if isinstance(value, int | float)}
    return {key: median_of(side.get(key) for side in sides) for key in sorted(keys)}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Suite:
    """Runs the benchmarks against one cluster with a pool of child processes."""

    def __init__(self, settings: BenchSettings, cluster: Cluster, workdir: Path, log_dir: Path) -> None:
        self.settings = settings
        self.cluster = cluster
        self.workdir = workdir
        self.log_dir = log_dir
        self.requested_at_ms = int(time.time() * 1000) // 1000 * 1000
        self.results: dict[str, dict[str, Any]] = {}
        self.children: list[Child] = []

    # Plumbing

    def child(self, index: int) -> Child:
        while len(self.children) <= index:
            self.children.append(Child(f"child{len(self.children)}", self.log_dir))
        return self.children[index]

    def close(self) -> None:
        for child in self.children:
            child.close()

    def params(self, topics: dict[str, str], **extra: Any) -> dict[str, Any]:
        return {"bootstrap": self.cluster.bootstrap, "broker_pid": self.cluster.broker_pid, "topics": topics,
                "batch_size": self.settings.batch_size, "workdir": str(self.workdir),
                "group": f"bench-{uuid.uuid4().hex[:10]}", **extra}

    def data(self, name: str, count: int) -> DataSet:
        return DataSet(name, count, self.requested_at_ms)

    def rounds(self) -> Iterable[tuple[int, bool]]:
        """Round numbers with a flag that is True for the measured rounds (round 0 warms up)."""
        for number in range(self.settings.rounds + 1):
            yield number, number > 0

    def record(self, key: str, ratios: list[float], **details: Any) -> None:
        comparison, target = target_of(key)
        median = median_of(ratios)
        met = None
        if median is not None:
            met = median >= target if comparison == ">=" else median <= target
        self.results[key] = {"median": median, "rounds": ratios, "target": f"{comparison} {target:g}",
                             "met": met, **details, "load_average": load_average()}
        logger.info("%s: median %s (target %s %g) rounds %s", key,
                    f"{median:.3f}" if median is not None else "none", comparison, target,
                    ", ".join(f"{r:.3f}" for r in ratios))

    def preload(self, topics: dict[str, str], data: DataSet) -> None:
        """Write a data set's requests to a topic, outside any measurement."""
        self.child(0).phase("produce_raw", self.params(topics, config="durable", data=data.to_dict()))

    def new_store(self, kind: str, tag: str) -> dict[str, Any]:
        return storekit.store_config(kind, tag, str(self.workdir), self.cluster.run_id,
                                     self.settings.postgres_dsn, self.settings.redis_url)

    # B7

    def codec(self) -> None:
        """Measure B7: AvroCodec records/s over bare fastavro records/s, encode and decode."""
        data = self.data("codec", self.settings.sizes.codec)
        encode, decode, sides = [], [], []
        for _, measured in self.rounds():
            result = self.child(0).phase("codec", {"data": data.to_dict(), "repeats": 3})
            if measured:
                encode.append(result["ours_encode"] / result["bare_encode"])
                decode.append(result["ours_decode"] / result["bare_decode"])
                sides.append(result)
        absolute = summarize(sides)
        extra = {
            "records_per_s": absolute,
            "container_writer_over_schemaless": absolute["container_encode"] / absolute["bare_encode"],
            "msgpack_encode_over_fastavro": (absolute["msgpack_encode"] / absolute["bare_encode"]
                                             if absolute.get("msgpack_encode") else None),
        }
        self.record("B7.encode", encode, **extra)
        self.record("B7.decode", decode, **extra)

    # B1, B2

    def produce(self) -> None:
        """Measure B1 (our requester over bare produce) and B2 (durable over acks=1 bare produce)."""
        topics = self.cluster.topics("produce")
        data = self.data("produce", self.settings.sizes.produce).to_dict()
        b1, b2 = [], []
        sides: dict[str, list[dict[str, Any]]] = {"ours": [], "raw_durable": [], "raw_acks1": []}
        orders = [["raw_durable", "ours", "raw_acks1"], ["raw_acks1", "ours", "raw_durable"]]
        for number, measured in self.rounds():
            results = {}
            for side in orders[number % 2]:
                if side == "ours":
                    results[side] = self.child(0).phase("produce_ours", self.params(topics, data=data))
                else:
                    config = "durable" if side == "raw_durable" else "acks1"
                    results[side] = self.child(0).phase("produce_raw", self.params(
                        topics, data=data, config=config, warm_up=True, passes=RAW_PRODUCE_PASSES))
            if measured:
                b1.append(results["ours"]["rate"] / results["raw_durable"]["rate"])
                b2.append(results["raw_durable"]["rate"] / results["raw_acks1"]["rate"])
                for side, result in results.items():
                    sides[side].append(result)
        self.record("B1", b1, numerator=summarize(sides["ours"]), denominator=summarize(sides["raw_durable"]),
                    uptime=uptime_line())
        self.record("B2", b2, numerator=summarize(sides["raw_durable"]),
                    denominator=summarize(sides["raw_acks1"]), uptime=uptime_line())

    # B3, B6

    def consume(self) -> None:
        """Measure B3 (null-store worker over bare consume) and B6 (the worker over the worker without commits)."""
        topics = self.cluster.topics("consume")
        data = self.data("consume", self.settings.sizes.consume)
        self.preload(topics, data)
        null = self.new_store("null", "null")

        b3, b6 = [], []
        sides: dict[str, list[dict[str, Any]]] = {"raw": [], "worker": [], "worker_no_commits": []}
        orders = [["raw", "worker", "worker_no_commits"], ["worker_no_commits", "worker", "raw"]]
        for number, measured in self.rounds():
            results = {}
            for side in orders[number % 2]:
                if side == "raw":
                    results[side] = self.child(0).phase("consume_raw", self.params(
                        topics, count=data.count, batch_size=CONSUME_BATCH))
                else:
                    results[side] = self.child(0).phase("worker_run", self.params(
                        topics, data=data.to_dict(), store=null, tag=f"null-r{number}",
                        commits=side == "worker", batch_size=CONSUME_BATCH))
            if measured:
                b3.append(results["worker"]["rate"] / results["raw"]["rate"])
                b6.append(results["worker"]["rate"] / results["worker_no_commits"]["rate"])
                for side, result in results.items():
                    sides[side].append(result)

        # Reported with B6, not gated: one synchronous commit per record.
        per_message = self.child(0).phase("commit_per_message", self.params(
            topics, count=min(data.count, self.settings.sizes.per_message_commits)))
        raw_rate = median_of(side["rate"] for side in sides["raw"])

        self.record("B3", b3, numerator=summarize(sides["worker"]), denominator=summarize(sides["raw"]),
                    batch_size=CONSUME_BATCH, uptime=uptime_line())
        self.record("B6", b6, numerator=summarize(sides["worker"]),
                    denominator=summarize(sides["worker_no_commits"]),
                    commit_every_batch_of=CONSUME_BATCH,
                    per_message_commit={"rate": per_message["rate"],
                                        "cpu_us_per_event": per_message["cpu_us_per_event"],
                                        "over_raw_consume": per_message["rate"] / raw_rate if raw_rate else None},
                    uptime=uptime_line())

    # B5

    def sinks(self) -> None:
        """Measure B5: each store's apply with batches over its apply with one request per call."""
        sizes = self.settings.sizes
        for kind in ("sqlite", "postgresql", "redis"):
            if kind not in self.settings.stores:
                continue
            ratios = []
            sides: dict[str, list[dict[str, Any]]] = {"batched": [], "per_row": []}
            for number, measured in self.rounds():
                order = ["batched", "per_row"] if number % 2 else ["per_row", "batched"]
                results = {}
                for side in order:
                    tag = f"b5-{kind}-{side.replace('_', '')}-r{number}"
                    count = sizes.sink_batched if side == "batched" else sizes.sink_per_row
                    results[side] = self.child(0).phase(f"sink_{side}", self.params(
                        {}, data=self.data(tag, count).to_dict(), store=self.new_store(kind, tag), tag=tag))
                if measured:
                    ratios.append(results["batched"]["rate"] / results["per_row"]["rate"])
                    for side, result in results.items():
                        sides[side].append(result)
            self.record(f"B5.{kind}", ratios, numerator=summarize(sides["batched"]),
                        denominator=summarize(sides["per_row"]), uptime=uptime_line())

    # B10, B4, B8, B9: one loop, because B9's denominator is made of B4's and B10's rounds

    def stores(self) -> None:
        sizes = self.settings.sizes
        kinds = list(self.settings.stores)
        fan_kinds = list(self.settings.fanout_stores)

        ledger_topics = self.cluster.topics("ledger")
        ledger_data = self.data("ledger", sizes.ledger_requests)
        ledger_stores = [f"store{i}" for i in range(sizes.ledger_stores)]
        self.preload(ledger_topics, ledger_data)
        self.child(0).phase("produce_raw", self.params(
            {**ledger_topics, "requests": ledger_topics["proofs"]}, config="durable",
            data=ledger_data.to_dict(), acks_for=ledger_stores))

        store_topics = self.cluster.topics("stores")
        store_data = self.data("stores", sizes.store_worker)
        self.preload(store_topics, store_data)

        b10: list[float] = []
        b4: dict[str, list[float]] = {kind: [] for kind in kinds}
        b4_sides: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {"worker": [], "parts": []} for kind in kinds}
        b10_sides: dict[str, list[dict[str, Any]]] = {"ledger": [], "raw": []}
        consume_sides: list[dict[str, Any]] = []
        b8: dict[str, list[float]] = {"p50": [], "p99": []}
        b8_sides: dict[str, list[dict[str, Any]]] = {"pipeline": [], "hop": []}
        b9: list[float] = []
        b9_sides: list[dict[str, Any]] = []

        for number, measured in self.rounds():
            # B10: a new ledger reads requests and acks; raw consume reads the acks.
            ledger_params = self.params(ledger_topics, stores=ledger_stores, count=len(ledger_stores) * ledger_data.count)
            raw = self.child(0).phase("consume_assigned", {**ledger_params, "topic": ledger_topics["proofs"],
                                                           "passes": 5})
            ledger = self.child(0).phase("ledger_ingest", ledger_params)
            # B4: each store's worker, then its parts measured one at a time.
            consumed = self.child(0).phase("consume_raw", self.params(store_topics, count=store_data.count))
            worker_rates: dict[str, float] = {}
            for kind in kinds:
                tag = f"{kind}-r{number}"
                worker = self.child(0).phase("worker_run", self.params(
                    store_topics, data=store_data.to_dict(), store=self.new_store(kind, f"{tag}-w"), tag=f"{tag}-w"))
                parts = self.child(0).phase("sink_parts", self.params(
                    store_topics, data=store_data.to_dict(), store=self.new_store(kind, f"{tag}-p"), tag=f"{tag}-p"))
                serial_us = (1e6 / consumed["rate"] + 1e6 / parts["decode"]["rate"]
                             + 1e6 / parts["sink"]["rate"] + 1e6 / parts["ack"]["rate"])
                worker_rates[kind] = worker["rate"]
                if measured:
                    b4[kind].append(worker["rate"] * serial_us / 1e6)
                    b4_sides[kind]["worker"].append(worker)
                    b4_sides[kind]["parts"].append({
                        "consume_us": 1e6 / consumed["rate"], "decode_us": 1e6 / parts["decode"]["rate"],
                        "sink_us": 1e6 / parts["sink"]["rate"], "ack_us": 1e6 / parts["ack"]["rate"],
                        "serial_rate": 1e6 / serial_us,
                        "sink_cpu_us_per_event": parts["sink"]["cpu_us_per_event"]})
            # B8 and B9: every real store and the ledger running side by side.
            session = self.fanout_session(number, fan_kinds)
            ledger_us_per_request = 1e6 * len(fan_kinds) / ledger["rate"]
            serial_us = sum(1e6 / worker_rates[kind] for kind in fan_kinds) + ledger_us_per_request
            if measured:
                b10.append(ledger["rate"] / raw["rate"])
                b10_sides["ledger"].append(ledger)
                b10_sides["raw"].append(raw)
                consume_sides.append(consumed)
                b8["p50"].append(session["pipeline"]["p50_ms"] / session["hop"]["p50_ms"])
                b8["p99"].append(session["pipeline"]["p99_ms"] / session["hop"]["p99_ms"])
                b8_sides["pipeline"].append(session["pipeline"])
                b8_sides["hop"].append(session["hop"])
                b9.append(session["fanout"]["rate"] * serial_us / 1e6)
                b9_sides.append({**session["fanout"], "serial_rate": 1e6 / serial_us})

        self.record("B10", b10, numerator=summarize(b10_sides["ledger"]), denominator=summarize(b10_sides["raw"]),
                    acks_per_request=len(ledger_stores), uptime=uptime_line())
        for kind in kinds:
            self.record(f"B4.{kind}", b4[kind], numerator=summarize(b4_sides[kind]["worker"]),
                        denominator=summarize(b4_sides[kind]["parts"]),
                        raw_consume=summarize(consume_sides), uptime=uptime_line())
        for name in ("p50", "p99"):
            self.record(f"B8.{name}", b8[name], numerator=summarize(b8_sides["pipeline"]),
                        denominator=summarize(b8_sides["hop"]), rate_per_s=self.settings.sizes.latency_rate,
                        stores=fan_kinds, uptime=uptime_line())
        self.record("B9", b9, numerator=summarize(b9_sides), stores=fan_kinds, uptime=uptime_line())

    def fanout_session(self, number: int, kinds: list[str]) -> dict[str, Any]:
        """Start a worker per store, the ledger and a bare consumer, then measure latency and a burst."""
        sizes = self.settings.sizes
        topics = self.cluster.topics(f"fan-r{number}")
        hop_topics = self.cluster.topics(f"hop-r{number}")
        latency_count = int(sizes.latency_rate * sizes.latency_seconds)
        data = self.data(f"fan-r{number}", sizes.fanout + latency_count + 1)
        tags = {kind: f"fan-{kind}-r{number}" for kind in kinds}
        workers = {kind: self.child(1 + index) for index, kind in enumerate(kinds)}
        ledger_child = self.child(1 + len(kinds))
        hop_child = self.child(2 + len(kinds))

        services = [(child, "worker") for child in workers.values()]
        services += [(ledger_child, "ledger"), (hop_child, "hop")]
        for kind, child in workers.items():
            child.send("start", "worker", self.params(topics, service="worker", data=data.to_dict(),
                                                       store=self.new_store(kind, tags[kind]), tag=tags[kind],
                                                       partitions=PARTITIONS))
        ledger_child.send("start", "ledger", self.params(topics, service="ledger", stores=list(tags.values())))
        hop_child.send("start", "hop", self.params(hop_topics, service="hop", topic=hop_topics["requests"]))
        for child, _ in services:
            child.receive(300)

        kafka = KafkaSettings(bootstrap_servers=self.cluster.bootstrap, requests_topic=topics["requests"],
                              proofs_topic=topics["proofs"], dead_letter_topic=topics["dead_letters"],
                              holds_topic=topics["holds"])
        result: dict[str, Any] = {}
        try:
            order = ["hop", "pipeline"] if number % 2 else ["pipeline", "hop"]
            for side in order:
                if side == "hop":
                    result["hop"] = self.hop_latency(hop_topics["requests"], hop_child, latency_count)
                else:
                    result["pipeline"] = self.pipeline_latency(kafka, data, ledger_child, latency_count)
            result["fanout"] = self.burst(topics, data, sizes.fanout, ledger_child, workers)
        finally:
            for child, service in services:
                child.send("stop", service)
            totals = {service if child not in workers.values() else f"{child.name}": child.receive(120)
                      for child, service in services}
        burst = result.get("fanout")
        if burst is not None:
            # When each worker handled its last batch, in seconds after the burst started.
            for kind, child in workers.items():
                finished = totals[child.name].get("last_batch_ns")
                if finished:
                    burst[f"{kind}_done_s"] = (finished - burst["started_ns"]) / 1e9
            burst["ledger_refreshes"] = totals["ledger"]["refreshes"]
        return result

    def paced(self, count: int, send: Callable[[int], None]) -> float:
        """Call ``send(i)`` ``count`` times at the fixed latency rate and return the seconds taken."""
        interval = 1.0 / self.settings.sizes.latency_rate
        started = time.monotonic()
        for index in range(count):
            delay = started + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            send(index)
        return time.monotonic() - started

    def hop_latency(self, topic: str, child: Child, count: int) -> dict[str, Any]:
        """Produce stamped records one at a time, as the requester does, to a bare consumer."""
        kafka = KafkaSettings(bootstrap_servers=self.cluster.bootstrap)
        producer = Producer(producer_config(kafka, "bench-hop-producer"))
        padding = bytes(160)
        # Outside the timing: metadata and the idempotent producer id, with one record whose
        # latency is then discarded.
        producer.produce(topic, time.monotonic_ns().to_bytes(8, "big") + padding, b"hop-warm-up")
        producer.flush(30)
        deadline = time.monotonic() + 30
        while not child.call("command", "hop", {"command": "latencies"})["latencies_ms"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the hop consumer did not receive the warm-up record within 30 s")
            time.sleep(0.05)

        def send(index: int) -> None:
            producer.produce(topic, time.monotonic_ns().to_bytes(8, "big") + padding, f"hop-{index}".encode())
            producer.flush(10)

        self.paced(count, send)
        latencies: list[float] = []
        deadline = time.monotonic() + 60
        while len(latencies) < count and time.monotonic() < deadline:
            latencies += child.call("command", "hop", {"command": "latencies"})["latencies_ms"]
            time.sleep(0.05)
        return self.latency_summary(latencies, count)

    def pipeline_latency(self, kafka: KafkaSettings, data: DataSet, ledger: Child, count: int) -> dict[str, Any]:
        """Submit requests one at a time with the requester, and time each until the ledger completes it."""
        requester = Requester(kafka, client_id="bench-latency")
        # The data set's last request warms the requester up (metadata, producer id) outside
        # the timing. It carries no latency stamp, so the ledger records no latency for it.
        done_before = ledger.call("command", "ledger", {"command": "status"})["done"] + 1
        requester.submit([DeletionRequest(**data.fields(data.count - 1))])
        ledger.send("command", "ledger", {"command": "expect", "count": done_before})
        ledger.receive(60)
        ledger.wait_event("complete", 120)
        first = data.count - 1 - count

        def send(index: int) -> None:
            fields = {**data.fields(first + index), "trace_id": f"lat{time.monotonic_ns()}"}
            requester.submit([DeletionRequest(**fields)])

        self.paced(count, send)
        requester.close()
        ledger.send("command", "ledger", {"command": "expect", "count": done_before + count})
        ledger.receive(60)
        ledger.wait_event("complete", 120)
        reply = ledger.call("command", "ledger", {"command": "latencies"})
        summary = self.latency_summary(reply["latencies_ms"], count)
        # Median time until the ledger read each store's ack (a request whose ack arrived
        # before the request itself is not counted).
        summary.update({f"{store.split('-')[1]}_ack_p50_ms": value for store, value in reply["ack_p50_ms"].items()})
        return summary

    @staticmethod
    def latency_summary(latencies: list[float], expected: int) -> dict[str, Any]:
        if len(latencies) < expected:
            raise RuntimeError(f"only {len(latencies)} of {expected} latency samples arrived")
        return {"samples": len(latencies), "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies)}

    def burst(self, topics: dict[str, str], data: DataSet, count: int, ledger: Child,
              workers: dict[str, Child]) -> dict[str, Any]:
        """Write ``count`` requests at once and time them until the ledger has completed all of them."""
        keys, values = data.encoded()
        kafka = KafkaSettings(bootstrap_servers=self.cluster.bootstrap)
        producer = Producer(producer_config(kafka, "bench-burst"))
        producer.list_topics(topics["requests"], timeout=10)
        pids = {kind: child.pid for kind, child in workers.items()}
        pids["ledger"] = ledger.pid
        pids["broker"] = self.cluster.broker_pid
        done_before = ledger.call("command", "ledger", {"command": "status"})["done"]
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic_ns()
        for index in range(count):
            while True:
                try:
                    producer.produce(topics["requests"], values[index], keys[index])
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(60)
        ledger.send("command", "ledger", {"command": "expect", "count": done_before + count})
        ledger.receive(60)
        finished = ledger.wait_event("complete", 600)["at_ns"]
        seconds = (finished - started) / 1e9
        cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        cpu = {f"{name}_cpu_us_per_event": 1e6 * (cpu_after[name] - cpu_before[name]) / count
               for name in pids if cpu_before[name] is not None and cpu_after[name] is not None}
        return {"events": count, "seconds": seconds, "rate": count / seconds, "started_ns": started, **cpu}
