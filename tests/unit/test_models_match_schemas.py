"""The pydantic models and the Avro schemas in ``schemas/`` describe the same records.

The Avro schema is the wire contract and the model validates values on both sides of it,
so a field added, renamed or made nullable in one must change in the other.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import datetime
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel

from tombstone.models import (
    AckStatus,
    DeadLetter,
    DeadLetterHeader,
    DeletionAck,
    DeletionRequest,
    RequestAction,
)
from tombstone.serde.codec import load_schema

RECORDS = [
    pytest.param(DeletionRequest, "deletion_request", id="DeletionRequest"),
    pytest.param(DeletionAck, "deletion_ack", id="DeletionAck"),
    pytest.param(DeadLetter, "dead_letter", id="DeadLetter"),
]

AVRO_PRIMITIVES: dict[str, type] = {
    "string": str,
    "long": int,
    "int": int,
    "boolean": bool,
    "bytes": bytes,
}


def _fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {field["name"]: field for field in schema["fields"]}


def _avro_nullable(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type


def _avro_non_null(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        others = [branch for branch in avro_type if branch != "null"]
        assert len(others) == 1, f"union {avro_type} has more than one non-null branch"
        return others[0]
    return avro_type


def _model_non_null(annotation: Any) -> tuple[Any, bool]:
    """Split ``X | None`` into ``(X, True)``, and any other annotation into ``(it, False)``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = typing.get_args(annotation)
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return others[0], True
    return annotation, False


def _python_type(avro_type: Any) -> Any:
    """Python type that the model must use for a non-null Avro type."""
    if isinstance(avro_type, str):
        return AVRO_PRIMITIVES[avro_type]
    if avro_type.get("logicalType") == "timestamp-millis":
        return datetime
    if avro_type["type"] in AVRO_PRIMITIVES:
        return AVRO_PRIMITIVES[avro_type["type"]]
    if avro_type["type"] == "array":
        return list
    raise AssertionError(f"no Python type known for Avro type {avro_type}")


@pytest.mark.parametrize(("model", "schema_name"), RECORDS)
def test_model_field_names_match_schema(model: type[BaseModel], schema_name: str) -> None:
    schema = load_schema(schema_name)

    assert sorted(model.model_fields) == sorted(_fields(schema))


@pytest.mark.parametrize(("model", "schema_name"), RECORDS)
def test_model_nullable_matches_schema_union(
    model: type[BaseModel], schema_name: str
) -> None:
    for name, avro_field in _fields(load_schema(schema_name)).items():
        _, model_nullable = _model_non_null(model.model_fields[name].annotation)

        assert model_nullable == _avro_nullable(avro_field["type"]), name


@pytest.mark.parametrize(("model", "schema_name"), RECORDS)
def test_model_nullable_fields_default_to_none(model: type[BaseModel], schema_name: str) -> None:
    for name, avro_field in _fields(load_schema(schema_name)).items():
        if not _avro_nullable(avro_field["type"]):
            continue
        field = model.model_fields[name]

        assert not field.is_required(), name
        assert field.get_default(call_default_factory=True) is None, name


@pytest.mark.parametrize(("model", "schema_name"), RECORDS)
def test_model_default_matches_schema_default(model: type[BaseModel], schema_name: str) -> None:
    # A reader fills a field missing from an older writer with the Avro default, so the model
    # must accept that field as optional and agree on its value. The model may add defaults
    # of its own (a new uuid, the current time), because a writer always writes those.
    for name, avro_field in _fields(load_schema(schema_name)).items():
        if "default" not in avro_field:
            continue
        field = model.model_fields[name]

        assert not field.is_required(), name
        assert field.get_default(call_default_factory=True) == avro_field["default"], name


@pytest.mark.parametrize(("model", "schema_name"), RECORDS)
def test_model_field_types_match_schema(model: type[BaseModel], schema_name: str) -> None:
    for name, avro_field in _fields(load_schema(schema_name)).items():
        annotation, _ = _model_non_null(model.model_fields[name].annotation)
        avro_type = _avro_non_null(avro_field["type"])
        if isinstance(avro_type, dict) and avro_type["type"] == "enum":
            assert issubclass(annotation, enum.Enum), name
            assert annotation.__name__ == avro_type["name"], name
            continue

        plain = typing.get_origin(annotation) or annotation
        # pydantic's AwareDatetime is datetime with a required UTC offset.
        plain = datetime if plain is AwareDatetime else plain
        assert plain is _python_type(avro_type), name


def test_dead_letter_header_fields_match_schema() -> None:
    headers = _fields(load_schema("dead_letter"))["headers"]
    header_schema = headers["type"]["items"]

    assert sorted(DeadLetterHeader.model_fields) == sorted(_fields(header_schema))
    assert DeadLetterHeader.model_fields["value"].get_default() is None
    assert DeadLetter.model_fields["headers"].annotation == list[DeadLetterHeader]


@pytest.mark.parametrize(
    ("python_enum", "schema_name", "field_name"),
    [
        pytest.param(RequestAction, "deletion_request", "action", id="RequestAction"),
        pytest.param(AckStatus, "deletion_ack", "status", id="AckStatus"),
    ],
)
def test_enum_values_match_schema_symbols(
    python_enum: type[enum.Enum], schema_name: str, field_name: str
) -> None:
    avro_enum = _fields(load_schema(schema_name))[field_name]["type"]

    assert avro_enum["type"] == "enum"
    assert sorted(member.value for member in python_enum) == sorted(avro_enum["symbols"])
