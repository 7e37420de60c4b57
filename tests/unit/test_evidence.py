"""Evidence export and verification on hand-built ledger histories, without a broker."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tombstone.inventory import Inventory
from tombstone.ledger.evidence import (
    ExportHeader,
    ExportTrailer,
    encode_line,
    export_evidence,
    seal,
)
from tombstone.ledger.evidence_verify import VerifyReport, split_lines, verify_export
from tombstone.ledger.history import LedgerHistory
from tombstone.models import AckStatus, DeletionAck, DeletionRequest, RequestAction
from tombstone.pseudonym import KeyRing, Pseudonymizer

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REQUESTS_TOPIC, PROOFS_TOPIC = "deletion.requests", "deletion.proofs"
SECRET_K1 = b"first-secret-0123456789abcdef-k1"
SECRET_K2 = b"second-secret-0123456789abcdef-k2"
K1 = Pseudonymizer(SECRET_K1, "k1")
K2 = Pseudonymizer(SECRET_K2, "k2")
CANARY = "canary-7f3e9a"

INVENTORY = Inventory.model_validate(
    {
        "data_classes": {
            "customer_profile": {
                "subject_types": ["customer"],
                "stores": [{"store": "sqlite", "action": "hide", "purge_after_s": 60},
                           {"store": "search", "action": "delete"}],
            },
        }
    }
)


def make_request(request_id: str, subject_id: str = CANARY, at: datetime = T0) -> DeletionRequest:
    return DeletionRequest(request_id=request_id, subject_type="customer", subject_id=subject_id,
                           data_class="customer_profile", reason="user_request", requested_by="cli",
                           requested_at=at, cutoff_at=at)


def make_ack(request: DeletionRequest, store: str, status: AckStatus, at: datetime,
             items_affected: int = 1, key: Pseudonymizer = K1, **changes: Any) -> DeletionAck:
    return DeletionAck(request_id=request.request_id, store=store, worker=f"{store}-0", status=status,
                       items_affected=items_affected, remaining=0, applied_at=at,
                       data_class=request.data_class, subject_pseudonym=key.pseudonym(request.subject_key),
                       pseudonym_key_id=key.key_id, **changes)


class Topics:
    """A hand-built history that hands out offsets like a two-partition topic pair."""

    def __init__(self) -> None:
        self.history = LedgerHistory(INVENTORY)
        self._next = {("requests", 0): 0, ("requests", 1): 0, ("proofs", 0): 0, ("proofs", 1): 0}

    def _offset(self, topic: str, partition: int) -> int:
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] += 1
        return offset

    def request(self, request: DeletionRequest, partition: int = 0) -> DeletionRequest:
        self.history.add_request(request, partition, self._offset("requests", partition))
        return request

    def ack(self, ack: DeletionAck, partition: int = 0) -> None:
        self.history.add_ack(ack, partition, self._offset("proofs", partition))


@pytest.fixture
def topics() -> Topics:
    """Two requests: r1 hidden then purged in sqlite and deleted in search, r2 pending in search."""
    t = Topics()
    r1 = t.request(make_request("r1"))
    r2 = t.request(make_request("r2", subject_id="9876543211", at=T0 + timedelta(seconds=1)), partition=1)
    t.ack(make_ack(r1, "sqlite", AckStatus.HIDDEN, T0 + timedelta(seconds=2), retained_until=T0 + timedelta(days=1)))
    t.ack(make_ack(r1, "search", AckStatus.DELETED, T0 + timedelta(seconds=3)), partition=1)
    t.ack(make_ack(r1, "sqlite", AckStatus.PURGED, T0 + timedelta(seconds=4), items_affected=0))
    t.ack(make_ack(r2, "sqlite", AckStatus.ABSENT, T0 + timedelta(seconds=5), items_affected=0))
    return t


def export(topics: Topics, key: Pseudonymizer = K1) -> bytes:
    data, _trailer = export_evidence(topics.history.snapshot(), key, REQUESTS_TOPIC, PROOFS_TOPIC,
                                     exported_at=T0 + timedelta(minutes=1))
    return data


def verify(data: bytes, topics: Topics, keys: KeyRing | None = None) -> VerifyReport:
    keys = keys or KeyRing({"k1": SECRET_K1}, "k1")
    return verify_export(data, topics.history, keys, REQUESTS_TOPIC, PROOFS_TOPIC)


def proof_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in split_lines(data)[1:-1]]


def rewrite(data: bytes, change: Any, reseal: Pseudonymizer | None = None, rehash: bool = False) -> bytes:
    """Apply ``change`` to the proof lines; optionally recompute the trailer's digests."""
    lines = split_lines(data)
    records = [json.loads(line) for line in lines[1:-1]]
    records = change(records)
    body = lines[0] + b"".join(encode_line(r) for r in records)
    trailer = ExportTrailer.model_validate_json(lines[-1])
    if reseal is not None:
        trailer = seal(body, len(records), len({r["request_id"] for r in records}), reseal)
    elif rehash:
        trailer = trailer.model_copy(update={"sha256": hashlib.sha256(body).hexdigest(),
                                             "lines": len(records)})
    return body + encode_line(trailer.model_dump())


def fields(report: VerifyReport) -> list[tuple[int | None, str | None]]:
    return [(p.line, p.field) for p in report.problems]


def messages(report: VerifyReport) -> str:
    return "\n".join(str(p) for p in report.problems)


# --- export ---------------------------------------------------------------------------


def test_export_frames_lines(topics: Topics) -> None:
    lines = split_lines(export(topics))

    header = ExportHeader.model_validate_json(lines[0])
    trailer = ExportTrailer.model_validate_json(lines[-1])
    assert header.requests_end_offsets == {"0": 1, "1": 1}
    assert header.proofs_end_offsets == {"0": 3, "1": 1}
    assert header.pseudonym_key_id == "k1"
    assert trailer.lines == 4
    assert trailer.requests == 2
    assert trailer.sha256 == hashlib.sha256(b"".join(lines[:-1])).hexdigest()
    assert all(line.endswith(b"\n") for line in lines)


def test_export_keeps_status_steps(topics: Topics) -> None:
    by_store = {(r["request_id"], r["store"]): r for r in proof_lines(export(topics))}

    sqlite = by_store[("r1", "sqlite")]
    assert sqlite["status"] == "PURGED"
    assert [(s["status"], s["at"]) for s in sqlite["steps"]] == [
        ("HIDDEN", "2025-03-01T12:00:02.000+00:00"), ("PURGED", "2025-03-01T12:00:04.000+00:00")]
    assert sqlite["applied_at"] == "2025-03-01T12:00:04.000+00:00"
    assert sqlite["items_affected"] == 0
    assert sqlite["retained_until"] is None
    assert sqlite["terminal"] is True
    assert sqlite["complete"] is True
    assert sqlite["requested_at"] == "2025-03-01T12:00:00.000+00:00"
    assert sqlite["policy_version"] == "1"
    assert sqlite["reconcile"] is False


def test_export_marks_pending_store(topics: Topics) -> None:
    by_store = {(r["request_id"], r["store"]): r for r in proof_lines(export(topics))}

    search = by_store[("r2", "search")]
    assert search["status"] == "PENDING"
    assert search["steps"] == []
    assert search["applied_at"] is None
    assert search["complete"] is False
    assert by_store[("r2", "sqlite")]["status"] == "ABSENT"
    assert by_store[("r2", "sqlite")]["complete"] is False


def test_export_has_pseudonym_not_subject(topics: Topics) -> None:
    data = export(topics)
    records = proof_lines(data)

    assert CANARY.encode() not in data
    assert b"9876543211" not in data
    assert SECRET_K1 not in data
    assert SECRET_K1.hex().encode() not in data
    assert {r["subject_pseudonym"] for r in records if r["request_id"] == "r1"} == {
        K1.pseudonym(f"customer:{CANARY}")}
    assert all("subject_id" not in r and "subject_key" not in r for r in records)


def test_request_without_store_gets_line() -> None:
    t = Topics()
    t.request(DeletionRequest(request_id="r9", subject_type="customer", subject_id="1", data_class="retired",
                              reason="user_request", requested_by="cli", requested_at=T0, cutoff_at=T0))

    records = proof_lines(export(t))

    assert [(r["request_id"], r["store"], r["status"]) for r in records] == [("r9", None, "PENDING")]
    assert verify(export(t), t).ok


# --- verify ---------------------------------------------------------------------------


def test_verify_accepts_untouched_export(topics: Topics) -> None:
    report = verify(export(topics), topics)

    assert report.ok, messages(report)
    assert report.proof_lines == 4
    assert report.hmac_valid


def test_verify_ignores_records_after_export(topics: Topics) -> None:
    data = export(topics)
    r2 = topics.history.requests[1].record
    assert isinstance(r2, DeletionRequest)
    topics.ack(make_ack(r2, "search", AckStatus.DELETED, T0 + timedelta(minutes=2)), partition=1)
    topics.request(make_request("r3", at=T0 + timedelta(minutes=2)))

    report = verify(data, topics)

    assert report.ok, messages(report)


def test_verify_reports_tampered_status(topics: Topics) -> None:
    def promote(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if (record["request_id"], record["store"]) == ("r2", "search"):
                record["status"] = "DELETED"
        return records

    data = rewrite(export(topics), promote)
    report = verify(data, topics)

    assert not report.ok
    assert (5, "status") in fields(report)
    assert (None, "sha256") in fields(report)
    assert (None, "hmac_sha256") in fields(report)
    assert "line 5 (request r2, store search) field status: the file has \"DELETED\", the ledger has \"PENDING\"" \
        in messages(report)


def test_verify_reports_rehashed_tamper(topics: Topics) -> None:
    def drop_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if (record["request_id"], record["store"]) == ("r1", "sqlite"):
                record["steps"] = record["steps"][1:]
        return records

    report = verify(rewrite(export(topics), drop_step, rehash=True), topics)

    assert (None, "sha256") not in fields(report)
    assert (None, "hmac_sha256") in fields(report)
    assert any(p.field == "steps" and p.request_id == "r1" for p in report.problems)


def test_verify_reports_compacted_steps(topics: Topics) -> None:
    data = export(topics)
    # Compaction of the proofs topic removes the HIDDEN ack, superseded by PURGED.
    topics.history.acks = [a for a in topics.history.acks if a.record.status is not AckStatus.HIDDEN]

    report = verify(data, topics)

    assert [p.field for p in report.problems] == ["steps"]
    assert "compaction" in report.problems[0].message


def test_verify_reports_unexpected_field(topics: Topics) -> None:
    def add_payload(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[0]["payload"] = {"name": "someone"}
        return records

    report = verify(rewrite(export(topics), add_payload, reseal=K1), topics)

    assert fields(report) == [(2, "payload")]


def test_verify_reports_wrong_key(topics: Topics) -> None:
    wrong = KeyRing({"k1": b"not-the-first-secret-0123456789"}, "k1")

    report = verify(export(topics), topics, wrong)

    assert (None, "hmac_sha256") in fields(report)
    assert [line for line, name in fields(report) if name == "subject_pseudonym"] == [2, 3, 4, 5]


def test_verify_after_key_rotation(topics: Topics) -> None:
    old_export = export(topics, K1)
    rotated = KeyRing({"k1": SECRET_K1, "k2": SECRET_K2}, "k2")
    r3 = topics.request(make_request("r3", at=T0 + timedelta(minutes=2)))
    topics.ack(make_ack(r3, "sqlite", AckStatus.DELETED, T0 + timedelta(minutes=3), key=K2))

    old_report = verify(old_export, topics, rotated)
    new_report = verify(export(topics, K2), topics, rotated)

    assert old_report.ok, messages(old_report)
    assert old_report.hmac_key_id == "k1"
    assert new_report.ok, messages(new_report)
    assert new_report.hmac_key_id == "k2"


def test_verify_reports_unknown_key_id(topics: Topics) -> None:
    only_k2 = KeyRing({"k2": SECRET_K2}, "k2")

    report = verify(export(topics, K1), topics, only_k2)

    assert (None, "hmac_key_id") in fields(report)
    assert [line for line, name in fields(report) if name == "pseudonym_key_id"] == [2, 3, 4, 5]
    assert "key id 'k1' is not in the key ring (key ids: 'k2')" in messages(report)


def test_verify_reports_truncated_file(topics: Topics) -> None:
    lines = split_lines(export(topics))
    truncated = b"".join(lines[:3]) + lines[3][:20]

    report = verify(truncated, topics)

    assert not report.ok
    assert "truncated" in report.problems[0].message
    assert (4, None) in fields(report)  # the cut line is not valid JSON
    missing = [(p.request_id, p.store) for p in report.problems if p.line is None]
    assert missing == [("r2", "sqlite"), ("r2", "search")]


def test_verify_reports_removed_line(topics: Topics) -> None:
    report = verify(rewrite(export(topics), lambda records: records[:-1]), topics)

    assert (None, "lines") in fields(report)
    assert any(p.line is None and (p.request_id, p.store) == ("r2", "search") for p in report.problems)


def test_verify_reports_added_request(topics: Topics) -> None:
    def add_request(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        extra = dict(records[0], request_id="forged")
        return [*records, extra]

    report = verify(rewrite(export(topics), add_request, reseal=K1), topics)

    assert [(p.line, p.request_id) for p in report.problems] == [(6, "forged")]
    assert "not on the requests topic" in report.problems[0].message


def test_verify_reports_request_after_export(topics: Topics) -> None:
    data = export(topics)
    late = topics.request(make_request("late", at=T0 + timedelta(minutes=2)))
    # A line for the late request, as if it had been in the ledger at export time.
    late_line = {**proof_lines(data)[0], "request_id": late.request_id}

    report = verify(rewrite(data, lambda records: [*records, late_line], reseal=K1), topics)

    assert [(p.line, p.request_id) for p in report.problems] == [(6, "late")]
    assert "after the export's end offset 1" in report.problems[0].message


def test_verify_reports_duplicate_line(topics: Topics) -> None:
    report = verify(rewrite(export(topics), lambda records: [*records, records[0]], reseal=K1), topics)

    assert [(p.line, p.field) for p in report.problems] == [(6, None)]
    assert "second line" in report.problems[0].message


def test_verify_reports_other_topic(topics: Topics) -> None:
    report = verify_export(export(topics), topics.history, KeyRing({"k1": SECRET_K1}, "k1"),
                           "other.requests", PROOFS_TOPIC)

    assert (1, "requests_topic") in fields(report)


def test_verify_reports_empty_file(topics: Topics) -> None:
    report = verify(b"", topics)

    assert not report.ok
    assert "empty" in report.problems[0].message


def test_verify_reports_invalid_header(topics: Topics) -> None:
    lines = split_lines(export(topics))
    header = json.loads(lines[0])
    del header["requests_end_offsets"]

    report = verify(encode_line(header) + b"".join(lines[1:]), topics)

    assert report.problems[0].line == 1
    assert "requests_end_offsets" in report.problems[0].message
    assert "skipped" in report.problems[-1].message


def test_problem_names_line_and_field(topics: Topics) -> None:
    def change_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[0]["items_affected"] = True
        return records

    report = verify(rewrite(export(topics), change_items, reseal=K1), topics)

    assert [str(p) for p in report.problems] == [
        "line 2 (request r1, store sqlite) field items_affected: the file has true, the ledger has 0"]


def test_export_marks_cancelled_request() -> None:
    t = Topics()
    request = t.request(make_request("r1"))
    t.ack(make_ack(request, "sqlite", AckStatus.HIDDEN, T0 + timedelta(seconds=1)))
    t.request(request.model_copy(update={"action": RequestAction.CANCEL}))
    t.ack(make_ack(request, "sqlite", AckStatus.CANCELLED, T0 + timedelta(seconds=2)))
    t.ack(make_ack(request, "search", AckStatus.CANCELLED, T0 + timedelta(seconds=2)))
    data = export(t)

    records = proof_lines(data)

    assert [(r["store"], r["status"], r["action"], r["cancelled"]) for r in records] == [
        ("sqlite", "CANCELLED", "DELETE", True), ("search", "CANCELLED", "DELETE", True)]
    assert [s["status"] for s in records[0]["steps"]] == ["HIDDEN", "CANCELLED"]
    assert verify(data, t).ok


def test_verify_command_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tombstone.cli import main

    status = main(["proof", "verify", str(tmp_path / "absent.jsonl")])

    assert status == 2
    assert f"Cannot read the export {tmp_path / 'absent.jsonl'}" in capsys.readouterr().err


def test_verify_reports_invalid_offsets(topics: Topics) -> None:
    lines = split_lines(export(topics))
    header = json.loads(lines[0])
    header["proofs_end_offsets"] = {"zero": 3}

    report = verify(encode_line(header) + b"".join(lines[1:]), topics)

    assert report.problems[0].line == 1
    assert "partition 'zero'" in report.problems[0].message
