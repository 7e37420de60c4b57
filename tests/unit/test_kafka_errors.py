"""Classification of librdkafka error codes in ``tombstone.kafka.errors``."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from tombstone.errors import (
    DeliveryError,
    FatalKafkaError,
    KafkaClientError,
    RetriableKafkaError,
)
from tombstone.kafka.errors import (
    FATAL_CODES,
    INFO_CODES,
    PERMANENT_CODES,
    RETRIABLE_CODES,
    ErrorClass,
    classify,
    from_kafka_exception,
    to_exception,
)

CODE_SETS = {
    "INFO_CODES": INFO_CODES,
    "RETRIABLE_CODES": RETRIABLE_CODES,
    "FATAL_CODES": FATAL_CODES,
    "PERMANENT_CODES": PERMANENT_CODES,
}


def client_codes() -> dict[str, int]:
    """Every integer error code that the installed confluent_kafka.KafkaError defines."""
    return {
        name: value
        for name in dir(KafkaError)
        if not name.startswith("__")
        and isinstance(value := getattr(KafkaError, name), int)
        and not isinstance(value, bool)
    }


CLIENT_CODES = client_codes()


def test_client_defines_codes() -> None:
    # Guards the next test against passing because no code was found at all.
    assert len(CLIENT_CODES) > 100
    assert CLIENT_CODES["_MSG_TIMED_OUT"] == KafkaError._MSG_TIMED_OUT


@pytest.mark.parametrize("name", sorted(CLIENT_CODES))
def test_every_client_code_in_exactly_one_class(name: str) -> None:
    code_name = KafkaError(CLIENT_CODES[name]).name()
    classes = [set_name for set_name, codes in CODE_SETS.items() if code_name in codes]

    assert classes != [], f"{name} ({CLIENT_CODES[name]}) is not classified; add it to one set"
    assert len(classes) == 1, f"{name} is in {classes}; keep it in one set"


def test_every_listed_code_exists_in_client() -> None:
    known = {KafkaError(code).name() for code in CLIENT_CODES.values()}

    for set_name, codes in CODE_SETS.items():
        assert codes - known == set(), f"{set_name} lists codes the client does not define"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError._PARTITION_EOF, ErrorClass.INFO),
        (KafkaError._MSG_TIMED_OUT, ErrorClass.RETRIABLE),
        (KafkaError._TRANSPORT, ErrorClass.RETRIABLE),
        (KafkaError.NOT_LEADER_FOR_PARTITION, ErrorClass.RETRIABLE),
        (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorClass.FATAL),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, ErrorClass.PERMANENT),
        (KafkaError.MSG_SIZE_TOO_LARGE, ErrorClass.PERMANENT),
    ],
)
def test_classify_known_codes(code: int, expected: ErrorClass) -> None:
    assert classify(KafkaError(code, "msg")) is expected


@pytest.mark.parametrize(
    "code",
    [KafkaError._FATAL, KafkaError._TRANSPORT, KafkaError.TOPIC_AUTHORIZATION_FAILED],
)
def test_classify_fatal_flag_wins(code: int) -> None:
    assert classify(KafkaError(code, "msg", fatal=True)) is ErrorClass.FATAL


def test_to_exception_fatal() -> None:
    error = to_exception(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True), "producing")

    assert type(error) is FatalKafkaError
    assert error.code == "_FATAL"
    assert "producing" in str(error)
    assert "producer fenced" in str(error)


def test_to_exception_fatal_flag_on_retriable_code() -> None:
    error = to_exception(KafkaError(KafkaError._TRANSPORT, "msg", fatal=True), "producing")

    assert type(error) is FatalKafkaError


def test_to_exception_retriable() -> None:
    error = to_exception(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out", retriable=True), "producing")

    assert type(error) is RetriableKafkaError
    assert error.code == "_MSG_TIMED_OUT"


def test_to_exception_permanent() -> None:
    error = to_exception(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"), "producing")

    assert type(error) is KafkaClientError
    assert error.code == "TOPIC_AUTHORIZATION_FAILED"


def test_to_exception_info_is_plain_client_error() -> None:
    error = to_exception(KafkaError(KafkaError._PARTITION_EOF, "end"), "reading")

    assert type(error) is KafkaClientError


def test_to_exception_never_returns_delivery_error() -> None:
    # DeliveryError is raised by the producer about a record, never from a bare code.
    for code in CLIENT_CODES.values():
        assert not isinstance(to_exception(KafkaError(code, "msg"), "producing"), DeliveryError)


def test_from_kafka_exception_keeps_class() -> None:
    exc = KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))

    error = from_kafka_exception(exc, "listing topics")

    assert type(error) is RetriableKafkaError
    assert error.code == "_ALL_BROKERS_DOWN"


def test_from_kafka_exception_without_kafka_error() -> None:
    error = from_kafka_exception(KafkaException("plain text"), "listing topics")

    assert type(error) is KafkaClientError
    assert error.code is None
    assert "listing topics" in str(error)
