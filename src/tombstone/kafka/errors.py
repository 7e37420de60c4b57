"""The one place where librdkafka error codes are classified.

Each ``confluent_kafka.KafkaError`` code belongs to exactly one class:

- ``INFO``: not a failure (end of partition, nothing to commit).
- ``RETRIABLE``: the same call may succeed later; back off and repeat.
- ``FATAL``: the client instance is unusable; rebuild it and resend what was unconfirmed.
- ``PERMANENT``: repeating the call cannot help (authorization, invalid config, a record
  the broker rejects); surface it to an operator.

``tests/unit/test_kafka_errors.py`` fails when the installed client knows a code that is
not listed here, so a new librdkafka release cannot slip an unclassified code through.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from tombstone.errors import FatalKafkaError, KafkaClientError, RetriableKafkaError


class ErrorClass(enum.Enum):
    INFO = "info"
    RETRIABLE = "retriable"
    FATAL = "fatal"
    PERMANENT = "permanent"


INFO_CODES = frozenset(
    """NO_ERROR _PARTITION_EOF _NO_OFFSET _NOOP _ASSIGN_PARTITIONS _REVOKE_PARTITIONS
    _IN_PROGRESS _PREV_IN_PROGRESS _NODE_UPDATE _AUTO_OFFSET_RESET""".split()
)

RETRIABLE_CODES = frozenset(
    """_TRANSPORT _RESOLVE _MSG_TIMED_OUT _ALL_BROKERS_DOWN _TIMED_OUT _QUEUE_FULL
    _ISR_INSUFF _WAIT_COORD _TIMED_OUT_QUEUE _WAIT_CACHE _INTR _RETRY _PURGE_QUEUE
    _PURGE_INFLIGHT _MAX_POLL_EXCEEDED _UNKNOWN_BROKER _ASSIGNMENT_LOST _DESTROY_BROKER
    _UNKNOWN_PARTITION _UNKNOWN_TOPIC _OUTDATED _PARTIAL _UNDERFLOW _CRIT_SYS_RESOURCE
    LEADER_NOT_AVAILABLE NOT_LEADER_FOR_PARTITION REQUEST_TIMED_OUT BROKER_NOT_AVAILABLE
    REPLICA_NOT_AVAILABLE NETWORK_EXCEPTION COORDINATOR_LOAD_IN_PROGRESS
    COORDINATOR_NOT_AVAILABLE NOT_COORDINATOR NOT_ENOUGH_REPLICAS
    NOT_ENOUGH_REPLICAS_AFTER_APPEND REBALANCE_IN_PROGRESS ILLEGAL_GENERATION
    UNKNOWN_MEMBER_ID NOT_CONTROLLER CONCURRENT_TRANSACTIONS KAFKA_STORAGE_ERROR
    UNKNOWN_TOPIC_OR_PART FETCH_SESSION_ID_NOT_FOUND INVALID_FETCH_SESSION_EPOCH
    FENCED_LEADER_EPOCH UNKNOWN_LEADER_EPOCH OFFSET_NOT_AVAILABLE
    PREFERRED_LEADER_NOT_AVAILABLE ELIGIBLE_LEADERS_NOT_AVAILABLE UNSTABLE_OFFSET_COMMIT
    THROTTLING_QUOTA_EXCEEDED REASSIGNMENT_IN_PROGRESS MEMBER_ID_REQUIRED
    FENCED_MEMBER_EPOCH STALE_MEMBER_EPOCH UNKNOWN_TOPIC_ID INCONSISTENT_TOPIC_ID
    STALE_BROKER_EPOCH LISTENER_NOT_FOUND UNKNOWN_PRODUCER_ID TRANSACTION_ABORTABLE
    REBOOTSTRAP_REQUIRED SHARE_SESSION_NOT_FOUND INVALID_SHARE_SESSION_EPOCH
    SHARE_SESSION_LIMIT_REACHED UNKNOWN_CONTROLLER_ID""".split()
)

FATAL_CODES = frozenset(
    """_FATAL _FENCED _DESTROY _INCONSISTENT _GAPLESS_GUARANTEE OUT_OF_ORDER_SEQUENCE_NUMBER
    INVALID_PRODUCER_EPOCH INVALID_PRODUCER_ID_MAPPING PRODUCER_FENCED
    TRANSACTION_COORDINATOR_FENCED FENCED_INSTANCE_ID UNRELEASED_INSTANCE_ID
    INVALID_TXN_STATE _STATE""".split()
)

PERMANENT_CODES = frozenset(
    """_BAD_MSG _BAD_COMPRESSION _FAIL _FS _INVALID_ARG _SSL _UNKNOWN_GROUP
    _EXISTING_SUBSCRIPTION _CONFLICT _UNKNOWN_PROTOCOL _NOT_IMPLEMENTED _AUTHENTICATION
    _UNSUPPORTED_FEATURE _KEY_SERIALIZATION _VALUE_SERIALIZATION _KEY_DESERIALIZATION
    _VALUE_DESERIALIZATION _READ_ONLY _NOENT _INVALID_TYPE _NOT_CONFIGURED _APPLICATION
    _LOG_TRUNCATION _INVALID_DIFFERENT_RECORD UNKNOWN OFFSET_OUT_OF_RANGE INVALID_MSG
    INVALID_MSG_SIZE MSG_SIZE_TOO_LARGE STALE_CTRL_EPOCH OFFSET_METADATA_TOO_LARGE
    TOPIC_EXCEPTION RECORD_LIST_TOO_LARGE INVALID_REQUIRED_ACKS INCONSISTENT_GROUP_PROTOCOL
    INVALID_GROUP_ID INVALID_SESSION_TIMEOUT INVALID_COMMIT_OFFSET_SIZE
    TOPIC_AUTHORIZATION_FAILED GROUP_AUTHORIZATION_FAILED CLUSTER_AUTHORIZATION_FAILED
    INVALID_TIMESTAMP UNSUPPORTED_SASL_MECHANISM ILLEGAL_SASL_STATE UNSUPPORTED_VERSION
    TOPIC_ALREADY_EXISTS INVALID_PARTITIONS INVALID_REPLICATION_FACTOR
    INVALID_REPLICA_ASSIGNMENT INVALID_CONFIG INVALID_REQUEST UNSUPPORTED_FOR_MESSAGE_FORMAT
    POLICY_VIOLATION DUPLICATE_SEQUENCE_NUMBER INVALID_TRANSACTION_TIMEOUT
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED SECURITY_DISABLED OPERATION_NOT_ATTEMPTED
    LOG_DIR_NOT_FOUND SASL_AUTHENTICATION_FAILED DELEGATION_TOKEN_AUTH_DISABLED
    DELEGATION_TOKEN_NOT_FOUND DELEGATION_TOKEN_OWNER_MISMATCH
    DELEGATION_TOKEN_REQUEST_NOT_ALLOWED DELEGATION_TOKEN_AUTHORIZATION_FAILED
    DELEGATION_TOKEN_EXPIRED INVALID_PRINCIPAL_TYPE NON_EMPTY_GROUP GROUP_ID_NOT_FOUND
    TOPIC_DELETION_DISABLED UNSUPPORTED_COMPRESSION_TYPE GROUP_MAX_SIZE_REACHED
    ELECTION_NOT_NEEDED NO_REASSIGNMENT_IN_PROGRESS GROUP_SUBSCRIBED_TO_TOPIC INVALID_RECORD
    RESOURCE_NOT_FOUND DUPLICATE_RESOURCE UNACCEPTABLE_CREDENTIAL INCONSISTENT_VOTER_SET
    INVALID_UPDATE_VERSION FEATURE_UPDATE_FAILED PRINCIPAL_DESERIALIZATION_FAILURE
    UNSUPPORTED_ASSIGNOR MISMATCHED_ENDPOINT_TYPE UNSUPPORTED_ENDPOINT_TYPE
    UNKNOWN_SUBSCRIPTION_ID TELEMETRY_TOO_LARGE INVALID_REGISTRATION INVALID_RECORD_STATE
    FENCED_STATE_EPOCH INVALID_VOTER_KEY DUPLICATE_VOTER VOTER_NOT_FOUND
    INVALID_REGULAR_EXPRESSION STREAMS_INVALID_TOPOLOGY STREAMS_INVALID_TOPOLOGY_EPOCH
    STREAMS_TOPOLOGY_FENCED""".split()
)

# Codes with which a broker rejects a request that no ACL allows.
AUTHORIZATION_CODES = frozenset(
    """TOPIC_AUTHORIZATION_FAILED GROUP_AUTHORIZATION_FAILED CLUSTER_AUTHORIZATION_FAILED
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED DELEGATION_TOKEN_AUTHORIZATION_FAILED""".split()
)

_BY_NAME: dict[str, ErrorClass] = {}
for _codes, _class in (
    (INFO_CODES, ErrorClass.INFO),
    (RETRIABLE_CODES, ErrorClass.RETRIABLE),
    (FATAL_CODES, ErrorClass.FATAL),
    (PERMANENT_CODES, ErrorClass.PERMANENT),
):
    for _name in _codes:
        _BY_NAME[_name] = _class


def code_name(error: KafkaError) -> str:
    """Symbolic name of a KafkaError code, such as ``_MSG_TIMED_OUT``."""
    return error.name()


def classify(error: KafkaError) -> ErrorClass:
    """Class of a KafkaError; the client's own fatal flag always wins."""
    if error.fatal():
        return ErrorClass.FATAL
    known = _BY_NAME.get(code_name(error))
    if known is not None:
        return known
    # An unknown code: trust the client's retriable flag rather than guess.
    return ErrorClass.RETRIABLE if error.retriable() else ErrorClass.PERMANENT


def error_text(error: KafkaError) -> str:
    """Return the error's description without a final period, so that a sentence can end it."""
    return error.str().rstrip(". ")


def is_permanent(code: str | None) -> bool:
    """Return True when the error code named ``code`` is in the PERMANENT class."""
    return code is not None and _BY_NAME.get(code) is ErrorClass.PERMANENT


def principal_of(config: Mapping[str, Any]) -> str:
    """Name the principal that a librdkafka configuration authenticates as, for messages."""
    username = config.get("sasl.username")
    if username:
        return f"User:{username}"
    if str(config.get("security.protocol", "PLAINTEXT")).upper() == "SSL":
        return "the principal of this client's TLS certificate"
    return "User:ANONYMOUS"


def authorization_hint(code: str | None, principal: str, operation: str, resource_type: str,
                       resource_name: str, *, prefixed: bool = False) -> str:
    """Explain a denied request and name the missing ACL, or return "" for other codes.

    ``operation`` is a Kafka ACL operation such as ``WRITE``. ``resource_type`` is ``topic``,
    ``group`` or ``cluster``. ``prefixed`` marks ``resource_name`` as a prefix of the names to allow.
    """
    if code not in AUTHORIZATION_CODES:
        return ""
    pattern = " --resource-pattern-type prefixed" if prefixed else ""
    named = f"{resource_type}s named {resource_name}..." if prefixed else f"{resource_type} {resource_name}"
    # kafka-acls names the cluster resource with a bare --cluster.
    option = "--cluster" if resource_type == "cluster" else f"--{resource_type} {resource_name}"
    operation_option = "".join(word.title() for word in operation.split("_"))
    return (
        f" The broker denied {principal} {operation} on {named} because no ACL allows it."
        f" Connect as a principal that has this ACL, or have a Kafka admin add it, for example"
        f" `kafka-acls --add --allow-principal {principal} --operation {operation_option}{pattern} {option}`."
    )


def connection_hint(config: Mapping[str, Any], errors: Iterable[KafkaError]) -> str:
    """Explain why a client could not talk to the brokers, from the errors it reported.

    ``errors`` are what the client's ``error_cb`` received, such as ``_AUTHENTICATION``
    for a wrong password or ``_SSL`` for a broker certificate that the CA does not verify.
    Returns "" when nothing points at the security settings.
    """
    by_code = {code_name(error): error for error in errors}
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    for code in ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"):
        if code in by_code:
            return (f" Authentication as {principal_of(config)} failed: {error_text(by_code[code])}."
                    " Check TOMBSTONE_SASL_USERNAME, TOMBSTONE_SASL_PASSWORD and TOMBSTONE_SASL_MECHANISM.")
    if "_SSL" in by_code:
        return (f" The TLS connection failed: {error_text(by_code['_SSL'])}."
                " Check that TOMBSTONE_SSL_CA_LOCATION names the CA certificate that signed the broker's"
                " certificate, and that the bootstrap address is a name the certificate lists.")
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return (f" TOMBSTONE_SECURITY_PROTOCOL is {protocol}; if the broker's listener uses TLS, set it"
                " to SSL or SASL_SSL.")
    return ""


def to_exception(error: KafkaError, action: str) -> KafkaClientError:
    """Wrap a KafkaError in the matching ``KafkaClientError`` subclass.

    ``action`` names what was attempted, for example ``"producing to deletion.proofs"``.
    """
    message = f"Kafka error while {action}: {code_name(error)}: {error.str()}"
    if code_name(error) in AUTHORIZATION_CODES:
        message = (f"Kafka error while {action}: {code_name(error)}: {error_text(error)}. No ACL allows this"
                   " for the client's principal: connect as a principal that has the ACL, or have a Kafka"
                   " admin add it.")
    kind = classify(error)
    if kind is ErrorClass.FATAL:
        return FatalKafkaError(message, code_name(error))
    if kind is ErrorClass.RETRIABLE:
        return RetriableKafkaError(message, code_name(error))
    return KafkaClientError(message, code_name(error))


def from_kafka_exception(exc: KafkaException, action: str) -> KafkaClientError:
    """Translate a ``KafkaException`` raised by a client call."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is None:
        return KafkaClientError(f"Kafka error while {action}: {exc}")
    return to_exception(error, action)
