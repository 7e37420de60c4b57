"""``sort_batch`` and ``Batch``: decoding a ``consume()`` batch and the offsets it may commit."""

from __future__ import annotations

import time

from typing import Any

import pytest
from confluent_kafka import KafkaError

from tombstone.models import DeletionRequest, RequestAction
from tombstone.serde import RequestSerde
from tombstone.worker.batch import Batch, Position, sort_batch

TOPIC = "deletion.requests"
DATA_CLASSES = frozenset({"customer_profile"})


class FakeMessage:
    """The part of confluent_kafka.Message that a worker reads."""

    def __init__(
        self,
        partition: int,
        offset: int,
        value: bytes | None = None,
        key: bytes | None = None,
        error: KafkaError | None = None,
        topic: str = TOPIC,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._value = value
        self._key = key
        self._error = error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        # CreateTime now: requests built in these tests have a cut-off of about now.
        return (1, int(time.time() * 1000) + 1000)


def make_request(subject_id: str = "17", **changes: Any) -> DeletionRequest:
    values: dict[str, Any] = {
        "subject_type": "customer",
        "subject_id": subject_id,
        "data_class": "customer_profile",
        "reason": "user_request",
        "requested_by": "cli",
    }
    values.update(changes)
    return DeletionRequest(**values)


def request_message(partition: int, offset: int, request: DeletionRequest | None = None,
                    key: bytes | None = None) -> FakeMessage:
    request = request or make_request(subject_id=f"{partition}-{offset}")
    value = RequestSerde().serialize(request)
    if key is None:
        key = request.kafka_key.encode("utf-8")
    return FakeMessage(partition, offset, value=value, key=key)


def error_message(code: int, partition: int = 0, offset: int = 0) -> FakeMessage:
    return FakeMessage(partition, offset, error=KafkaError(code, "from the client"))


def sort(messages: list[FakeMessage], data_classes: frozenset[str] = DATA_CLASSES,
         ) -> tuple[Batch, list[KafkaError]]:
    errors: list[KafkaError] = []
    batch = sort_batch(messages, RequestSerde(), data_classes, errors.append)
    return batch, errors


def offsets(batch: Batch) -> list[tuple[str, int, int]]:
    return [(tp.topic, tp.partition, tp.offset) for tp in batch.commit_offsets()]


# --- error entries ----------------------------------------------------------------------


def test_sort_batch_passes_error_entries_to_on_error() -> None:
    eof = error_message(KafkaError._PARTITION_EOF, partition=0, offset=99)
    transport = error_message(KafkaError._TRANSPORT, partition=1, offset=7)

    _, errors = sort([request_message(0, 5), eof, request_message(0, 6), transport])

    assert [error.code() for error in errors] == [KafkaError._PARTITION_EOF, KafkaError._TRANSPORT]


def test_sort_batch_error_entries_do_not_move_offsets() -> None:
    # An error entry's offset (here 99 on partition 0 and 7 on partition 1) is not a
    # consumed record. Committing it would skip records that were never processed.
    messages = [
        request_message(0, 5),
        error_message(KafkaError._PARTITION_EOF, partition=0, offset=99),
        request_message(0, 6),
        error_message(KafkaError._TRANSPORT, partition=1, offset=7),
    ]

    batch, _ = sort(messages)

    assert offsets(batch) == [(TOPIC, 0, 7)]


def test_sort_batch_error_entries_are_not_work() -> None:
    batch, _ = sort([error_message(KafkaError._TRANSPORT), request_message(0, 1)])

    assert [work.position.offset for work in batch.work] == [1]
    assert batch.poison == []
    assert batch.skipped == 0


def test_sort_batch_only_errors_is_empty() -> None:
    batch, errors = sort([error_message(KafkaError._ALL_BROKERS_DOWN)])

    assert batch.empty
    assert batch.commit_offsets() == []
    assert len(errors) == 1


# --- commit offsets ---------------------------------------------------------------------


def test_commit_offsets_last_offset_plus_one() -> None:
    messages = [request_message(0, 3), request_message(1, 10), request_message(0, 4),
                request_message(1, 11), request_message(2, 0)]

    batch, _ = sort(messages)

    assert offsets(batch) == [(TOPIC, 0, 5), (TOPIC, 1, 12), (TOPIC, 2, 1)]


def test_commit_offsets_use_highest_offset() -> None:
    batch, _ = sort([request_message(0, 8), request_message(0, 6)])

    assert offsets(batch) == [(TOPIC, 0, 9)]


def test_commit_offsets_per_topic() -> None:
    other = FakeMessage(0, 41, value=None, topic="other.requests")

    batch, _ = sort([request_message(0, 3), other])

    assert offsets(batch) == [(TOPIC, 0, 4), ("other.requests", 0, 42)]


def test_sort_batch_work_keeps_position_and_request() -> None:
    request = make_request()

    batch, _ = sort([request_message(2, 30, request)])

    assert len(batch.work) == 1
    assert batch.work[0].position == Position(TOPIC, 2, 30)
    assert batch.work[0].request == request
    assert str(batch.work[0].position) == f"{TOPIC}[2]@30"


# --- records that are skipped -----------------------------------------------------------


def test_sort_batch_skips_null_value() -> None:
    tombstone = FakeMessage(0, 12, value=None, key=b"customer:17/customer_profile")

    batch, _ = sort([request_message(0, 11), tombstone])

    assert batch.skipped == 1
    assert len(batch.work) == 1
    assert batch.poison == []
    assert offsets(batch) == [(TOPIC, 0, 13)]


def test_sort_batch_skips_other_data_class() -> None:
    request = make_request(data_class="billing")

    batch, _ = sort([request_message(0, 4, request)])

    assert batch.work == []
    assert batch.poison == []
    assert batch.skipped == 1
    assert offsets(batch) == [(TOPIC, 0, 5)]


def test_sort_batch_keeps_cancel_as_work() -> None:
    request = make_request(action=RequestAction.CANCEL)

    batch, _ = sort([request_message(0, 4, request)])

    assert [w.request for w in batch.work] == [request]
    assert offsets(batch) == [(TOPIC, 0, 5)]


def test_cancel_with_the_id_of_its_request_is_not_a_duplicate_id() -> None:
    request = make_request()
    cancel = request.model_copy(update={"action": RequestAction.CANCEL})

    batch, _ = sort([request_message(0, 4, request), request_message(0, 5, cancel)])

    assert [w.request.action for w in batch.work] == [RequestAction.DELETE, RequestAction.CANCEL]
    assert batch.poison == []


# --- poison -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"request_id": "r-1"}', "bad_magic"),
        (b"\xc3\x01", "truncated"),
        (b"\xc3\x01" + bytes(8) + b"\x00", "unknown_schema"),
    ],
)
def test_sort_batch_undecodable_becomes_poison(value: bytes, reason: str) -> None:
    message = FakeMessage(1, 9, value=value, key=b"customer:17/customer_profile")

    batch, _ = sort([message])

    assert len(batch.poison) == 1
    assert batch.poison[0].reason == reason
    assert batch.poison[0].position == Position(TOPIC, 1, 9)
    assert batch.poison[0].message is message
    assert batch.work == []


def test_sort_batch_poison_counts_for_offsets() -> None:
    batch, _ = sort([FakeMessage(1, 9, value=b"junk-junk-junk")])

    assert offsets(batch) == [(TOPIC, 1, 10)]


def test_sort_batch_truncated_request_becomes_poison() -> None:
    value = RequestSerde().serialize(make_request())

    batch, _ = sort([FakeMessage(0, 1, value=value[:-1], key=b"customer:17/customer_profile")])

    assert batch.poison[0].reason == "truncated"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"customer:18/customer_profile", id="other_subject"),
        pytest.param(b"customer:17", id="subject_only"),
        pytest.param(b"customer:17/billing", id="other_data_class"),
    ],
)
def test_sort_batch_key_mismatch_becomes_poison(key: bytes) -> None:
    batch, _ = sort([request_message(0, 2, make_request(), key=key)])

    assert len(batch.poison) == 1
    assert batch.poison[0].reason == "key_mismatch"
    assert batch.work == []


def test_sort_batch_missing_key_becomes_poison() -> None:
    value = RequestSerde().serialize(make_request())

    batch, _ = sort([FakeMessage(0, 2, value=value, key=None)])

    assert batch.poison[0].reason == "key_mismatch"


def test_sort_batch_key_mismatch_error_omits_subject() -> None:
    request = make_request(subject_id="secret-subject-42")

    batch, _ = sort([request_message(0, 2, request, key=b"customer:18/customer_profile")])

    assert "secret-subject-42" not in batch.poison[0].error


# --- revoked partitions -----------------------------------------------------------------


def test_drop_partitions_removes_work_and_offsets() -> None:
    messages = [request_message(0, 1), request_message(1, 5), FakeMessage(1, 6, value=b"junk-junk-junk"),
                request_message(2, 9)]
    batch, _ = sort(messages)

    batch.drop_partitions({(TOPIC, 1)})

    assert [w.position.partition for w in batch.work] == [0, 2]
    assert batch.poison == []
    assert offsets(batch) == [(TOPIC, 0, 2), (TOPIC, 2, 10)]


def test_drop_partitions_of_other_topic_keeps_batch() -> None:
    batch, _ = sort([request_message(0, 1)])

    batch.drop_partitions({("other.requests", 0)})

    assert len(batch.work) == 1
    assert offsets(batch) == [(TOPIC, 0, 2)]


def test_drop_partitions_all_leaves_empty_batch() -> None:
    batch, _ = sort([request_message(0, 1), request_message(1, 1)])

    batch.drop_partitions({(TOPIC, 0), (TOPIC, 1)})

    assert batch.empty
    assert batch.work == []


def test_sort_batch_rejects_duplicate_request_id() -> None:
    first = make_request("1")
    second = make_request("2").model_copy(update={"request_id": first.request_id})

    batch, _ = sort([request_message(0, 0, first), request_message(0, 1, second)])

    assert [w.request.subject_id for w in batch.work] == ["1"]
    assert [p.reason for p in batch.poison] == ["duplicate_request_id"]


def test_sort_batch_applies_repeat_once() -> None:
    request = make_request("1")

    batch, _ = sort([request_message(0, 0, request), request_message(0, 1, request)])

    assert len(batch.work) == 1
    assert batch.commit_offsets()[0].offset == 2


def test_sort_batch_duplicates_across_large_batch() -> None:
    # Repeats and clashing ids far apart in one batch, with cancels of the same ids between.
    requests = [make_request(str(i)) for i in range(300)]
    clash = make_request("other").model_copy(update={"request_id": requests[10].request_id})
    cancel = requests[10].model_copy(update={"action": RequestAction.CANCEL})
    messages = [request_message(0, i, r) for i, r in enumerate(requests)]
    messages += [request_message(1, 0, cancel), request_message(1, 1, requests[10]),
                 request_message(1, 2, clash), request_message(1, 3, cancel)]

    batch, _ = sort(messages)

    assert len(batch.work) == 301
    assert batch.work[-1].request.action is RequestAction.CANCEL
    assert [p.reason for p in batch.poison] == ["duplicate_request_id"]
    assert batch.poison[0].position.offset == 2
    assert batch.skipped == 2


def test_sort_batch_rejects_future_cutoff() -> None:
    from datetime import timedelta

    later = make_request("1")
    later = later.model_copy(update={"requested_at": later.requested_at + timedelta(days=365),
                                     "cutoff_at": later.cutoff_at + timedelta(days=365)})

    batch, _ = sort([request_message(0, 0, later)])

    assert batch.work == []
    assert [p.reason for p in batch.poison] == ["future_cutoff"]

