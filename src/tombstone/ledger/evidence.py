"""Evidence export: one JSON line per request and store, framed by a header and a trailer.

File layout (JSON Lines, ASCII, every line ends with ``\\n``)::

    {"type": "header", "format": "tombstone-evidence", "version": 1, ...}
    {"type": "proof", "request_id": ..., "store": ..., "status": ..., "steps": [...], ...}
    ...
    {"type": "trailer", "lines": N, "requests": R, "sha256": ..., "hmac_sha256": ..., "hmac_key_id": ...}

The header records the end offset of every partition of the requests and proofs topics
that the export read, so a verifier can rebuild the ledger as it was at export time
however much arrived since. The trailer counts the proof lines and carries the SHA-256 of
every byte before it, which detects truncation and accidental edits, and an HMAC-SHA256 of
the same bytes under a key derived from the current pseudonym key. Anyone can recompute a
plain digest after editing the file, but only a holder of the key can recompute the HMAC.

A proof line carries the subject's pseudonym and its key id, never the subject id, and
never payload. Its ``status`` is the store's latest ack and ``steps`` lists every status
the store acked with its time, oldest first (HIDDEN, then PURGED). A store that the
inventory names but that has not acked yet gets a line with status ``PENDING`` and no
steps. ``complete``, ``superseded_by`` and ``cancelled`` describe the whole request, as in
``tombstone proof show``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tombstone.inventory import Inventory
from tombstone.ledger.history import EndOffsets, Snapshot
from tombstone.ledger.state import StoreRow
from tombstone.models import DeletionAck, DeletionRequest
from tombstone.pseudonym import Pseudonymizer

FORMAT = "tombstone-evidence"
VERSION = 1
MAC_PURPOSE = "evidence-export-v1"
PENDING = "PENDING"

# A subject's pseudonym and the id of the key that made it, for one request.
PseudonymFunction = Callable[[DeletionRequest], tuple[str, str]]


class ExportHeader(BaseModel):
    """First line of an export: what was read, and with which inventory and key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["header"]
    format: Literal["tombstone-evidence"]
    version: Literal[1]
    exported_at: str
    requests_topic: str
    proofs_topic: str
    requests_end_offsets: dict[str, int] = Field(description="End offset per partition, as a decimal string key.")
    proofs_end_offsets: dict[str, int]
    inventory_version: str
    inventory_sha256: str
    pseudonym_key_id: str

    @field_validator("requests_end_offsets", "proofs_end_offsets")
    @classmethod
    def _check_offsets(cls, value: dict[str, int]) -> dict[str, int]:
        for partition, offset in value.items():
            if not (partition.isascii() and partition.isdigit()) or offset < 0:
                raise ValueError(f"partition {partition!r} with offset {offset}: expected a partition "
                                 "number and an offset of at least 0")
        return value

    def request_ends(self) -> EndOffsets:
        return {int(partition): offset for partition, offset in self.requests_end_offsets.items()}

    def proof_ends(self) -> EndOffsets:
        return {int(partition): offset for partition, offset in self.proofs_end_offsets.items()}


class ExportTrailer(BaseModel):
    """Last line of an export: counts and digests of every byte before it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["trailer"]
    lines: int = Field(ge=0, description="Proof lines between header and trailer.")
    requests: int = Field(ge=0)
    sha256: str
    hmac_sha256: str
    hmac_key_id: str


def encode_line(record: dict[str, Any]) -> bytes:
    """Encode one JSON line in a fixed form: sorted keys, no spaces, ASCII only."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def inventory_digest(inventory: Inventory) -> str:
    """Hash the inventory's canonical JSON with SHA-256, so a verifier can tell that it changed."""
    canonical = json.dumps(inventory.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def iso(value: datetime | None) -> str | None:
    """Format a time as ISO 8601 in UTC with milliseconds, the precision of Avro timestamp-millis."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def proof_records(snapshot: Snapshot, pseudonym_of: PseudonymFunction) -> list[dict[str, Any]]:
    """Build the proof lines of every request in the snapshot, ordered by request time and id.

    Each request gets one line per store that the inventory names for its data class, and
    one per other store that acked it (``expected`` false). A request whose data class has no
    store in the inventory gets one line with ``store`` null, so that no request is left out.
    """
    state = snapshot.state
    requests = sorted(state.requests.values(), key=lambda r: (r.requested_at, r.request_id))
    records: list[dict[str, Any]] = []
    for request in requests:
        view = state.view(request.request_id)
        assert view is not None
        pseudonym, key_id = pseudonym_of(request)
        rows: list[StoreRow | None] = list(view.rows) or [None]
        for row in rows:
            ack = state.acks.get((request.request_id, row.store)) if row else None
            record = _proof_record(request, row, ack, pseudonym, key_id)
            record["complete"] = view.complete
            record["superseded_by"] = view.superseded_by
            record["cancelled"] = view.cancelled
            records.append(record)
    return records


def _proof_record(request: DeletionRequest, row: StoreRow | None, ack: DeletionAck | None, pseudonym: str,
                  key_id: str) -> dict[str, Any]:
    """Build one line's fields. ``ack`` is the store's latest ack, or None while the store is pending."""
    return {
        "type": "proof",
        "request_id": request.request_id,
        "action": request.action.value,
        "subject_type": request.subject_type,
        "subject_pseudonym": pseudonym,
        "pseudonym_key_id": key_id,
        "data_class": request.data_class,
        "reason": request.reason,
        "policy_version": request.policy_version,
        "requested_at": iso(request.requested_at),
        "cutoff_at": iso(request.cutoff_at),
        "cutoff_version": request.cutoff_version,
        "store": row.store if row else None,
        "expected": row.expected if row else False,
        "status": ack.status.value if ack else PENDING,
        "terminal": row.terminal if row else False,
        "steps": [{"status": status.value, "at": iso(at)} for status, at in row.steps] if row else [],
        "items_affected": ack.items_affected if ack else None,
        "remaining": ack.remaining if ack else None,
        "applied_at": iso(ack.applied_at) if ack else None,
        "worker": ack.worker if ack else None,
        "legal_basis": ack.legal_basis if ack else None,
        "retained_until": iso(ack.retained_until) if ack else None,
        "reason_code": ack.reason_code if ack else None,
        "reconcile": ack.reconcile if ack else None,
    }


def build_header(snapshot: Snapshot, requests_topic: str, proofs_topic: str, key_id: str,
                 exported_at: datetime) -> ExportHeader:
    inventory = snapshot.state.inventory
    return ExportHeader(
        type="header",
        format=FORMAT,
        version=VERSION,
        exported_at=iso(exported_at) or "",
        requests_topic=requests_topic,
        proofs_topic=proofs_topic,
        requests_end_offsets={str(p): o for p, o in sorted(snapshot.request_ends.items())},
        proofs_end_offsets={str(p): o for p, o in sorted(snapshot.proof_ends.items())},
        inventory_version=inventory.version,
        inventory_sha256=inventory_digest(inventory),
        pseudonym_key_id=key_id,
    )


def seal(body: bytes, proof_lines: int, requests: int, key: Pseudonymizer) -> ExportTrailer:
    """Build the trailer over ``body``, the header and proof lines exactly as written."""
    return ExportTrailer(
        type="trailer",
        lines=proof_lines,
        requests=requests,
        sha256=hashlib.sha256(body).hexdigest(),
        hmac_sha256=key.mac(MAC_PURPOSE, body),
        hmac_key_id=key.key_id,
    )


def export_evidence(snapshot: Snapshot, key: Pseudonymizer, requests_topic: str, proofs_topic: str,
                    exported_at: datetime | None = None) -> tuple[bytes, ExportTrailer]:
    """Build the export file of a snapshot and return it with its trailer.

    Pseudonyms and the trailer's HMAC use ``key``.
    """
    records = proof_records(snapshot, lambda request: (key.pseudonym(request.subject_key), key.key_id))
    header = build_header(snapshot, requests_topic, proofs_topic, key.key_id,
                          exported_at or datetime.now(UTC))
    body = encode_line(header.model_dump()) + b"".join(encode_line(record) for record in records)
    trailer = seal(body, len(records), count_requests(records), key)
    return body + encode_line(trailer.model_dump()), trailer


def count_requests(records: Iterable[dict[str, Any]]) -> int:
    return len({record.get("request_id") for record in records})
