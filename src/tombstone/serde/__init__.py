"""Wire formats: Avro single-object encoding of the project's records."""

from tombstone.serde.codec import AvroCodec, load_schema
from tombstone.serde.records import AckSerde, DeadLetterSerde, RequestSerde

__all__ = ["AckSerde", "AvroCodec", "DeadLetterSerde", "RequestSerde", "load_schema"]
