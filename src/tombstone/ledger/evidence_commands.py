"""``tombstone proof export`` and ``tombstone proof verify``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tombstone.errors import ConfigError
from tombstone.inventory import default_inventory_path, load_inventory
from tombstone.ledger.evidence import export_evidence
from tombstone.ledger.evidence_verify import verify_export
from tombstone.ledger.history import HistoryReader, LedgerHistory
from tombstone.pseudonym import KeyRing
from tombstone.settings import KafkaSettings

EXIT_NOT_VERIFIED = 1


def read_history(inventory_path: str | None, timeout_s: float) -> tuple[LedgerHistory, int]:
    """Read both topics from their beginning, and return the history and the count of undecodable records."""
    history = LedgerHistory(load_inventory(inventory_path or default_inventory_path()))
    reader = HistoryReader(KafkaSettings(), history)
    try:
        reader.refresh(timeout_s)
    finally:
        reader.close()
    return history, reader.undecodable


def run_export(inventory_path: str | None, output: str | None, timeout_s: float) -> int:
    """Write the evidence of every request in the ledger to ``output``, or to stdout."""
    key = KeyRing.from_settings().current
    kafka = KafkaSettings()
    history, undecodable = read_history(inventory_path, timeout_s)
    data, trailer = export_evidence(history.snapshot(), key, kafka.requests_topic, kafka.proofs_topic)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomically(Path(output), data)
    target = output or "stdout"
    print(f"Exported {trailer.lines} proof lines of {trailer.requests} requests to {target} "
          f"(pseudonym key id {key.key_id}).", file=sys.stderr)
    if undecodable:
        print(f"{undecodable} records on the topics were not readable and are not in the export.",
              file=sys.stderr)
    return 0


def run_verify(path: str, inventory_path: str | None, timeout_s: float, json_output: bool) -> int:
    """Verify an export against the ledger; return 0 only when every check passes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the export {path}: {exc.strerror}.") from None
    keys = KeyRing.from_settings(require_current=False)
    kafka = KafkaSettings()
    history, undecodable = read_history(inventory_path, timeout_s)
    report = verify_export(data, history, keys, kafka.requests_topic, kafka.proofs_topic)
    if undecodable:
        report.notes.append(f"{undecodable} records on the topics were not readable and were left out "
                            "of the ledger")
    if json_output:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(problem)
        for note in report.notes:
            print(f"note: {note}")
        if report.ok:
            print(f"OK: {path}: {report.proof_lines} proof lines of {report.requests} requests match the "
                  f"ledger; SHA-256 and HMAC-SHA256 (key id {report.hmac_key_id}) are valid.")
        else:
            print(f"FAILED: {path}: {len(report.problems)} problem(s) in {report.proof_lines} proof lines "
                  f"of {report.requests} requests.")
    return 0 if report.ok else EXIT_NOT_VERIFIED


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it, so no reader sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"Cannot write the export to {path}: {exc.strerror}.") from None
