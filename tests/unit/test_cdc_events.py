"""Classifying Debezium records and turning deletes into requests (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.unit import cdc_events as ev
from tombstone.cdc.config import BridgeSettings, TableMapping
from tombstone.cdc.events import NEW_KEY_HEADER, EventKind, parse_event
from tombstone.cdc.translate import Emit, Reject, Source, build_request
from tombstone.errors import DecodeError

SETTINGS = BridgeSettings(name="chinook", requested_by="cdc:chinook")
TABLE = TableMapping(topic=ev.TOPIC, subject_type="customer", data_class="customer_profile",
                     key_columns=["customer_id"])
SOURCE = Source(ev.TOPIC, 0, 41, 1_764_000_009_000)


@pytest.mark.parametrize("schemas", [False, True], ids=["plain", "schema-envelope"])
def test_delete_envelope_is_a_delete(schemas: bool) -> None:
    event = parse_event(ev.key(17, schemas), ev.delete(17, schemas=schemas))
    assert event.kind is EventKind.DELETE
    assert event.key == {"customer_id": 17}
    assert event.row["customer_id"] == 17
    assert (event.source_ts_ms, event.lsn, event.tx_id) == (ev.SOURCE_TS_MS, ev.LSN, "771")


@pytest.mark.parametrize("op", ["c", "u", "r"])
def test_create_update_and_snapshot_read_are_upserts(op: str) -> None:
    value = ev.envelope(op, None if op != "u" else ev.row(3), ev.row(3))
    assert parse_event(ev.key(3), value).kind is EventKind.UPSERT


def test_truncate_and_messages_are_not_erasures() -> None:
    assert parse_event(None, ev.envelope("t", None, None)).kind is EventKind.OTHER
    assert parse_event(None, ev.envelope("m", None, None)).kind is EventKind.OTHER


def test_null_value_is_a_tombstone() -> None:
    event = parse_event(ev.key(17), None)
    assert event.kind is EventKind.TOMBSTONE
    assert event.key == {"customer_id": 17}


def test_flattened_rewrite_delete_is_a_delete_not_an_upsert() -> None:
    value = ev.flattened(17, deleted=True, __op="d", __source_ts_ms=ev.SOURCE_TS_MS, __lsn=ev.LSN)
    event = parse_event(ev.key(17), value)
    assert event.kind is EventKind.DELETE
    assert event.row == ev.row(17)  # the __ fields are metadata, not columns
    assert (event.source_ts_ms, event.lsn) == (ev.SOURCE_TS_MS, ev.LSN)


def test_flattened_row_without_deleted_flag_is_an_upsert() -> None:
    assert parse_event(ev.key(17), ev.flattened(17, deleted=False)).kind is EventKind.UPSERT


def test_flattened_boolean_deleted_flag_counts() -> None:
    value = json.dumps({**ev.row(5), "__deleted": True}).encode()
    assert parse_event(ev.key(5), value).kind is EventKind.DELETE


@pytest.mark.parametrize("value", [ev.delete(17), ev.flattened(17, deleted=True)], ids=["envelope", "flattened"])
def test_delete_half_of_a_primary_key_change_is_not_an_erasure(value: bytes) -> None:
    headers = [(NEW_KEY_HEADER, ev.key(1017))]
    assert parse_event(ev.key(17), value, headers).kind is EventKind.KEY_CHANGE


@pytest.mark.parametrize(("value", "reason"), [
    (b"\x00\x01binary", "cdc_undecodable"),
    (b"\xff\xfe", "cdc_undecodable"),
    (b"[1, 2]", "cdc_unexpected_shape"),
    (b'"text"', "cdc_unexpected_shape"),
])
def test_values_that_are_not_change_events_fail_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        parse_event(ev.key(1), value)
    assert caught.value.reason == reason


def test_key_that_is_not_an_object_fails() -> None:
    with pytest.raises(DecodeError) as caught:
        parse_event(b"17", ev.delete(17))
    assert caught.value.reason == "cdc_unexpected_shape"


def test_cutoff_comes_from_the_source_event_not_the_clock() -> None:
    decision = build_request(SETTINGS, TABLE, parse_event(ev.key(17), ev.delete(17)), SOURCE)
    assert isinstance(decision, Emit)
    request = decision.request
    assert request.cutoff_at == datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)
    assert request.cutoff_version == ev.LSN
    assert request.requested_at > request.cutoff_at
    assert (request.subject_key, request.data_class, request.reason) == ("customer:17", "customer_profile",
                                                                         "source_deleted")
    assert request.trace_id == f"{ev.TOPIC}[0]@41"


def test_same_source_change_gives_the_same_request_id() -> None:
    event = parse_event(ev.key(17), ev.delete(17))
    first = build_request(SETTINGS, TABLE, event, SOURCE)
    # Debezium re-sends the change after a connector restart: same LSN, a new offset.
    again = build_request(SETTINGS, TABLE, event, Source(ev.TOPIC, 0, 99, SOURCE.timestamp_ms))
    other = build_request(SETTINGS, TABLE, parse_event(ev.key(17), ev.delete(17, lsn=ev.LSN + 8)), SOURCE)
    assert first.request.request_id == again.request.request_id != other.request.request_id


def test_lone_tombstone_uses_the_record_timestamp_as_cutoff() -> None:
    decision = build_request(SETTINGS, TABLE, parse_event(ev.key(17), None), SOURCE)
    assert isinstance(decision, Emit)
    assert decision.request.cutoff_at == datetime.fromtimestamp(SOURCE.timestamp_ms / 1000, UTC)
    assert decision.request.cutoff_version is None


def test_delete_without_key_or_before_image_is_rejected_with_the_fix() -> None:
    # A table without a primary key under REPLICA IDENTITY DEFAULT: null key, null before.
    event = parse_event(None, ev.envelope("d", None, None))
    decision = build_request(SETTINGS, TABLE, event, SOURCE)
    assert isinstance(decision, Reject)
    assert decision.reason == "cdc_missing_identity"
    assert "REPLICA IDENTITY FULL" in decision.message
    assert "primary key" in decision.message


def test_blank_non_key_column_of_a_full_identity_delete_is_missing_identity() -> None:
    table = TABLE.model_copy(update={"key_columns": ["email"], "identity": "full"})
    event = parse_event(ev.key(17), ev.envelope("d", {"customer_id": 17, "email": ""}, None))
    decision = build_request(SETTINGS, table, event, SOURCE)
    assert isinstance(decision, Reject) and decision.reason == "cdc_missing_identity"


def test_key_column_found_in_before_image_under_full_identity() -> None:
    table = TABLE.model_copy(update={"key_columns": ["email"], "identity": "full"})
    decision = build_request(SETTINGS, table, parse_event(ev.key(17), ev.delete(17)), SOURCE)
    assert isinstance(decision, Emit)
    assert decision.request.subject_id == "luisg@embraer.com.br"


def test_composite_key_joins_columns() -> None:
    table = TABLE.model_copy(update={"key_columns": ["customer_id", "email"], "identity": "full"})
    decision = build_request(SETTINGS, table, parse_event(ev.key(17), ev.delete(17)), SOURCE)
    assert decision.request.subject_id == "17:luisg@embraer.com.br"


def test_composite_key_parts_with_colons_do_not_collide() -> None:
    table = TABLE.model_copy(update={"key_columns": ["tenant", "id"]})
    first = parse_event(json.dumps({"tenant": "a:b", "id": "c"}).encode(), ev.envelope("d", None, None))
    second = parse_event(json.dumps({"tenant": "a", "id": "b:c"}).encode(), ev.envelope("d", None, None))
    ids = {build_request(SETTINGS, table, event, SOURCE).request.subject_id for event in (first, second)}
    assert len(ids) == 2


def test_default_identity_never_takes_key_columns_from_the_before_image() -> None:
    # REPLICA IDENTITY DEFAULT: Debezium fills non-key columns of the before image with
    # defaults, so acct_no arrives as 0 for every deleted row.
    table = TABLE.model_copy(update={"key_columns": ["acct_no"]})
    event = parse_event(ev.key(1), ev.envelope("d", {"customer_id": 1, "acct_no": 0, "email": ""}, None))
    decision = build_request(SETTINGS, table, event, SOURCE)
    assert isinstance(decision, Reject) and decision.reason == "cdc_missing_identity"


@pytest.mark.parametrize(("field", "value"), [("ts_ms", "\u00b2"), ("ts_ms", 10**20), ("lsn", 2**64),
                                             ("lsn", "\u00b9"), ("ts_ms", -5)])
def test_out_of_range_source_positions_are_ignored_not_fatal(field: str, value: object) -> None:
    document = json.loads(ev.delete(17))
    document["source"][field] = value
    event = parse_event(ev.key(17), json.dumps(document).encode())
    assert getattr(event, "source_ts_ms" if field == "ts_ms" else "lsn") is None
    decision = build_request(SETTINGS, TABLE, event, SOURCE)
    assert isinstance(decision, Emit)  # the record timestamp or the position is used instead


def test_huge_integers_are_undecodable_not_a_crash() -> None:
    with pytest.raises(DecodeError) as caught:
        parse_event(ev.key(1), b'{"before": {"customer_id": ' + b"9" * 5000 + b"}}")
    assert caught.value.reason == "cdc_undecodable"


def test_flattened_row_with_op_and_source_columns_is_not_an_envelope() -> None:
    value = json.dumps({**ev.row(7), "op": "closed", "source": "web", "__deleted": "true"}).encode()
    assert parse_event(ev.key(7), value).kind is EventKind.DELETE


@pytest.mark.parametrize("value", [1.5, True, {"nested": 1}, [1]])
def test_key_values_that_are_not_ints_or_strings_are_rejected(value: object) -> None:
    event = parse_event(json.dumps({"customer_id": value}).encode(), ev.envelope("d", None, None))
    decision = build_request(SETTINGS, TABLE, event, SOURCE)
    assert isinstance(decision, Reject) and decision.reason == "cdc_unsupported_key"


def test_control_characters_in_the_key_are_rejected_not_requested() -> None:
    event = parse_event(ev.key("17\x00"), ev.delete("17\x00"))
    decision = build_request(SETTINGS, TABLE, event, SOURCE)
    assert isinstance(decision, Reject) and decision.reason == "cdc_invalid_request"


def test_source_clock_far_ahead_is_rejected() -> None:
    ahead = int(datetime.now(UTC).timestamp() * 1000) + 3_600_000
    decision = build_request(SETTINGS, TABLE, parse_event(ev.key(17), ev.delete(17, ts_ms=ahead)), SOURCE)
    assert isinstance(decision, Reject) and decision.reason == "cdc_invalid_request"


def test_no_time_at_all_is_rejected() -> None:
    event = parse_event(ev.key(17), None)
    decision = build_request(SETTINGS, TABLE, event, Source(ev.TOPIC, 0, 1, None))
    assert isinstance(decision, Reject) and decision.reason == "cdc_no_source_time"
