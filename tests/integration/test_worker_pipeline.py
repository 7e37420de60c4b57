"""The worker against a real broker and a SQLite store: apply, prove, commit, dead-letter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from tests.integration.helpers import (
    ProofReader,
    caught_up,
    committed_offsets,
    count_customers,
    seed_customers,
    wait_for,
    write_sqlite_spec,
)
from tombstone.models import AckStatus
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec

pytestmark = pytest.mark.integration


def _request(ids: range, data_class: str = "customer_profile") -> list:
    requester = Requester(KafkaSettings())
    try:
        return requester.submit([new_request(f"customer:{i}", data_class, "user_request", "test") for i in ids])
    finally:
        requester.close()


def test_worker_deletes_acks_and_commits(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    spec_path = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 21))
    requests = _request(range(1, 11))
    worker = start_worker(spec_path)

    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 10, what="10 acks")
    worker.join()

    assert {a.request_id for a in proof_reader.acks} == {r.request_id for r in requests}
    assert all(a.status is AckStatus.DELETED for a in proof_reader.acks)
    assert all(a.items_affected == 1 and a.remaining == 0 for a in proof_reader.acks)
    assert count_customers(tmp_path / "operational.sqlite", range(1, 11)) == 0
    assert count_customers(tmp_path / "operational.sqlite", range(11, 21)) == 10
    kafka = KafkaSettings()
    assert caught_up(load_spec(spec_path).consumer_group, kafka)


def test_ack_never_carries_raw_subject(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    spec_path = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(4242, 4243))
    _request(range(4242, 4243))
    worker = start_worker(spec_path)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 1, what="one ack")
    worker.join()

    ack = proof_reader.acks[0]
    assert "4242" not in ack.model_dump_json()
    assert len(ack.subject_pseudonym) == 64


def test_poison_record_goes_to_dead_letter(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    spec_path = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 3))
    kafka = KafkaSettings()
    poison = os.urandom(64)
    positions = []
    producer = Producer(kafka.client_config())
    producer.produce(kafka.requests_topic, key=b"customer:1/customer_profile", value=poison,
                     headers=[("origin", b"fuzzer")],
                     on_delivery=lambda err, msg: positions.append((msg.partition(), msg.offset())))
    assert producer.flush(10) == 0
    requests = _request(range(1, 3))
    worker = start_worker(spec_path)

    wait_for(lambda: proof_reader.refresh() or (len(proof_reader.acks) >= 2 and proof_reader.dead_letters),
             what="two acks and a dead letter")
    worker.join()

    letter = proof_reader.dead_letters[0]
    assert (letter.source_partition, letter.source_offset) == positions[0]
    assert letter.source_topic == kafka.requests_topic
    assert letter.value == poison
    assert letter.reason in {"bad_magic", "truncated"}
    assert [h.key for h in letter.headers] == ["origin"]
    assert {a.request_id for a in proof_reader.acks} == {r.request_id for r in requests}


def test_replay_reports_first_outcome(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    spec_path = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 6))
    _request(range(1, 6))
    start_worker(spec_path)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 5, what="5 acks")

    # A second group reads the topic from the start: a full replay.
    replay_spec = write_sqlite_spec(tmp_path, name="operational-db")
    start_worker(replay_spec)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 10, what="10 acks")

    first, second = proof_reader.acks[:5], proof_reader.acks[5:]
    assert sorted((a.request_id, a.status, a.items_affected) for a in first) == \
        sorted((a.request_id, a.status, a.items_affected) for a in second)


def test_cutoff_keeps_recreated_rows(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    spec_path = write_sqlite_spec(tmp_path)
    far_future_ms = 4_102_444_800_000  # 2100-01-01: written after any request's cut-off
    seed_customers(tmp_path / "operational.sqlite", range(1, 2), updated_at_ms=1)
    seed_customers(tmp_path / "operational.sqlite", range(1, 2), updated_at_ms=far_future_ms)
    _request(range(1, 2))
    worker = start_worker(spec_path)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 1, what="one ack")
    worker.join()

    assert proof_reader.acks[0].items_affected == 1
    assert count_customers(tmp_path / "operational.sqlite") == 1


def test_close_commits_nothing(pipeline_topics: dict[str, str], unique_name) -> None:
    from tombstone.worker.loop import consumer_config

    spec = load_spec(write_sqlite_spec(Path(os.environ.get("TMPDIR", "/tmp"))))
    _request(range(1, 4))
    kafka = KafkaSettings()
    config = consumer_config(spec, kafka, "test")
    config["group.id"] = unique_name("close")
    consumer = Consumer(config)
    consumer.subscribe([kafka.requests_topic])
    seen = []
    wait_for(lambda: seen.extend(m for m in consumer.consume(10, 0.5) if m.error() is None) or len(seen) >= 3,
             what="three records")
    consumer.close()

    committed = committed_offsets(config["group.id"], kafka)
    assert all(offset < 0 for offset in committed.values())


def test_nul_subject_goes_to_dead_letter(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    from tombstone.models import utc_now
    from tombstone.serde import AvroCodec, load_schema

    spec_path = write_sqlite_spec(tmp_path)
    seed_customers(tmp_path / "operational.sqlite", range(1, 2))
    kafka = KafkaSettings()
    now = utc_now()
    record = {"request_id": "0f3c5a4e-1111-4222-8333-944455556666", "action": "DELETE",
              "subject_type": "customer", "subject_id": "1\x00", "data_class": "customer_profile",
              "reason": "user_request", "requested_at": now, "cutoff_at": now, "requested_by": "test"}
    producer = Producer(kafka.client_config())
    producer.produce(kafka.requests_topic, key="customer:1\x00/customer_profile".encode(),
                     value=AvroCodec(load_schema("deletion_request")).encode(record))
    assert producer.flush(10) == 0
    worker = start_worker(spec_path)

    wait_for(lambda: proof_reader.refresh() or proof_reader.dead_letters, what="a dead letter")
    worker.join()

    assert proof_reader.dead_letters[0].reason == "invalid_field"
    assert proof_reader.acks == []
    assert count_customers(tmp_path / "operational.sqlite") == 1
