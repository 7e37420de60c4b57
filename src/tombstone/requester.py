"""Issue deletion requests: the library call behind ``tombstone request``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from confluent_kafka import Producer

from tombstone.kafka.producer import DurableProducer, ProducerFactory, producer_config
from tombstone.models import DeletionRequest, parse_subject_key, utc_now
from tombstone.serde import RequestSerde
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)


def new_request(
    subject: str,
    data_class: str,
    reason: str,
    requested_by: str,
    *,
    cutoff_at: datetime | None = None,
    grace_period_ms: int = 0,
    trace_id: str | None = None,
) -> DeletionRequest:
    """Build a validated request for a subject key such as ``customer:17``.

    Raises:
        InvalidRequestError: the subject is malformed.
        pydantic.ValidationError: another field is invalid.
    """
    subject_type, subject_id = parse_subject_key(subject)
    now = utc_now()
    return DeletionRequest(
        subject_type=subject_type,
        subject_id=subject_id,
        data_class=data_class,
        reason=reason,
        requested_by=requested_by,
        requested_at=now,
        cutoff_at=cutoff_at or now,
        grace_period_ms=grace_period_ms,
        trace_id=trace_id,
    )


class Requester:
    """Produce requests with an idempotent producer and return only after confirmation."""

    def __init__(self, kafka: KafkaSettings, client_id: str = "tombstone-requester",
                 factory: ProducerFactory | None = None) -> None:
        self.kafka = kafka
        config = producer_config(kafka, client_id)
        self._producer = DurableProducer(config, factory=factory or Producer)
        self._serde = RequestSerde()
        self._checked = False

    def submit(self, requests: Sequence[DeletionRequest]) -> list[DeletionRequest]:
        """Produce every request; return them once the broker confirmed all.

        Raises:
            KafkaClientError: the broker is unreachable or the topic is missing.
            DeliveryError: a request was not confirmed; it may or may not be written,
                and producing it again is safe because workers apply by request id.
        """
        if not self._checked:
            self._producer.check_reachable(self.kafka.requests_topic, self.kafka.connect_timeout_s)
            self._checked = True
        for request in requests:
            self._producer.send(self.kafka.requests_topic, request.kafka_key, self._serde.serialize(request))
        self._producer.confirm(self.kafka.delivery_timeout_s)
        for request in requests:
            logger.info("Request %s for data class %s confirmed", request.request_id, request.data_class)
        return list(requests)

    def close(self) -> None:
        self._producer.close()
