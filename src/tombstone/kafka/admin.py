"""Idempotent creation of the pipeline's topics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from tombstone.errors import ConfigError, KafkaClientError
from tombstone.kafka.errors import from_kafka_exception
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def pipeline_topics(
    settings: KafkaSettings,
    partitions: int = 3,
    replication_factor: int = 1,
    max_worker_outage_ms: int = 7 * DAY_MS,
    dead_letter_retention_ms: int = 30 * DAY_MS,
) -> list[TopicSpec]:
    """Requests, proofs, dead-letter and holds topics with the settings the pipeline relies on.

    ``max_worker_outage_ms`` becomes ``min.compaction.lag.ms`` of the requests topic: a
    worker that is down for less than that still reads every version of every key.
    """
    compacted = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(max_worker_outage_ms),
        "min.insync.replicas": str(min(2, replication_factor)),
    }
    return [
        TopicSpec(settings.requests_topic, partitions, replication_factor, dict(compacted)),
        TopicSpec(settings.proofs_topic, partitions, replication_factor, dict(compacted)),
        TopicSpec(
            settings.dead_letter_topic, partitions, replication_factor,
            {"cleanup.policy": "delete", "retention.ms": str(dead_letter_retention_ms)},
        ),
        # Legal holds: key = subject key, a null value releases the hold.
        TopicSpec(settings.holds_topic, 1, replication_factor, dict(compacted)),
    ]


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create missing topics and align the managed settings of existing ones.

    Returns the names of the topics that were created. Running it twice is harmless.

    Raises:
        ConfigError: an existing topic has a different cleanup policy; changing it
            in place could drop records, so an operator must decide.
        KafkaClientError: the broker rejected the call.
    """
    existing = _list_topics(admin, timeout_s)
    missing = [spec for spec in specs if spec.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in missing],
            operation_timeout=timeout_s, request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
                logger.info("Created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise from_kafka_exception(exc, f"creating topic {name}") from exc
    for spec in specs:
        if spec.name not in created:
            _align_config(admin, spec, timeout_s)
    return created


def _list_topics(admin: AdminClient, timeout_s: float) -> set[str]:
    try:
        return set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise KafkaClientError(
            f"Cannot list topics within {timeout_s:.0f} s: {exc.args[0]}. "
            "Check KAFKA_BOOTSTRAP_SERVERS and that the broker is running."
        ) from exc


def _align_config(admin: AdminClient, spec: TopicSpec, timeout_s: float) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    current = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result()
    policy = current["cleanup.policy"].value if "cleanup.policy" in current else None
    expected_policy = spec.config.get("cleanup.policy")
    if expected_policy and policy != expected_policy:
        raise ConfigError(
            f"Topic {spec.name} exists with cleanup.policy={policy}, but the pipeline needs "
            f"{expected_policy}. Change it deliberately (kafka-configs --alter) or use another topic name."
        )
    changes = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        for key, value in spec.config.items()
        if key not in current or current[key].value != value
    ]
    if not changes:
        return
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=changes)
    for future in admin.incremental_alter_configs([resource]).values():
        try:
            future.result()
        except KafkaException as exc:
            raise from_kafka_exception(exc, f"updating the settings of topic {spec.name}") from exc
    logger.info("Updated settings of topic %s: %s", spec.name, ", ".join(c.name for c in changes))
