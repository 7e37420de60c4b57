"""Verification of an evidence export against the ledger rebuilt from the topics.

The verifier rebuilds the ledger from the records below the end offsets in the export's
header, computes the lines that an export at that moment contains, and compares them with
the file field by field. Pseudonyms are checked with the key that each line names, taken
from the key ring, so an export made before a key rotation still verifies after it.

NOTE: compaction keeps only the latest ack per request and store, and the latest request
per requests-topic key, once a record is older than ``min.compaction.lag.ms`` (the maximum
worker outage that ``tombstone topics create`` sets, 7 days by default). Beyond that an
export's earlier steps or superseded requests can no longer be found on the topics, so
their lines fail, and a missing earlier step is reported as possibly compacted. The
trailer's HMAC still shows whether the file changed since the export.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tombstone.errors import describe_validation_error
from tombstone.ledger.evidence import (
    MAC_PURPOSE,
    ExportHeader,
    ExportTrailer,
    count_requests,
    inventory_digest,
    proof_records,
)
from tombstone.ledger.history import LedgerHistory, Snapshot
from tombstone.models import DeletionRequest
from tombstone.pseudonym import KeyRing

# Fields checked against the key ring instead of the ledger.
PSEUDONYM_FIELDS = ("subject_pseudonym", "pseudonym_key_id")
MAX_VALUE_CHARS = 160

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """One reason why an export does not verify, with the line and field it concerns."""

    message: str
    line: int | None = None
    field: str | None = None
    request_id: str | None = None
    store: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        if self.request_id is not None:
            where += f" (request {self.request_id}, store {self.store or '-'})"
        if self.field is not None:
            where += f" field {self.field}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "request_id": self.request_id,
                "store": self.store, "message": self.message}


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    proof_lines: int = 0
    requests: int = 0
    hmac_key_id: str | None = None
    hmac_valid: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, message: str, line: int | None = None, field: str | None = None,
            request_id: str | None = None, store: str | None = None) -> None:
        self.problems.append(Problem(message, line, field, request_id, store))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "proof_lines": self.proof_lines, "requests": self.requests,
                "hmac_key_id": self.hmac_key_id, "hmac_valid": self.hmac_valid,
                "notes": self.notes, "problems": [p.to_dict() for p in self.problems]}


def verify_export(data: bytes, history: LedgerHistory, keys: KeyRing, requests_topic: str,
                  proofs_topic: str) -> VerifyReport:
    """Check an export's framing, digests, HMAC, pseudonyms and every line against the ledger."""
    report = VerifyReport()
    lines = split_lines(data)
    if not lines:
        report.add("the file is empty; an export has at least a header line and a trailer line")
        return report

    header = _parse_model(lines[0], 1, ExportHeader, report)
    trailer = None
    body_end = len(lines)
    if len(lines) >= 2 and _line_type(lines[-1]) == "trailer":
        body_end = len(lines) - 1
        trailer = _parse_model(lines[-1], len(lines), ExportTrailer, report)
        if not lines[-1].endswith(b"\n"):
            report.add("the trailer line has no final newline: the file was cut", len(lines))
    else:
        report.add("the file is truncated: its last line is not the trailer line, so lines after "
                   "it may be missing", len(lines))

    proof_lines = _parse_proof_lines(lines, body_end, report)
    report.proof_lines = len(proof_lines)
    report.requests = count_requests(record for _, record in proof_lines)
    if trailer is not None:
        _check_trailer(trailer, b"".join(lines[:body_end]), report, keys)
    if header is None:
        report.add("the ledger comparison was skipped because the header line is invalid", 1)
        return report
    _check_header(header, history, requests_topic, proofs_topic, report)
    snapshot = history.snapshot(header.request_ends(), header.proof_ends())
    _compare_lines(proof_lines, snapshot, history, keys, report, truncated=trailer is None)
    return report


def split_lines(data: bytes) -> list[bytes]:
    """Split into lines that keep their ``\\n``. A last line without one is kept as it is."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _line_type(line: bytes) -> object:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value.get("type") if isinstance(value, dict) else None


def _load_object(line: bytes, number: int, report: VerifyReport) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError as exc:
        report.add(f"not valid JSON ({exc})", number)
        return None
    if not isinstance(value, dict):
        report.add(f"a line is a JSON object, not a JSON {type(value).__name__}", number)
        return None
    return value


def _parse_model(line: bytes, number: int, model: type[ModelT], report: VerifyReport) -> ModelT | None:
    value = _load_object(line, number, report)
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        kind = "header" if model is ExportHeader else "trailer"
        report.add(f"invalid {kind} line: {describe_validation_error(exc)}", number)
        return None


def _parse_proof_lines(lines: list[bytes], body_end: int, report: VerifyReport) -> list[tuple[int, dict[str, Any]]]:
    parsed = []
    for index in range(1, body_end):
        number = index + 1
        record = _load_object(lines[index], number, report)
        if record is None:
            continue
        if record.get("type") != "proof":
            report.add(f"a {json.dumps(record.get('type'))} line between the header and the trailer; "
                       "only proof lines belong there", number, "type")
            continue
        parsed.append((number, record))
    return parsed


def _check_trailer(trailer: ExportTrailer, body: bytes, report: VerifyReport, keys: KeyRing) -> None:
    if trailer.lines != report.proof_lines:
        report.add(f"the trailer counts {trailer.lines} proof lines but the file has "
                   f"{report.proof_lines}: lines were removed or added", field="lines")
    if trailer.requests != report.requests:
        report.add(f"the trailer counts {trailer.requests} requests but the proof lines name "
                   f"{report.requests}", field="requests")
    if not hmac.compare_digest(trailer.sha256, hashlib.sha256(body).hexdigest()):
        report.add("the SHA-256 of the lines before the trailer does not match the trailer's: "
                   "the file changed after the export", field="sha256")
    report.hmac_key_id = trailer.hmac_key_id
    key = keys.get(trailer.hmac_key_id)
    if key is None:
        report.add(_unknown_key_message(trailer.hmac_key_id, keys), field="hmac_key_id")
    elif hmac.compare_digest(trailer.hmac_sha256, key.mac(MAC_PURPOSE, body)):
        report.hmac_valid = True
    else:
        report.add(f"the HMAC-SHA256 under key {trailer.hmac_key_id!r} does not match: the file changed "
                   "after the export, or the key ring holds another secret under that key id",
                   field="hmac_sha256")


def _check_header(header: ExportHeader, history: LedgerHistory, requests_topic: str, proofs_topic: str,
                  report: VerifyReport) -> None:
    for name, exported, current in (("requests_topic", header.requests_topic, requests_topic),
                                    ("proofs_topic", header.proofs_topic, proofs_topic)):
        if exported != current:
            report.add(f"the export was made from topic {exported!r} but this verification reads "
                       f"{current!r}; set the topic variables to the exported topics", 1, name)
    if header.inventory_sha256 != inventory_digest(history.inventory):
        report.notes.append(
            f"the inventory differs from the one of the export (version {header.inventory_version}); "
            "lines of stores that were added or removed since then do not verify")


def _compare_lines(proof_lines: list[tuple[int, dict[str, Any]]], snapshot: Snapshot, history: LedgerHistory,
                   keys: KeyRing, report: VerifyReport, truncated: bool) -> None:
    # Pseudonyms are checked per line with the line's own key, so the expected lines leave them empty.
    expected_records = proof_records(snapshot, lambda _request: ("", ""))
    expected = {(record["request_id"], record["store"]): record for record in expected_records}
    seen: set[tuple[str, str | None]] = set()
    for number, record in proof_lines:
        request_id, store = record.get("request_id"), record.get("store")
        if not isinstance(request_id, str) or not (store is None or isinstance(store, str)):
            report.add("request_id must be a string and store a string or null", number, "request_id")
            continue
        if (request_id, store) in seen:
            report.add("a second line for the same request and store", number, None, request_id, store)
            continue
        seen.add((request_id, store))
        expected_record = expected.get((request_id, store))
        if expected_record is None:
            report.add(_not_in_ledger(request_id, store, snapshot, history), number, None, request_id, store)
            continue
        _compare_fields(number, record, expected_record, report)
        _check_pseudonym(number, record, snapshot.state.requests[request_id], keys, report)

    hint = " (the file is truncated)" if truncated else ""
    for record in expected_records:
        key = (record["request_id"], record["store"])
        if key not in seen:
            report.add(f"the ledger has this proof at the export's offsets, but the file has no line for it{hint}",
                       request_id=key[0], store=key[1])


def _compare_fields(number: int, record: dict[str, Any], expected: dict[str, Any], report: VerifyReport) -> None:
    request_id, store = expected["request_id"], expected["store"]
    for name in sorted(set(expected) | set(record)):
        if name in PSEUDONYM_FIELDS:
            continue
        if name not in expected:
            report.add("unexpected field: an export line has no such field", number, name, request_id, store)
        elif name not in record:
            report.add(f"missing; the ledger has {_show(expected[name])}", number, name, request_id, store)
        elif _canonical(record[name]) != _canonical(expected[name]):
            report.add(_difference(name, record[name], expected[name]), number, name, request_id, store)


def _difference(name: str, found: Any, expected: Any) -> str:
    if name != "steps" or not isinstance(found, list):
        return f"the file has {_show(found)}, the ledger has {_show(expected)}"
    found_text, expected_text = _show_steps(found), _show_steps(expected)
    if found_text == expected_text:
        # Same statuses and times: the difference is in another field of a step.
        found_text, expected_text = _show(found), _show(expected)
    message = f"the file has {found_text}, the ledger has {expected_text}"
    if len(expected) < len(found) and _canonical(found[len(found) - len(expected):]) == _canonical(expected):
        message += ("; the earlier steps are no longer on the proofs topic, which compaction does "
                    "once they are older than min.compaction.lag.ms")
    return message


def _check_pseudonym(number: int, record: dict[str, Any], request: DeletionRequest, keys: KeyRing,
                     report: VerifyReport) -> None:
    request_id, store = request.request_id, record.get("store")
    key_id, pseudonym = record.get("pseudonym_key_id"), record.get("subject_pseudonym")
    if not isinstance(key_id, str):
        report.add("missing or not a string", number, "pseudonym_key_id", request_id, store)
        return
    key = keys.get(key_id)
    if key is None:
        report.add(_unknown_key_message(key_id, keys), number, "pseudonym_key_id", request_id, store)
        return
    if not isinstance(pseudonym, str) or not hmac.compare_digest(pseudonym, key.pseudonym(request.subject_key)):
        report.add(f"not the HMAC-SHA256 of the request's subject key under key {key_id!r}",
                   number, "subject_pseudonym", request_id, store)


def _not_in_ledger(request_id: str, store: str | None, snapshot: Snapshot, history: LedgerHistory) -> str:
    if request_id in snapshot.state.requests:
        return (f"the ledger has no proof of this request in store {store!r}: the inventory does not "
                "name that store for the data class and the store sent no ack before the export")
    located = history.request_position(request_id)
    if located is not None:
        end = snapshot.request_ends.get(located.partition, 0)
        return (f"the request is on the requests topic at partition {located.partition} offset "
                f"{located.offset}, after the export's end offset {end}: it was not in the ledger "
                "when the export was made")
    return ("the request is not on the requests topic: the line was added to the file, or compaction "
            "or a tombstone removed the request from the topic")


def _unknown_key_message(key_id: str, keys: KeyRing) -> str:
    known = ", ".join(repr(k) for k in keys.key_ids) or "none"
    return (f"key id {key_id!r} is not in the key ring (key ids: {known}). Add that key as a "
            f"'{key_id} = SECRET' line to the file named by TOMBSTONE_PSEUDONYM_KEYS_FILE")


def _canonical(value: Any) -> str:
    # JSON text keeps 1, 1.0 and true apart, which Python's == does not.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _show(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _show_steps(steps: Any) -> str:
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return _show(steps)
    if not steps:
        return "no steps"
    return f"{len(steps)} step(s): " + ", ".join(f"{s.get('status')} at {s.get('at')}" for s in steps)
