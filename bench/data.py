"""Deterministic benchmark records: every process builds the same requests and bytes.

A data set is named by a string. Request ``i`` of data set ``name`` always has the same
request id (a UUID 5 of the name and ``i``), subject ``customer:<i>`` and times, so the
parent and every child process produce, load and check the same records.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from tombstone.models import AckStatus, DeletionAck, DeletionRequest
from tombstone.serde import AckSerde, RequestSerde

DATA_CLASS = "customer_profile"
SUBJECT_TYPE = "customer"
_NAMESPACE = uuid.UUID("5f0c3d55-8f57-4d1c-9a54-3f4e0f2b7c11")
# Padding of the trace id, so that an encoded request is about 170 bytes, inside the
# 150 to 300 bytes of a real deletion event.
_TRACE = "0" * 56


@dataclass(frozen=True)
class DataSet:
    """``count`` requests named ``name``, all requested at ``requested_at_ms``."""

    name: str
    count: int
    requested_at_ms: int

    @property
    def requested_at(self) -> datetime:
        return datetime.fromtimestamp(self.requested_at_ms / 1000, UTC)

    @property
    def row_updated_at_ms(self) -> int:
        """Update time of every loaded row: one second before the cut-off, so it is deleted."""
        return self.requested_at_ms - 1000

    def request_id(self, index: int) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{self.name}:{index}"))

    def fields(self, index: int) -> dict[str, object]:
        """Constructor arguments of request ``index``."""
        return {
            "request_id": self.request_id(index),
            "subject_type": SUBJECT_TYPE,
            "subject_id": str(index),
            "data_class": DATA_CLASS,
            "reason": "user_request",
            "requested_by": "bench",
            "requested_at": self.requested_at,
            "cutoff_at": self.requested_at,
            "trace_id": _TRACE,
        }

    def requests(self) -> list[DeletionRequest]:
        return [DeletionRequest(**self.fields(i)) for i in range(self.count)]

    def encoded(self) -> tuple[list[bytes], list[bytes]]:
        """Record keys and Avro values of every request, as the requester writes them.

        Cached per process, because a child encodes the same data set for every round.
        """
        return _encoded(self)

    def _encode(self) -> tuple[list[bytes], list[bytes]]:
        serde = RequestSerde()
        keys, values = [], []
        for request in self.requests():
            keys.append(request.kafka_key.encode("utf-8"))
            values.append(serde.serialize(request))
        return keys, values

    def acks(self, stores: list[str]) -> tuple[list[bytes], list[bytes]]:
        """Record keys and Avro values of one DELETED ack per request and store."""
        serde = AckSerde()
        keys, values = [], []
        for index in range(self.count):
            for store in stores:
                ack = DeletionAck(
                    request_id=self.request_id(index), store=store, worker=f"{store}@bench",
                    status=AckStatus.DELETED, items_affected=1, remaining=0,
                    applied_at=self.requested_at, data_class=DATA_CLASS,
                    subject_pseudonym="0" * 64, pseudonym_key_id="bench",
                )
                keys.append(ack.proof_key.encode("utf-8"))
                values.append(serde.serialize(ack))
        return keys, values

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "count": self.count, "requested_at_ms": self.requested_at_ms}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DataSet:
        return cls(str(data["name"]), int(data["count"]), int(data["requested_at_ms"]))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def _encoded(data: DataSet) -> tuple[list[bytes], list[bytes]]:
    return data._encode()
