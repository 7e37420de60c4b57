"""Shared fixtures. The Kafka broker comes from, in order of preference:

1. ``KAFKA_BOOTSTRAP_SERVERS`` when it is set (bring your own broker);
2. testcontainers, when a Docker engine responds to a ping;
3. the local broker from Maven jars, started once per test session.

A broker that cannot start fails the tests that need it with the reason; they are never
skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

# The PostgreSQL and Redis servers that `deploy/local/services.sh start` runs for tests.
os.environ.setdefault("TOMBSTONE_PG_PASSWORD", "tombstone")
os.environ.setdefault("TOMBSTONE_PG_PORT", "55432")
os.environ.setdefault("TOMBSTONE_REDIS_URL", "redis://127.0.0.1:56379/0")


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # any failure means: no usable engine
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Kafka 4.x broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from tombstone.broker.local import LocalBroker
    from tombstone.errors import BrokerRuntimeError

    broker = LocalBroker(tmp_path_factory.mktemp("kafka-broker"))
    try:
        bootstrap = broker.start(timeout_s=120)
    except BrokerRuntimeError as exc:
        pytest.fail(f"The local Kafka broker could not start, so broker tests cannot run: {exc}",
                    pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Names for topics and groups that no other test uses."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:12]}"


TEST_INVENTORY = """
[data_classes.customer_profile]
subject_types = ["customer"]
stores = [{ store = "operational-db", action = "delete" }]
"""


@pytest.fixture
def kafka_env(kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for one test: its own topics, and an inventory of one SQLite store."""
    inventory = tmp_path_factory.mktemp("inventory") / "inventory.toml"
    inventory.write_text(TEST_INVENTORY, encoding="utf-8")
    env = {
        "TOMBSTONE_INVENTORY": str(inventory),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOMBSTONE_REQUESTS_TOPIC": unique_name("requests"),
        "TOMBSTONE_PROOFS_TOPIC": unique_name("proofs"),
        "TOMBSTONE_DEAD_LETTER_TOPIC": unique_name("dead-letters"),
        "TOMBSTONE_HOLDS_TOPIC": unique_name("holds"),
        "TOMBSTONE_PSEUDONYM_KEY": "test-key-0123456789abcdef0123456789",
        "TOMBSTONE_PSEUDONYM_KEY_ID": "test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def pipeline_topics(kafka_env: dict[str, str]) -> dict[str, str]:
    """Create this test's pipeline topics with the production settings."""
    from tombstone.kafka.admin import ensure_topics, pipeline_topics
    from tombstone.settings import KafkaSettings

    kafka = KafkaSettings()
    ensure_topics(AdminClient(kafka.client_config()), pipeline_topics(kafka, partitions=2))
    return kafka_env


@pytest.fixture
def create_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Create a topic and return its name."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def create(name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
        futures[name].result(30)
        return name

    return create


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOMBSTONE_DATA_DIR", str(tmp_path))
    return tmp_path
