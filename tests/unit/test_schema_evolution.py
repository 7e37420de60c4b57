"""Readers and writers of different request schema versions, resolved by fingerprint."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tombstone.errors import DecodeError
from tombstone.models import DeletionRequest
from tombstone.serde import AvroCodec, RequestSerde, load_schema


def request_schema_v2() -> dict[str, Any]:
    """Version 1 of the request schema plus a field with a default."""
    schema = copy.deepcopy(load_schema("deletion_request"))
    schema["fields"].append({"name": "tenant", "type": "string", "default": "main"})
    return schema


def make_request() -> DeletionRequest:
    return DeletionRequest(
        subject_type="customer",
        subject_id="17",
        data_class="customer_profile",
        reason="user_request",
        requested_by="cli",
    )


def test_v2_header_differs_from_v1() -> None:
    v1 = AvroCodec(load_schema("deletion_request"))
    v2 = AvroCodec(request_schema_v2())

    assert v1.header[:2] == v2.header[:2]
    assert v1.header != v2.header


def test_v2_reader_reads_v1_record_with_default() -> None:
    v1_value = RequestSerde().serialize(make_request())
    reader = AvroCodec(request_schema_v2(), writer_schemas=[load_schema("deletion_request")])

    record = reader.decode(v1_value)

    assert record["tenant"] == "main"


def test_v2_reader_keeps_v1_fields() -> None:
    request = make_request()
    reader = AvroCodec(request_schema_v2(), writer_schemas=[load_schema("deletion_request")])

    record = reader.decode(RequestSerde().serialize(request))
    del record["tenant"]

    assert DeletionRequest.model_validate(record) == request


def test_v1_reader_reads_v2_record_without_new_field() -> None:
    request = make_request()
    v2_value = AvroCodec(request_schema_v2()).encode(
        {**request.model_dump(mode="python"), "tenant": "eu"}
    )
    reader = RequestSerde(writer_schemas=[request_schema_v2()])

    decoded = reader.deserialize(v2_value)

    assert decoded == request
    assert "tenant" not in decoded.model_dump()


def test_v1_codec_reads_v2_record_without_new_field() -> None:
    v2_value = AvroCodec(request_schema_v2()).encode(
        {**make_request().model_dump(mode="python"), "tenant": "eu"}
    )
    reader = AvroCodec(load_schema("deletion_request"), writer_schemas=[request_schema_v2()])

    assert "tenant" not in reader.decode(v2_value)


def test_v1_reader_without_v2_rejects_unknown_schema() -> None:
    v2_value = AvroCodec(request_schema_v2()).encode(
        {**make_request().model_dump(mode="python"), "tenant": "eu"}
    )

    with pytest.raises(DecodeError) as caught:
        RequestSerde().deserialize(v2_value)

    assert caught.value.reason == "unknown_schema"
    assert AvroCodec(request_schema_v2()).header[2:].hex() in str(caught.value)


def test_add_writer_schema_makes_v2_readable() -> None:
    request = make_request()
    v2 = request_schema_v2()
    v2_value = AvroCodec(v2).encode({**request.model_dump(mode="python"), "tenant": "eu"})
    serde = RequestSerde()

    fingerprint = serde.codec.add_writer_schema(v2)

    assert fingerprint == v2_value[2:10]
    assert serde.deserialize(v2_value) == request
