"""Process entry points of ``tombstone cdc-bridge`` and ``tombstone cdc-check``."""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource

from tombstone.cdc.bridge import CdcBridge
from tombstone.cdc.checker import Finding, check_connector, check_coverage, load_connector_config
from tombstone.cdc.checker_tables import check_tables
from tombstone.cdc.config import BridgeConfig, load_bridge_config
from tombstone.cdc.metrics import BridgeMetrics
from tombstone.errors import ConfigError
from tombstone.inventory import default_inventory_path, load_inventory
from tombstone.metrics import HealthState, MetricsServer
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)


def compacted_topics(kafka: KafkaSettings, topics: list[str], timeout_s: float = 3.0) -> set[str] | None:
    """Return the ``topics`` that exist with a compacting cleanup.policy; None if unknown."""
    admin = AdminClient(kafka.client_config())
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics if t in existing]
        if not resources:
            return None
        result = set()
        for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
            policy = future.result(timeout=timeout_s).get("cleanup.policy")
            if policy is not None and "compact" in (policy.value or ""):
                result.add(resource.name)
        return result
    except Exception as exc:  # the checker only advises, so a broker error is not fatal
        logger.debug("Cannot read topic configs for the checker: %s", exc)
        return None


def run_checks(config: BridgeConfig, kafka: KafkaSettings | None = None,
               connection: Any = None) -> list[Finding]:
    """Run every check that the given inputs allow."""
    findings: list[Finding] = []
    connector: dict[str, str] = {}
    compacted = None
    if config.bridge.connector_config:
        connector = load_connector_config(config.bridge.connector_config)
        compacted = compacted_topics(kafka, config.topics) if kafka is not None else None
        findings += check_connector(connector, compacted)
        findings += check_coverage(connector, config)
    if connection is not None:
        creates_compacted = connector.get("topic.creation.default.cleanup.policy") == "compact"
        findings += check_tables(connection, config, connector, bool(compacted) or creates_compacted)
    return findings


def log_findings(findings: list[Finding]) -> None:
    for finding in findings:
        level = logging.ERROR if finding.level == "error" else logging.WARNING
        logger.log(level, "%s", finding)


def run_bridge(config_path: str, metrics_port: int | None, stop: threading.Event) -> int:
    """Load and check the config, serve metrics and run the bridge until ``stop`` is set."""
    config = load_bridge_config(config_path)
    inventory_path = default_inventory_path()
    if inventory_path.exists():
        config.check_inventory(load_inventory(inventory_path))
    else:
        logger.warning("No inventory at %s; cannot check the bridge's data classes", inventory_path)
    kafka = KafkaSettings()
    kafka.resolved_bootstrap()
    log_findings(run_checks(config, kafka))
    metrics = BridgeMetrics(config.bridge.name)
    health = HealthState()
    port = config.bridge.metrics_port if metrics_port is None else metrics_port
    server = None
    if port is not None:
        try:
            server = MetricsServer(metrics.registry, health, port, config.bridge.metrics_host)
        except OSError as exc:
            raise ConfigError(
                f"Cannot serve metrics on {config.bridge.metrics_host}:{port}: {exc.strerror}. "
                "Give the bridge another port with --metrics-port (0 picks a free port)."
            ) from None
        server.start()
    try:
        CdcBridge(config, kafka, metrics=metrics, health=health, stop=stop).run()
    finally:
        if server is not None:
            server.stop()
    return 0


def run_check(config_path: str, dsn: str | None) -> int:
    """Print findings; exit 1 when any would lose deletes, else 0."""
    config = load_bridge_config(config_path)
    connection = None
    if dsn:
        import psycopg

        try:
            connection = psycopg.connect(dsn, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise ConfigError(f"Cannot connect to the source database to check tables: {exc}") from None
    kafka: KafkaSettings | None = KafkaSettings()
    try:
        kafka.resolved_bootstrap()  # type: ignore[union-attr]
    except ConfigError:
        print("No Kafka broker configured: the topics' cleanup policy is not checked.")
        kafka = None
    try:
        findings = run_checks(config, kafka, connection)
    finally:
        if connection is not None:
            connection.close()
    for finding in findings:
        print(finding)
    if not findings:
        print(f"No setting found that drops deletes ({len(config.tables)} tables checked"
              f"{'' if dsn else '; give --dsn to check replica identity'}).")
    return 1 if any(f.level == "error" for f in findings) else 0
