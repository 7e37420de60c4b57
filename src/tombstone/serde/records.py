"""Typed serializers: pydantic model <-> Avro single-object bytes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from tombstone.errors import DecodeError
from tombstone.models import DeadLetter, DeletionAck, DeletionRequest
from tombstone.serde.codec import AvroCodec, load_schema

ModelT = TypeVar("ModelT", bound=BaseModel)


class ModelSerde(Generic[ModelT]):
    """Encode and decode one model type with the matching Avro schema."""

    model: type[ModelT]
    schema_name: str

    def __init__(self, writer_schemas: Iterable[Mapping[str, Any]] = ()) -> None:
        self.codec = AvroCodec(load_schema(self.schema_name), writer_schemas)

    def serialize(self, record: ModelT) -> bytes:
        """Encode a validated model; never returns ``None`` or empty bytes."""
        if not isinstance(record, self.model):
            raise TypeError(
                f"Expected a {self.model.__name__} to serialize, got {type(record).__name__}. "
                "A Kafka tombstone is produced by an explicit tombstone call, never by a serializer."
            )
        return self.codec.encode(record.model_dump(mode="python"))

    def deserialize(self, value: bytes | None) -> ModelT:
        """Decode and validate; raises ``DecodeError`` with a reason code."""
        data = self.codec.decode(value)
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise DecodeError(
                "invalid_field", f"Field {field!r} is invalid: {first['msg']}."
            ) from None


class RequestSerde(ModelSerde[DeletionRequest]):
    model = DeletionRequest
    schema_name = "deletion_request"


class AckSerde(ModelSerde[DeletionAck]):
    model = DeletionAck
    schema_name = "deletion_ack"


class DeadLetterSerde(ModelSerde[DeadLetter]):
    model = DeadLetter
    schema_name = "dead_letter"
