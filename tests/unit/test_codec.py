"""Avro single-object framing (``AvroCodec``) and the model serializers built on it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tombstone.errors import DecodeError
from tombstone.models import (
    MAX_SUBJECT_BYTES,
    AckStatus,
    DeadLetter,
    DeadLetterHeader,
    DeletionAck,
    DeletionRequest,
    RequestAction,
)
from tombstone.serde import AckSerde, AvroCodec, DeadLetterSerde, RequestSerde, load_schema
from tombstone.serde.codec import HEADER_SIZE, MAGIC, schema_fingerprint
from tombstone.serde.records import ModelSerde

AVRO_LONG_MAX = 2**63 - 1

# --- strategies -------------------------------------------------------------------------

codes = st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True)
short_text = st.text(max_size=40)
# Subject ids without the control characters that the model rejects, within the byte limit.
subject_ids = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029"
    ),
    min_size=1,
    max_size=80,
).filter(lambda text: len(text.encode("utf-8")) <= MAX_SUBJECT_BYTES)
# Avro timestamp-millis keeps milliseconds, so generated times have no finer part.
timestamps = st.integers(min_value=0, max_value=7_258_118_400_000).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)
counts = st.integers(min_value=0, max_value=AVRO_LONG_MAX)

# A request's cut-off is never later than its request time.
request_times = st.tuples(timestamps, timestamps).map(sorted)

requests = request_times.flatmap(lambda times: st.builds(
    DeletionRequest,
    request_id=st.uuids().map(str),
    action=st.sampled_from(RequestAction),
    subject_type=codes,
    subject_id=subject_ids,
    data_class=codes,
    reason=codes,
    requested_at=st.just(times[1]),
    cutoff_at=st.just(times[0]),
    cutoff_version=st.none() | counts,
    requested_by=st.text(min_size=1, max_size=40),
    grace_period_ms=counts,
    policy_version=short_text,
    trace_id=st.none() | short_text,
))
acks = st.builds(
    DeletionAck,
    request_id=st.uuids().map(str),
    store=codes,
    worker=short_text,
    status=st.sampled_from(AckStatus),
    items_affected=counts,
    remaining=counts,
    applied_at=timestamps,
    data_class=codes,
    policy_version=short_text,
    subject_pseudonym=short_text,
    pseudonym_key_id=short_text,
    retained_until=st.none() | timestamps,
    legal_basis=st.none() | short_text,
    reason_code=st.none() | short_text,
    reconcile=st.booleans(),
)
dead_letters = st.builds(
    DeadLetter,
    reason=codes,
    error=short_text,
    source_topic=short_text,
    source_partition=st.integers(min_value=0, max_value=2**31 - 1),
    source_offset=counts,
    source_timestamp=st.none() | timestamps,
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=40),
    headers=st.lists(
        st.builds(DeadLetterHeader, key=short_text, value=st.none() | st.binary(max_size=20)),
        max_size=3,
    ),
    worker=short_text,
    dead_lettered_at=timestamps,
)

SERDES = [
    pytest.param(RequestSerde, requests, id="request"),
    pytest.param(AckSerde, acks, id="ack"),
    pytest.param(DeadLetterSerde, dead_letters, id="dead_letter"),
]


# --- fixed examples ---------------------------------------------------------------------


def make_request(**changes: Any) -> DeletionRequest:
    values: dict[str, Any] = {
        "subject_type": "customer",
        "subject_id": "17",
        "data_class": "customer_profile",
        "reason": "user_request",
        "requested_by": "cli",
        "trace_id": "trace-1",
    }
    values.update(changes)
    return DeletionRequest(**values)


def make_ack() -> DeletionAck:
    return DeletionAck(
        request_id="r-1",
        store="search",
        worker="search-0",
        status=AckStatus.DELETED,
        items_affected=3,
        remaining=0,
        data_class="customer_profile",
        subject_pseudonym="ab" * 32,
        pseudonym_key_id="k1",
    )


def make_dead_letter() -> DeadLetter:
    return DeadLetter(
        reason="bad_magic",
        error="The value starts with 7b22.",
        source_topic="deletion.requests",
        source_partition=2,
        source_offset=41,
        key=b"customer:17/customer_profile",
        value=b'{"request_id": "r-1"}',
        headers=[DeadLetterHeader(key="trace", value=b"t-1"), DeadLetterHeader(key="empty")],
        worker="search-0",
    )


EXAMPLES = [
    pytest.param(RequestSerde, make_request, id="request"),
    pytest.param(AckSerde, make_ack, id="ack"),
    pytest.param(DeadLetterSerde, make_dead_letter, id="dead_letter"),
]


def decode_reason(serde: ModelSerde[Any], value: bytes | None) -> str:
    with pytest.raises(DecodeError) as caught:
        serde.deserialize(value)
    return caught.value.reason


# --- round trip and framing -------------------------------------------------------------


@pytest.mark.parametrize(("serde_class", "make"), EXAMPLES)
def test_serde_round_trips_example(serde_class: type[ModelSerde[Any]], make: Any) -> None:
    serde = serde_class()
    record = make()

    assert serde.deserialize(serde.serialize(record)) == record


@pytest.mark.parametrize(("serde_class", "records"), SERDES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_serde_round_trips_generated(
    serde_class: type[ModelSerde[Any]], records: st.SearchStrategy[BaseModel], data: st.DataObject
) -> None:
    serde = serde_class()
    record = data.draw(records)

    assert serde.deserialize(serde.serialize(record)) == record


@pytest.mark.parametrize(("serde_class", "make"), EXAMPLES)
def test_serialize_frame_header(
    serde_class: type[ModelSerde[Any]], make: Any
) -> None:
    serde = serde_class()
    value = serde.serialize(make())
    fingerprint = schema_fingerprint(fastavro.parse_schema(load_schema(serde.schema_name)))

    assert value[:2] == bytes.fromhex("c301")
    assert value[2:HEADER_SIZE] == fingerprint
    assert value[:HEADER_SIZE] == serde.codec.header


@pytest.mark.parametrize(("serde_class", "records"), SERDES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_serialize_never_returns_empty(
    serde_class: type[ModelSerde[Any]], records: st.SearchStrategy[BaseModel], data: st.DataObject
) -> None:
    value = serde_class().serialize(data.draw(records))

    assert isinstance(value, bytes)
    assert len(value) > HEADER_SIZE


def test_codec_encode_never_returns_empty() -> None:
    # A record type whose body encodes to zero bytes still gets the 10-byte header.
    codec = AvroCodec({"type": "record", "name": "Empty", "fields": []})

    assert codec.encode({}) == codec.header
    assert len(codec.encode({})) == HEADER_SIZE


# --- Kafka tombstones -------------------------------------------------------------------


def test_codec_decode_rejects_null_value() -> None:
    codec = AvroCodec(load_schema("deletion_request"))

    with pytest.raises(DecodeError) as caught:
        codec.decode(None)

    assert caught.value.reason == "null_value"


@pytest.mark.parametrize("serde_class", [RequestSerde, AckSerde, DeadLetterSerde])
def test_serde_deserialize_rejects_null_value(serde_class: type[ModelSerde[Any]]) -> None:
    assert decode_reason(serde_class(), None) == "null_value"


@pytest.mark.parametrize("serde_class", [RequestSerde, AckSerde, DeadLetterSerde])
def test_serde_serialize_rejects_none(serde_class: type[ModelSerde[Any]]) -> None:
    with pytest.raises(TypeError, match="tombstone"):
        serde_class().serialize(None)  # type: ignore[arg-type]


def test_serde_serialize_rejects_other_model() -> None:
    with pytest.raises(TypeError, match="DeletionRequest"):
        RequestSerde().serialize(make_ack())  # type: ignore[arg-type]


# --- invalid input ----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(record=requests)
def test_decode_rejects_every_truncation(record: DeletionRequest) -> None:
    serde = RequestSerde()
    value = serde.serialize(record)

    for end in range(len(value)):
        with pytest.raises(DecodeError):
            serde.deserialize(value[:end])


def test_decode_truncation_reports_truncated() -> None:
    serde = RequestSerde()
    value = serde.serialize(make_request())

    reasons = {end: decode_reason(serde, value[:end]) for end in range(len(value))}

    assert {reasons[end] for end in range(HEADER_SIZE)} == {"truncated"}
    assert reasons[len(value) - 1] == "truncated"
    # fastavro 1.13 raises IndexError, not EOFError, for a varint cut between its bytes,
    # so those cuts are reported as malformed.
    assert set(reasons.values()) <= {"truncated", "malformed"}


@pytest.mark.parametrize("garbage", [b"\x00", b"\x02ab", b"trailing"])
def test_decode_rejects_trailing_bytes(garbage: bytes) -> None:
    serde = RequestSerde()
    value = serde.serialize(make_request())

    assert decode_reason(serde, value + garbage) == "trailing_bytes"


@pytest.mark.parametrize("serde_class", [RequestSerde, AckSerde, DeadLetterSerde])
@settings(max_examples=200, deadline=None)
@given(value=st.binary(max_size=300))
def test_decode_rejects_random_bytes(serde_class: type[ModelSerde[Any]], value: bytes) -> None:
    with pytest.raises(DecodeError):
        serde_class().deserialize(value)


@pytest.mark.parametrize("serde_class", [RequestSerde, AckSerde, DeadLetterSerde])
@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300))
def test_decode_random_body_only_decode_error(
    serde_class: type[ModelSerde[Any]], body: bytes
) -> None:
    # Behind a valid header the bytes reach fastavro and the model. A body that happens to
    # be a valid record may decode, but no exception other than DecodeError may escape.
    serde = serde_class()
    try:
        record = serde.deserialize(serde.codec.header + body)
    except DecodeError as exc:
        assert exc.reason in {"truncated", "malformed", "trailing_bytes", "invalid_field"}
    else:
        assert isinstance(record, serde.model)


def test_decode_json_bad_magic() -> None:
    value = json.dumps({"request_id": "r-1", "subject_id": "17"}).encode("utf-8")

    assert decode_reason(RequestSerde(), value) == "bad_magic"


def test_decode_short_value_bad_magic() -> None:
    assert decode_reason(RequestSerde(), b"{}") == "bad_magic"


def test_decode_rejects_unknown_fingerprint() -> None:
    serde = RequestSerde()
    value = serde.serialize(make_request())
    unknown = MAGIC + bytes(8) + value[HEADER_SIZE:]

    assert decode_reason(serde, unknown) == "unknown_schema"


def test_decode_other_record_type_unknown_schema() -> None:
    ack_value = AckSerde().serialize(make_ack())

    assert decode_reason(RequestSerde(), ack_value) == "unknown_schema"


def test_decode_nul_subject_id_invalid_field() -> None:
    # The Avro schema accepts any string, so only model validation can catch this value.
    serde = RequestSerde()
    fields = make_request().model_dump(mode="python")
    fields["subject_id"] = "17\x00"
    value = AvroCodec(load_schema("deletion_request")).encode(fields)

    with pytest.raises(DecodeError) as caught:
        serde.deserialize(value)

    assert caught.value.reason == "invalid_field"
    assert "subject_id" in str(caught.value)


def test_decode_negative_count_invalid_field() -> None:
    fields = make_ack().model_dump(mode="python")
    fields["remaining"] = -1
    value = AvroCodec(load_schema("deletion_ack")).encode(fields)

    assert decode_reason(AckSerde(), value) == "invalid_field"


def test_decode_bad_enum_index_malformed() -> None:
    serde = RequestSerde()
    value = bytearray(serde.serialize(make_request(request_id="r-1")))
    # The body starts with the request id (one length byte, then 3 bytes), then the
    # action's enum index. 0x7e is the zigzag varint of 63, past the two symbols.
    value[HEADER_SIZE + 1 + 3] = 0x7E

    assert decode_reason(serde, bytes(value)) == "malformed"
