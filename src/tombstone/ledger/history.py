"""Every request and ack of the topics with its offset, for evidence export and verification.

An export records the end offset of each partition that it read. Keeping the offset of
every record lets a verifier rebuild the ledger as it was when the export was made, from
the records below those end offsets, however much arrived since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tombstone.errors import DecodeError
from tombstone.inventory import Inventory
from tombstone.kafka.reader import TopicReader
from tombstone.ledger.state import LedgerState
from tombstone.models import DeletionAck, DeletionRequest
from tombstone.serde import AckSerde, RequestSerde
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

# End offset per partition: one past the last record read from it.
EndOffsets = dict[int, int]


@dataclass(frozen=True)
class Located:
    """A decoded record and where it sits on its topic."""

    record: DeletionRequest | DeletionAck
    partition: int
    offset: int


@dataclass
class Snapshot:
    """The ledger built from the records below some end offsets."""

    state: LedgerState
    request_ends: EndOffsets
    proof_ends: EndOffsets


@dataclass
class LedgerHistory:
    """All requests and acks read so far, in read order, with their positions."""

    inventory: Inventory
    requests: list[Located] = field(default_factory=list)
    acks: list[Located] = field(default_factory=list)
    request_ends: EndOffsets = field(default_factory=dict)
    proof_ends: EndOffsets = field(default_factory=dict)

    def add_request(self, request: DeletionRequest, partition: int, offset: int) -> None:
        self.requests.append(Located(request, partition, offset))
        self._advance(self.request_ends, partition, offset)

    def add_ack(self, ack: DeletionAck, partition: int, offset: int) -> None:
        self.acks.append(Located(ack, partition, offset))
        self._advance(self.proof_ends, partition, offset)

    def skip(self, is_request: bool, partition: int, offset: int) -> None:
        """Count a record that carries no request or ack (a null value, an undecodable one)."""
        self._advance(self.request_ends if is_request else self.proof_ends, partition, offset)

    @staticmethod
    def _advance(ends: EndOffsets, partition: int, offset: int) -> None:
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    def snapshot(self, request_ends: EndOffsets | None = None, proof_ends: EndOffsets | None = None) -> Snapshot:
        """Build the ledger from the records below the given end offsets, or from all records when they are None.

        A partition that an end-offset map does not name contributes no records.
        """
        state = LedgerState(self.inventory)
        for located in self.requests:
            if _below(located, request_ends):
                assert isinstance(located.record, DeletionRequest)
                state.add_request(located.record)
        for located in self.acks:
            if _below(located, proof_ends):
                assert isinstance(located.record, DeletionAck)
                state.add_ack(located.record)
        return Snapshot(
            state,
            dict(self.request_ends if request_ends is None else request_ends),
            dict(self.proof_ends if proof_ends is None else proof_ends),
        )

    def request_position(self, request_id: str) -> Located | None:
        """Return the position of a request's first record, at any offset."""
        return next((r for r in self.requests if r.record.request_id == request_id), None)


def _below(located: Located, ends: EndOffsets | None) -> bool:
    return ends is None or located.offset < ends.get(located.partition, 0)


class HistoryReader:
    """Fill a ``LedgerHistory`` from the requests and proofs topics, from their beginning."""

    def __init__(self, kafka: KafkaSettings, history: LedgerHistory) -> None:
        self.kafka = kafka
        self.history = history
        self.undecodable = 0
        self._reader = TopicReader(kafka, [kafka.requests_topic, kafka.proofs_topic], "tombstone-evidence")
        self._requests = RequestSerde()
        self._acks = AckSerde()

    def refresh(self, timeout_s: float = 30.0) -> int:
        """Read both topics up to their current end, and return the number of records read.

        Raises:
            RetriableKafkaError: a topic is missing, or its end was not reached in time.
        """
        count = 0
        for message in self._reader.read_new(timeout_s):
            count += 1
            is_request = message.topic() == self.kafka.requests_topic
            partition, offset, value = message.partition(), message.offset(), message.value()
            if value is None:
                # A request closed after its proof, or a proof removed by housekeeping.
                self.history.skip(is_request, partition, offset)
                continue
            try:
                if is_request:
                    self.history.add_request(self._requests.deserialize(value), partition, offset)
                else:
                    self.history.add_ack(self._acks.deserialize(value), partition, offset)
            except DecodeError as exc:
                self.undecodable += 1
                self.history.skip(is_request, partition, offset)
                logger.warning("%s[%d]@%d is not readable as evidence (%s); the workers "
                               "dead-letter it", message.topic(), partition, offset, exc.reason)
        return count

    def close(self) -> None:
        self._reader.close()
