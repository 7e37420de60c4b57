"""Legal holds: subjects whose data must stay, whatever deletion is requested.

Holds live on the compacted topic ``deletion.holds``: key = subject key, value = a JSON
``Hold``; a Kafka tombstone releases the hold. Workers read the whole topic and keep the
latest value per key, and ``tombstone hold`` places, releases and lists holds.
"""

from __future__ import annotations

import logging
from datetime import datetime

from confluent_kafka import Producer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tombstone.errors import RetriableKafkaError
from tombstone.kafka.producer import DurableProducer, producer_config
from tombstone.kafka.reader import TopicReader
from tombstone.models import parse_subject_key, utc_now
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)


class Hold(BaseModel):
    """A legal hold: the basis for keeping a subject's data, and who placed it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    legal_basis: str = Field(min_length=3, max_length=200)
    placed_by: str = Field(min_length=1, max_length=256)
    placed_at: datetime = Field(default_factory=utc_now)
    until: datetime | None = None


class HoldBook:
    """The topic of legal holds as a table by subject, refreshed by ``refresh``."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._reader = TopicReader(kafka, [kafka.holds_topic], client_id="tombstone-holds")
        self._topic = kafka.holds_topic
        self.holds: dict[str, Hold] = {}
        self._warned = False

    def refresh(self, timeout_s: float = 10.0) -> None:
        """Read new hold records. A missing topic means that no hold was placed yet.

        Raises:
            RetriableKafkaError: the topic exists but cannot be read now. The caller must not
                delete anything meanwhile, because a hold it has not seen may apply.
        """
        try:
            for message in self._reader.read_new(timeout_s):
                self._apply(message.key(), message.value())
        except RetriableKafkaError as exc:
            if exc.code != "UNKNOWN_TOPIC_OR_PART":
                raise
            if not self._warned:
                logger.warning("The legal holds topic %s does not exist; no subject is held", self._topic)
                self._warned = True

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        subject = key.decode("utf-8", "replace")
        if value is None:
            self.holds.pop(subject, None)
            return
        try:
            self.holds[subject] = Hold.model_validate_json(value)
        except ValidationError:
            # A malformed hold still holds: keeping data is the safe side of a doubt.
            logger.error("A hold record on %s is not valid; the subject stays held until it is replaced",
                         self._topic)
            self.holds[subject] = Hold(legal_basis="invalid hold record", placed_by="unknown")

    def get(self, subject_key: str) -> Hold | None:
        hold = self.holds.get(subject_key)
        if hold is not None and hold.until is not None and hold.until <= utc_now():
            return None
        return hold

    def close(self) -> None:
        self._reader.close()


def place_hold(kafka: KafkaSettings, subject_key: str, hold: Hold) -> None:
    """Write a hold and wait for the broker's confirmation."""
    parse_subject_key(subject_key)
    _write(kafka, subject_key, hold.model_dump_json().encode("utf-8"))


def release_hold(kafka: KafkaSettings, subject_key: str) -> None:
    """Write the tombstone that releases a subject's hold, and wait for confirmation."""
    parse_subject_key(subject_key)
    _write(kafka, subject_key, None)


def _write(kafka: KafkaSettings, key: str, value: bytes | None) -> None:
    producer = DurableProducer(producer_config(kafka, "tombstone-holds"), factory=Producer)
    try:
        producer.check_reachable(kafka.holds_topic, kafka.connect_timeout_s)
        if value is None:
            producer.send_tombstone(kafka.holds_topic, key)
        else:
            producer.send(kafka.holds_topic, key, value)
        producer.confirm(kafka.delivery_timeout_s)
    finally:
        producer.close()


def list_holds(kafka: KafkaSettings) -> dict[str, Hold]:
    book = HoldBook(kafka)
    try:
        book.refresh()
        return {subject: hold for subject in sorted(book.holds) if (hold := book.get(subject))}
    finally:
        book.close()


def describe(hold: Hold) -> str:
    until = f" until {hold.until.isoformat()}" if hold.until else ""
    return f"{hold.legal_basis} (placed by {hold.placed_by} at {hold.placed_at.isoformat()}{until})"

