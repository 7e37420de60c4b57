"""PostgreSQL store parts that need no server: id parsing, cut-off conversion, error text."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tombstone.errors import PermanentRecordError
from tombstone.models import DeletionRequest
from tombstone.spec import TableMapping
from tombstone.stores.base import cutoff_ms
from tombstone.stores.binding import parse_integer_id, parse_uuid_id
from tombstone.stores.postgres import _describe
from tombstone.stores.postgres_tables import TableColumns, reject_nul

MAPPING = TableMapping(table="customer", data_class="customer_profile", subject_type="customer",
                       subject_column="customer_id", subject_id_type="integer")
CUTOFF = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))


def make_request(subject_id: str = "17") -> DeletionRequest:
    return DeletionRequest(subject_type="customer", subject_id=subject_id, data_class="customer_profile",
                           reason="user_request", requested_by="test", cutoff_at=CUTOFF)


@pytest.mark.parametrize("bits, text, value", [
    (16, "32767", 32767), (16, "-32768", -32768), (16, "32768", None),
    (32, str(2**31 - 1), 2**31 - 1), (32, str(2**31), None), (32, str(-(2**31) - 1), None),
    (64, str(2**63 - 1), 2**63 - 1), (64, str(2**63), None),
])
def test_parse_integer_id_bits_range(bits: int, text: str, value: int | None) -> None:
    assert parse_integer_id(text, bits) == value


def test_parse_uuid_id_canonical_only() -> None:
    value = uuid.uuid4()

    assert parse_uuid_id(str(value)) == value
    assert parse_uuid_id(str(value).upper()) is None
    assert parse_uuid_id(value.hex) is None
    assert parse_uuid_id(f"urn:uuid:{value}") is None
    assert parse_uuid_id("17") is None


@pytest.mark.parametrize("sql_type, bits", [("smallint", 16), ("integer", 32), ("bigint", 64)])
def test_table_columns_bind_integer_range(sql_type: str, bits: int) -> None:
    columns = TableColumns(MAPPING, sql_type, "bigint")
    request = make_request(str(2 ** (bits - 1)))

    with pytest.raises(PermanentRecordError) as caught:
        columns.bind(request)

    assert caught.value.reason == "subject_id_type"
    assert caught.value.request_id == request.request_id
    assert columns.bind(make_request(str(2 ** (bits - 1) - 1))) == 2 ** (bits - 1) - 1
    assert columns.parse(str(2 ** (bits - 1))) is None


def test_table_columns_cutoff_by_type() -> None:
    request = make_request()

    assert TableColumns(MAPPING, "bigint", "bigint").cutoff(request) == cutoff_ms(request)
    assert TableColumns(MAPPING, "bigint", "timestamptz").cutoff(request) == CUTOFF
    assert TableColumns(MAPPING, "bigint", "timestamp").cutoff(request) == datetime(2025, 3, 1, 10, 0, 0, 123456)


def test_table_columns_parse_nul_none() -> None:
    assert TableColumns(MAPPING, "text", "bigint").parse("a\x00b") is None


@pytest.mark.parametrize("field, reason", [("subject_id", "subject_id_nul"), ("request_id", "request_id_nul")])
def test_reject_nul_names_request(field: str, reason: str) -> None:
    # The model rejects NUL in subject ids, so the request is copied without validation.
    request = make_request().model_copy(update={field: "a\x00b"})

    with pytest.raises(PermanentRecordError) as caught:
        reject_nul(request)

    assert caught.value.reason == reason
    assert caught.value.request_id == request.request_id


def test_describe_client_error_first_line() -> None:
    error = psycopg.OperationalError("connection failed: refused\n\tIs the server running?")

    assert _describe(error) == "OperationalError: connection failed: refused"
