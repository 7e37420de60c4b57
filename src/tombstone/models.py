"""Pydantic models that mirror the Avro schemas in ``schemas/``.

The Avro schemas are the wire contract. These models validate values before they are
encoded and after they are decoded; ``tests/unit/test_models_match_schemas.py`` keeps the
field names and optionality of both in step.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tombstone.errors import InvalidRequestError

MAX_SUBJECT_BYTES = 256
MAX_CUTOFF_SKEW = timedelta(minutes=5)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CODE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class RequestAction(enum.StrEnum):
    DELETE = "DELETE"
    CANCEL = "CANCEL"


class AckStatus(enum.StrEnum):
    DELETED = "DELETED"
    ABSENT = "ABSENT"
    HIDDEN = "HIDDEN"
    PURGED = "PURGED"
    ANONYMIZED = "ANONYMIZED"
    RETAINED = "RETAINED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


TERMINAL_STATUSES = frozenset(
    {
        AckStatus.DELETED,
        AckStatus.ABSENT,
        AckStatus.PURGED,
        AckStatus.ANONYMIZED,
        AckStatus.RETAINED,
        AckStatus.CANCELLED,
        AckStatus.REJECTED,
    }
)


def check_subject_part(value: str, what: str = "subject id") -> str:
    """Reject a subject part that stores, logs or Kafka keys cannot carry safely."""
    if not value:
        raise InvalidRequestError(f"The {what} is empty. Give a non-empty {what}.")
    size = len(value.encode("utf-8"))
    if size > MAX_SUBJECT_BYTES:
        raise InvalidRequestError(
            f"The {what} {value[:40]!r}... is {size} UTF-8 bytes long; "
            f"the maximum is {MAX_SUBJECT_BYTES}. Use a shorter identifier."
        )
    match = _CONTROL_CHARACTERS.search(value)
    if match:
        raise InvalidRequestError(
            f"The {what} {value!r} contains the control character {match.group()!r} "
            f"at position {match.start()}. Remove control characters and NUL from the {what}."
        )
    return value


def _check_code(value: str) -> str:
    if not _CODE.match(value):
        raise ValueError(
            f"{value!r} is not a valid code: use 1 to 64 lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter"
        )
    return value


def _check_subject_id(value: str) -> str:
    try:
        return check_subject_part(value)
    except InvalidRequestError as exc:
        raise ValueError(str(exc)) from None


Code = Annotated[str, AfterValidator(_check_code)]
SubjectId = Annotated[str, AfterValidator(_check_subject_id)]


def utc_now() -> datetime:
    # Avro timestamp-millis keeps milliseconds only, so values are truncated on creation
    # and compare equal after a round trip.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class DeletionRequest(BaseModel):
    """A promise to delete one subject's data of one data class from every store."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    request_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    action: RequestAction = RequestAction.DELETE
    subject_type: Code
    subject_id: SubjectId
    data_class: Code
    reason: Code
    requested_at: AwareDatetime = Field(default_factory=utc_now)
    cutoff_at: AwareDatetime = Field(default_factory=utc_now)
    cutoff_version: int | None = None
    requested_by: str = Field(min_length=1, max_length=256)
    grace_period_ms: int = Field(default=0, ge=0)
    policy_version: str = "1"
    trace_id: str | None = None

    @model_validator(mode="after")
    def _cutoff_not_after_request(self) -> DeletionRequest:
        # A cut-off later than the request would delete data written after the promise was
        # made. The allowance covers clock skew between the data source and the requester.
        if self.cutoff_at > self.requested_at + MAX_CUTOFF_SKEW:
            raise ValueError(
                f"cutoff_at {self.cutoff_at.isoformat()} is later than requested_at "
                f"{self.requested_at.isoformat()} by more than {MAX_CUTOFF_SKEW}"
            )
        return self

    @property
    def subject_key(self) -> str:
        """Key of the subject in stores and proofs, such as ``customer:17``."""
        return f"{self.subject_type}:{self.subject_id}"

    @property
    def kafka_key(self) -> str:
        """Key on the requests topic: subject key and data class, such as ``customer:17/billing``.

        Compaction keeps one value per key. Keying by subject alone would let a request for
        one data class replace an unread request for another class of the same subject.
        """
        return f"{self.subject_key}/{self.data_class}"


class DeletionAck(BaseModel):
    """Proof that one store handled one request; never payload, never a raw subject id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    store: Code
    worker: str
    status: AckStatus
    items_affected: int = Field(ge=0)
    remaining: int = Field(ge=0)
    applied_at: datetime = Field(default_factory=utc_now)
    data_class: Code
    policy_version: str = "1"
    subject_pseudonym: str
    pseudonym_key_id: str
    retained_until: datetime | None = None
    legal_basis: str | None = None
    reason_code: str | None = None
    reconcile: bool = False

    @property
    def proof_key(self) -> str:
        """Key of this ack on the proofs topic."""
        return f"{self.request_id}/{self.store}"


class DeadLetterHeader(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    value: bytes | None = None


class DeadLetter(BaseModel):
    """A record that can never be processed, kept whole with its source position."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Code
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: datetime | None = None
    key: bytes | None = None
    value: bytes | None = None
    value_size: int | None = None
    value_sha256: str | None = None
    headers: list[DeadLetterHeader] = Field(default_factory=list)
    worker: str
    dead_lettered_at: datetime = Field(default_factory=utc_now)


def parse_subject_key(subject_key: str) -> tuple[str, str]:
    """Split ``type:id`` into its parts, rejecting values that cannot be a subject.

    Raises:
        InvalidRequestError: the key has no ``:``, or a part is empty, too long or contains
            control characters.
    """
    # The byte limit applies to the id alone, as in DeletionRequest.subject_id, so every
    # subject that a valid request carries can be parsed back from its key.
    subject_type, sep, subject_id = subject_key.partition(":")
    if not sep or not subject_type:
        raise InvalidRequestError(
            f"The subject {subject_key!r} is not of the form TYPE:ID. "
            "Write it as, for example, customer:17."
        )
    if not _CODE.match(subject_type):
        raise InvalidRequestError(
            f"The subject type {subject_type!r} in {subject_key!r} is invalid: use lowercase "
            "letters, digits, '_', '.' or '-', starting with a letter."
        )
    check_subject_part(subject_id)
    return subject_type, subject_id
