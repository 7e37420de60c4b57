"""The ledger: follows the requests and proofs topics and returns per-store proof of requests."""

from __future__ import annotations

import logging

from tombstone.errors import DecodeError, InvalidRequestError
from tombstone.inventory import Inventory
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.state import LedgerState, RequestView
from tombstone.models import parse_subject_key
from tombstone.pseudonym import Pseudonymizer
from tombstone.serde import AckSerde, RequestSerde
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)


class Ledger:
    """Request completion built from the topics; ``refresh`` reads what arrived since."""

    def __init__(self, inventory: Inventory, kafka: KafkaSettings,
                 pseudonymizer: Pseudonymizer | None = None) -> None:
        self.kafka = kafka
        self.state = LedgerState(inventory)
        self.pseudonymizer = pseudonymizer
        self._reader = TopicReader(kafka, [kafka.requests_topic, kafka.proofs_topic], "tombstone-ledger")
        self._requests = RequestSerde()
        self._acks = AckSerde()
        self.undecodable = 0

    def refresh(self, timeout_s: float = 30.0) -> int:
        """Read both topics up to their current end; return the number of records read."""
        count = 0
        for message in self._reader.read_new(timeout_s):
            count += 1
            value = message.value()
            if value is None:
                continue  # a closed request or proof removed by housekeeping
            try:
                if message.topic() == self.kafka.requests_topic:
                    self.state.add_request(self._requests.deserialize(value))
                else:
                    self.state.add_ack(self._acks.deserialize(value))
            except DecodeError as exc:
                self.undecodable += 1
                logger.warning("%s[%d]@%d is not readable by the ledger (%s); the workers "
                               "dead-letter it", message.topic(), message.partition(),
                               message.offset(), exc.reason)
        return count

    def find(self, query: str) -> list[RequestView]:
        """Views for a request id, or for every request of a subject key ``type:id``."""
        view = self.state.view(query)
        if view is not None:
            return [view]
        try:
            parse_subject_key(query)
        except InvalidRequestError:
            return []
        ids = [rid for rid, request in self.state.requests.items() if request.subject_key == query]
        return [v for rid in ids if (v := self.state.view(rid)) is not None]

    def pseudonym_of(self, view: RequestView) -> str | None:
        if self.pseudonymizer is None:
            return None
        return self.pseudonymizer.pseudonym(view.request.subject_key)

    def summary(self) -> dict[str, int]:
        views = self.state.views()
        return {
            "requests": len(views),
            "complete": sum(1 for v in views if v.complete),
            "pending": sum(1 for v in views if not v.complete),
        }

    def close(self) -> None:
        self._reader.close()
