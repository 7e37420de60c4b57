"""Subject keys (``TYPE:ID``): ``parse_subject_key`` and ``tombstone request`` reject bad ones.

The CLI must reject a bad subject before it creates a Kafka client. Each CLI test points
KAFKA_BOOTSTRAP_SERVERS at 127.0.0.1:1, where nothing listens, so a connection attempt
would end in a different error and exit status 1, and records every producer it creates.
"""

from __future__ import annotations

from typing import Any

import pytest

from tombstone import requester
from tombstone.cli import main
from tombstone.errors import InvalidRequestError
from tombstone.models import MAX_SUBJECT_BYTES, DeletionRequest, parse_subject_key

# "ä" is 2 UTF-8 bytes: 129 of them are 258 bytes but only 129 characters.
LONG_ID = "ä" * (MAX_SUBJECT_BYTES // 2 + 1)
LIMIT_ID = "ä" * (MAX_SUBJECT_BYTES // 2)

# (subject, texts that the error message must contain: the value or the part at fault)
INVALID_SUBJECTS = [
    pytest.param("", ("''", "TYPE:ID"), id="empty"),
    pytest.param("customer17", ("'customer17'", "TYPE:ID"), id="no_colon"),
    pytest.param(":17", ("':17'", "TYPE:ID"), id="empty_type"),
    pytest.param("customer:", ("subject id", "empty"), id="empty_id"),
    pytest.param(f"customer:{LONG_ID}", ("'ääää", f"{len(LONG_ID.encode())} UTF-8 bytes"),
                 id="id_too_long"),
    pytest.param("customer:17\x00", ("'17\\x00'", "'\\x00'"), id="nul"),
    pytest.param("customer:17\x7f", ("'17\\x7f'", "'\\x7f'"), id="del"),
    pytest.param("customer:17\r", ("'17\\r'", "'\\r'"), id="cr"),
    pytest.param("customer:17\n", ("'17\\n'", "'\\n'"), id="lf"),
    pytest.param("customer:1\r\n7", ("'1\\r\\n7'", "'\\r'"), id="crlf"),
    pytest.param("customer:1\t7", ("'1\\t7'", "'\\t'"), id="tab"),
    pytest.param("customer:\x1b[31m17", ("'\\x1b[31m17'", "'\\x1b'"), id="escape"),
    pytest.param("customer:17\x85", ("'17\\x85'", "'\\x85'"), id="c1_next_line"),
    pytest.param("customer:17\u2028", ("'17\\u2028'", "'\\u2028'"), id="line_separator"),
    pytest.param("cus\x00tomer:17", ("'cus\\x00tomer'",), id="nul_in_type"),
    pytest.param("cus\ntomer:17", ("'cus\\ntomer'",), id="lf_in_type"),
    pytest.param("Customer:17", ("'Customer'",), id="uppercase_type"),
]

VALID_SUBJECTS = [
    pytest.param("customer:17", ("customer", "17"), id="ascii"),
    pytest.param("customer:ÄÖ-ü", ("customer", "ÄÖ-ü"), id="umlauts"),
    pytest.param("order:2024:17", ("order", "2024:17"), id="colon_in_id"),
    pytest.param("customer:a b", ("customer", "a b"), id="space_in_id"),
    pytest.param(f"customer:{LIMIT_ID}", ("customer", LIMIT_ID), id="id_at_byte_limit"),
]


@pytest.fixture
def unreachable_kafka(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Point the CLI at 127.0.0.1:1 and return the configs of the producers it creates."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("TOMBSTONE_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("TOMBSTONE_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("TOMBSTONE_DELIVERY_TIMEOUT_S", "1")
    created: list[dict[str, Any]] = []
    real_producer = requester.Producer

    def recording_producer(config: dict[str, Any]) -> Any:
        created.append(config)
        return real_producer(config)

    monkeypatch.setattr(requester, "Producer", recording_producer)
    return created


def request_argv(subject: str) -> list[str]:
    return ["request", "--subject", subject, "--data-class", "customer_profile",
            "--reason", "user_request"]


# --- parse_subject_key ------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "fragments"), INVALID_SUBJECTS)
def test_parse_subject_key_rejects(subject: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_subject_key(subject)

    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(("subject", "parts"), VALID_SUBJECTS)
def test_parse_subject_key_accepts(subject: str, parts: tuple[str, str]) -> None:
    assert parse_subject_key(subject) == parts


def test_parse_subject_key_counts_bytes_not_characters() -> None:
    assert len(LONG_ID) < MAX_SUBJECT_BYTES
    assert len(LONG_ID.encode("utf-8")) > MAX_SUBJECT_BYTES

    with pytest.raises(InvalidRequestError):
        parse_subject_key(f"customer:{LONG_ID}")


def test_parse_subject_key_long_id_message_is_bounded() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_subject_key("customer:" + "x" * 10_000)

    assert len(str(caught.value)) < 400


@pytest.mark.parametrize(("subject", "parts"), VALID_SUBJECTS)
def test_parsed_subject_is_valid_request(subject: str, parts: tuple[str, str]) -> None:
    subject_type, subject_id = parse_subject_key(subject)
    request = DeletionRequest(subject_type=subject_type, subject_id=subject_id,
                              data_class="customer_profile", reason="user_request",
                              requested_by="cli")

    assert request.subject_key == subject


# --- tombstone request ------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "fragments"), INVALID_SUBJECTS)
def test_cli_request_rejects_subject(subject: str, fragments: tuple[str, ...],
                                     unreachable_kafka: list[dict[str, Any]],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status = main(request_argv(subject))

    captured = capsys.readouterr()
    assert status == 2
    for fragment in fragments:
        assert fragment in captured.err
    assert "127.0.0.1:1" not in captured.err
    assert captured.out == ""
    assert unreachable_kafka == []


def test_cli_request_valid_subject_reaches_kafka(unreachable_kafka: list[dict[str, Any]],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The control case: a valid subject gets past validation and fails on the connection,
    # so the rejections above cannot come from the unreachable broker.
    status = main(request_argv("customer:17"))

    captured = capsys.readouterr()
    assert status == 1
    assert "127.0.0.1:1" in captured.err
    assert captured.out == ""
    assert len(unreachable_kafka) == 1
