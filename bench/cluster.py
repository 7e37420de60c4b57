"""The broker the benchmarks run against, and the topics they create on it.

With ``KAFKA_BOOTSTRAP_SERVERS`` set, that broker is used. Its process id, needed for
its CPU time, comes from ``BENCH_BROKER_PID``, or from the state file of the project's
local broker when that broker has the same address. Without either, broker CPU is not
reported. Without it, a local Kafka broker is started in ``build/bench/broker`` and
stopped at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tombstone.broker.local import LocalBroker
from tombstone.kafka.admin import ensure_topics, pipeline_topics
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

PARTITIONS = 2


@dataclass
class Cluster:
    bootstrap: str
    broker_pid: int | None
    broker: LocalBroker | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, state_dir: Path) -> Cluster:
        configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if configured:
            pid = os.environ.get("BENCH_BROKER_PID")
            if pid:
                return cls(configured, int(pid))
            state = LocalBroker().state()
            found = state.pid if state is not None and state.bootstrap == configured else None
            if found is None:
                logger.warning("No process id for the broker at %s, so its CPU time is not reported; "
                               "set BENCH_BROKER_PID to report it", configured)
            return cls(configured, found)
        broker = LocalBroker(state_dir)
        bootstrap = broker.start(timeout_s=180)
        state = broker.state()
        return cls(bootstrap, state.pid if state else None, broker)

    def topics(self, label: str) -> dict[str, str]:
        """Create the four pipeline topics, with production settings, for one benchmark."""
        prefix = f"bench-{self.run_id}-{label}"
        names = {"requests": f"{prefix}-requests", "proofs": f"{prefix}-proofs",
                 "dead_letters": f"{prefix}-dead-letters", "holds": f"{prefix}-holds"}
        kafka = KafkaSettings(bootstrap_servers=self.bootstrap, requests_topic=names["requests"],
                              proofs_topic=names["proofs"], dead_letter_topic=names["dead_letters"],
                              holds_topic=names["holds"])
        ensure_topics(AdminClient({"bootstrap.servers": self.bootstrap}),
                      pipeline_topics(kafka, partitions=PARTITIONS))
        self.created.extend(names.values())
        return names

    def close(self) -> None:
        """Delete the topics this run created, and stop the broker if this run started it."""
        if self.broker is not None:
            self.broker.stop()
            # The next start formats a new data directory anyway; this frees the disk now.
            shutil.rmtree(self.broker.state_dir / "run", ignore_errors=True)
            return
        if self.created:
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            for name, future in admin.delete_topics(self.created, operation_timeout=30).items():
                try:
                    future.result()
                except Exception as exc:  # deleting is best effort; the run's data is already written
                    logger.warning("Could not delete topic %s: %s", name, exc)
