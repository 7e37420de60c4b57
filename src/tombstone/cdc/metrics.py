"""Prometheus metrics of the CDC bridge. Labels name the bridge, topics and reasons, never rows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tombstone.metrics import PREFIX, forget_partition_series


class BridgeMetrics:
    """Series of one bridge; the attribute names match what GroupMember expects."""

    def __init__(self, bridge: str, registry: CollectorRegistry | None = None) -> None:
        self.bridge = bridge
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = f"{PREFIX}_cdc"
        self.events = Counter(f"{p}_events", "Change events read, by topic and kind.",
                              ["bridge", "topic", "kind"], registry=r)
        self.requests = Counter(f"{p}_requests", "Deletion requests produced and confirmed.",
                                ["bridge", "data_class"], registry=r)
        self.skipped = Counter(f"{p}_skipped", "Change events that are not erasures, by reason.",
                               ["bridge", "reason"], registry=r)
        self.dead_letters = Counter(f"{p}_dead_letters", "Change events sent to the dead-letter topic.",
                                    ["bridge", "reason"], registry=r)
        self.lookbacks = Counter(f"{p}_lookbacks", "Reads before a lone tombstone to find its delete event.",
                                 ["bridge", "found"], registry=r)
        self.retries = Counter(f"{p}_retries", "Retried batch steps.", ["bridge", "step"], registry=r)
        self.commits = Counter(f"{p}_offset_commits", "Synchronous offset commits.", ["bridge"], registry=r)
        self.source_delay = Histogram(
            f"{p}_source_delay_seconds",
            "From the source commit (source.ts_ms) to the confirmed deletion request.", ["bridge"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=r)
        self.lag_records = Gauge(f"{p}_consumer_lag_records",
                                 "Records between the committed offset and the high watermark.",
                                 ["bridge", "topic", "partition"], registry=r)
        self.lag_seconds = Gauge(f"{p}_consumer_lag_seconds",
                                 "Age of the last committed record while records wait; 0 when caught up.",
                                 ["bridge", "topic", "partition"], registry=r)
        self.paused = Gauge(f"{p}_partitions_paused", "Partitions paused while a step retries.",
                            ["bridge"], registry=r)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the series of a partition this bridge no longer owns."""
        forget_partition_series((self.lag_records, self.lag_seconds), self.bridge, topic, partition)
