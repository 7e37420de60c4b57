"""Exception tree of tombstone.

Every error that the package raises derives from ``TombstoneError``::

    TombstoneError
    ├── ConfigError              invalid settings, consumer spec or inventory
    ├── InvalidRequestError      a deletion request that can never be produced (bad subject, ...)
    ├── DecodeError              a record that can never be decoded; carries a reason code
    ├── KafkaClientError         a Kafka operation failed; carries the librdkafka error code
    │   ├── RetriableKafkaError  the same call may succeed later (broker down, timeout, ...)
    │   ├── FatalKafkaError      the client instance is unusable and must be rebuilt
    │   └── DeliveryError        a produced record was not confirmed by the broker
    ├── BrokerRuntimeError       the local development broker could not be fetched or started
    ├── ConnectRuntimeError      Kafka Connect could not be fetched or started, or a connector failed
    └── StoreError               a derived store failed
        ├── StoreUnavailableError    transient: retry with backoff, never commit past it
        ├── VerificationError        data still present after a delete: never acked
        └── PermanentRecordError     this one record can never be applied; carries a reason code
"""

from __future__ import annotations


def describe_validation_error(exc: Exception) -> str:
    """Join a pydantic ValidationError's problems as ``field: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                     for error in exc.errors())  # type: ignore[attr-defined]


class TombstoneError(Exception):
    """Root of every error raised by tombstone."""


class ConfigError(TombstoneError):
    """Invalid settings, consumer spec or inventory."""


class InvalidRequestError(TombstoneError):
    """A deletion request that can never be produced."""


class DecodeError(TombstoneError):
    """A record that can never be decoded or validated.

    ``reason`` is a short stable code (``bad_magic``, ``truncated``, ...) that goes into
    dead-letter records and metric labels.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KafkaClientError(TombstoneError):
    """A Kafka client call failed. ``code`` is the librdkafka error code name."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class RetriableKafkaError(KafkaClientError):
    """A Kafka call that may succeed when repeated."""


class FatalKafkaError(KafkaClientError):
    """The Kafka client instance is unusable and must be rebuilt."""


class DeliveryError(KafkaClientError):
    """A produced record was not confirmed by the broker."""


class BrokerRuntimeError(TombstoneError):
    """The local development broker could not be fetched, formatted or started."""


class ConnectRuntimeError(TombstoneError):
    """The local Kafka Connect worker could not be fetched or started, or a connector failed.

    Failed calls to the worker's REST API raise it too.
    """


class StoreError(TombstoneError):
    """A derived store failed."""


class StoreUnavailableError(StoreError):
    """The store failed in a way that may pass: retry with backoff."""


class VerificationError(StoreError):
    """Data for a subject is still present after its deletion was applied."""


class PermanentRecordError(StoreError):
    """A request that this store can never apply, such as a subject id it cannot hold."""

    def __init__(self, reason: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id
