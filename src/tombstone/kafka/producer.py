"""Idempotent producer that reports success only for records the broker confirmed.

Three failure modes from public bug reports shape this class:

- ``produce(value=None)`` writes a real Kafka tombstone. ``send`` rejects ``None`` and
  empty bytes; a tombstone needs the explicit ``send_tombstone``.
- ``flush()`` returns the number of records still undelivered, and ignoring it lets a
  caller commit offsets for acks that were never written. ``confirm`` checks it and every
  delivery report.
- A fatal idempotent-producer error (for example OUT_OF_ORDER_SEQUENCE_NUMBER) makes the
  instance unusable. ``confirm`` rebuilds the producer and resends what was unconfirmed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tombstone.errors import DeliveryError, FatalKafkaError, KafkaClientError
from tombstone.kafka.errors import (
    ErrorClass,
    authorization_hint,
    classify,
    code_name,
    connection_hint,
    error_text,
    from_kafka_exception,
    is_permanent,
    principal_of,
)
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
ProducerFactory = Callable[[dict[str, Any]], Any]


@dataclass
class Delivery:
    """One record handed to the producer and the broker's delivery report for it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    error: KafkaError | None = None
    partition: int | None = None
    offset: int | None = None
    done: bool = False

    @property
    def confirmed(self) -> bool:
        return self.done and self.error is None


@dataclass
class _Pending:
    records: list[Delivery] = field(default_factory=list)


def producer_config(settings: KafkaSettings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """Durable producer settings: idempotence, acks=all, a bounded delivery timeout."""
    config = settings.client_config()
    config.update(
        {
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
            # The Java client's partitioner, so a key lands on the same partition whichever
            # client wrote it; compaction and tombstones rely on that.
            "partitioner": "murmur2_random",
        }
    )
    config.update(overrides)
    return config


class DurableProducer:
    """Produce records and confirm each one's delivery before the caller moves on."""

    def __init__(
        self,
        config: dict[str, Any],
        factory: ProducerFactory = Producer,
        max_rebuilds: int = 3,
    ) -> None:
        self._config = dict(config)
        self._factory = factory
        self._max_rebuilds = max_rebuilds
        self._fatal: KafkaError | None = None
        # Recent errors from error_cb, which explain a broker that cannot be reached.
        self._client_errors: deque[KafkaError] = deque(maxlen=16)
        self._pending = _Pending()
        self._producer = self._build()

    def _build(self) -> Any:
        config = dict(self._config)
        config["error_cb"] = self._on_error
        return self._factory(config)

    def _on_error(self, error: KafkaError) -> None:
        self._client_errors.append(error)
        if error.fatal():
            logger.error("Producer fatal error: %s: %s", code_name(error), error.str())
            self._fatal = error
        elif classify(error) is ErrorClass.RETRIABLE:
            # librdkafka logs the same event itself and retries; only DEBUG adds it here.
            logger.debug("Producer error (client retries): %s: %s", code_name(error), error.str())
        else:
            logger.error("Producer error: %s: %s", code_name(error), error.str())

    def send(self, topic: str, key: bytes | str | None, value: bytes, headers: Headers | None = None) -> Delivery:
        """Queue one record with a non-empty value; confirm it with ``confirm``."""
        if value is None or not isinstance(value, bytes | bytearray) or len(value) == 0:
            raise ValueError(
                f"Refusing to produce {type(value).__name__} value {value!r:.20} to {topic}: "
                "a missing or empty value would be a Kafka tombstone. "
                "Use send_tombstone to delete a key on purpose."
            )
        return self._queue(Delivery(topic, _as_bytes(key), bytes(value), headers))

    def send_tombstone(self, topic: str, key: bytes | str) -> Delivery:
        """Queue a real Kafka tombstone: the key with a null value."""
        key_bytes = _as_bytes(key)
        if not key_bytes:
            raise ValueError(f"A tombstone for {topic} needs a non-empty key.")
        return self._queue(Delivery(topic, key_bytes, None, None))

    def _queue(self, record: Delivery) -> Delivery:
        self._produce(record)
        self._pending.records.append(record)
        return record

    def _produce(self, record: Delivery) -> None:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            record.error = error
            record.done = True
            if error is None:
                record.partition = message.partition()
                record.offset = message.offset()
            elif error.fatal():
                self._fatal = error

        while True:
            try:
                self._producer.produce(
                    record.topic, key=record.key, value=record.value,
                    headers=record.headers, on_delivery=on_delivery,
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                self._producer.poll(0.1)
            except KafkaException as exc:
                # librdkafka remembers a denied topic and then rejects produce() at once.
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                denied = authorization_hint(code_name(error) if error else None, principal_of(self._config),
                                            "WRITE", "topic", record.topic)
                if error is not None and denied:
                    raise DeliveryError(f"Producing to {record.topic} failed: {code_name(error)}: "
                                        f"{error_text(error)}.{denied}", code_name(error)) from exc
                raise from_kafka_exception(exc, f"producing to {record.topic}") from exc

    def confirm(self, timeout_s: float) -> list[Delivery]:
        """Wait until every queued record is confirmed; return them and start afresh.

        Raises:
            DeliveryError: a record was rejected, or not confirmed within ``timeout_s``.
            FatalKafkaError: the producer failed fatally more than ``max_rebuilds`` times.
        """
        deadline = time.monotonic() + timeout_s
        rebuilds = 0
        while True:
            remaining = self._flush(max(0.0, deadline - time.monotonic()))
            if self._fatal is not None and is_permanent(code_name(self._fatal)):
                # A rebuilt producer would fail the same way, for example without an ACL.
                code = code_name(self._fatal)
                # The broker refuses an idempotent producer its producer id with this code.
                denied = (authorization_hint(code, principal_of(self._config), "IDEMPOTENT_WRITE", "cluster",
                                             "kafka-cluster")
                          if code == "CLUSTER_AUTHORIZATION_FAILED" else "")
                raise FatalKafkaError(f"Producer failed fatally: {code}: {error_text(self._fatal)}.{denied}", code)
            if self._fatal is not None:
                rebuilds += 1
                if rebuilds > self._max_rebuilds:
                    raise FatalKafkaError(
                        f"Producer failed fatally {rebuilds} times: {self._fatal.str()}",
                        code_name(self._fatal),
                    )
                self._rebuild()
                continue
            records = self._pending.records
            failed = [r for r in records if r.done and r.error is not None]
            if failed:
                self._pending = _Pending([r for r in records if not r.done])
                first = failed[0]
                raise DeliveryError(
                    f"{len(failed)} of {len(records)} records to {first.topic} were rejected: "
                    f"{code_name(first.error)}: {error_text(first.error)}."
                    + authorization_hint(code_name(first.error), principal_of(self._config), "WRITE",
                                         "topic", first.topic),
                    code_name(first.error),
                )
            if remaining > 0 or not all(r.done for r in records):
                raise DeliveryError(
                    f"{remaining} of {len(records)} records were not confirmed within "
                    f"{timeout_s:.1f} s; check that the brokers at "
                    f"{self._config.get('bootstrap.servers')} are reachable."
                    + connection_hint(self._config, self._client_errors),
                    "_MSG_TIMED_OUT",
                )
            self._pending = _Pending()
            return records

    def _flush(self, timeout_s: float) -> int:
        """Flush and return the number of records still queued.

        confluent-kafka raises a fatal error (for example an idempotent producer that the
        broker refuses a producer id) from flush() instead of passing it to error_cb. The
        error is kept in ``_fatal`` so that ``confirm`` handles it like one from a callback.
        """
        try:
            return self._producer.flush(timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or not error.fatal():
                raise from_kafka_exception(exc, "waiting for delivery reports") from exc
            logger.error("Producer fatal error: %s: %s", code_name(error), error.str())
            self._fatal = error
            return len(self._pending.records)

    def _rebuild(self) -> None:
        """Replace a fatally failed producer and resend every unconfirmed record."""
        unconfirmed = [r for r in self._pending.records if not r.confirmed]
        logger.warning(
            "Rebuilding the producer after fatal error %s; resending %d unconfirmed records",
            code_name(self._fatal) if self._fatal else "?", len(unconfirmed),
        )
        try:
            self._producer.purge()
        except (KafkaException, RuntimeError, NotImplementedError):
            pass
        self._fatal = None
        self._producer = self._build()
        for record in unconfirmed:
            record.error, record.done = None, False
            self._produce(record)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports and error callbacks."""
        self._producer.poll(timeout_s)

    def check_reachable(self, topic: str, timeout_s: float) -> None:
        """Fail fast, naming the bootstrap servers, when the topic's metadata cannot be read."""
        bootstrap = self._config.get("bootstrap.servers")
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            # list_topics does not serve callbacks, so poll to let error_cb record why it failed.
            self._producer.poll(0)
            raise KafkaClientError(
                f"Cannot reach Kafka at {bootstrap} within {timeout_s:.0f} s ({exc.args[0]}). "
                "Check KAFKA_BOOTSTRAP_SERVERS and that the broker is running."
                + connection_hint(self._config, self._client_errors)
            ) from exc
        entry = metadata.topics.get(topic)
        code = code_name(entry.error) if entry is not None and entry.error is not None else None
        denied = authorization_hint(code, principal_of(self._config), "WRITE", "topic", topic)
        if denied:
            raise KafkaClientError(f"Topic {topic} on {bootstrap}: {error_text(entry.error)}.{denied}", code)
        if entry is None or entry.error is not None:
            raise KafkaClientError(
                f"Topic {topic} is not available on {bootstrap}"
                f"{': ' + entry.error.str() if entry and entry.error else ''}. "
                "Create the topics with `tombstone topics create`."
            )

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued; return the number of records left undelivered."""
        return self._producer.flush(timeout_s)


def _as_bytes(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)
