"""Evidence export and verification on the real broker, across a pseudonym key rotation.

The subjects have distinctive canary ids, so a raw subject id that leaks into an export,
a log line or `tombstone proof show` output is found by a plain substring search.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.helpers import ProofReader, WorkerThread, wait_for, write_sqlite_spec
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration

# Subjects with rows in the store, one without (ABSENT), and one requested after the rotation.
CANARIES = ["canary-7f3e9a", "canary-b41d07"]
ABSENT_CANARY = "canary-0c55d2"
LATE_CANARY = "canary-e5c210"
ALL_CANARIES = [*CANARIES, ABSENT_CANARY, LATE_CANARY]
NEW_KEY = "rotated-key-fedcba9876543210fedcba98"


def _tombstone(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tombstone.cli", "-vv", *args], capture_output=True,
                          text=True, timeout=120, env=env or dict(os.environ))


def _text_keyed_spec(directory: Path) -> Path:
    """The helpers' SQLite spec with a text subject column, so canary ids fit."""
    spec = write_sqlite_spec(directory)
    spec.write_text(spec.read_text(encoding="utf-8").replace('subject_id_type = "integer"',
                                                             'subject_id_type = "text"'), encoding="utf-8")
    return spec


def _seed(database: Path, subject_ids: list[str]) -> None:
    db = sqlite3.connect(database)
    with db:
        db.execute("CREATE TABLE customer (customer_id TEXT, name TEXT, updated_at_ms INTEGER)")
        db.executemany("INSERT INTO customer VALUES (?, ?, 1)", [(s, f"name of {s}") for s in subject_ids])
    db.close()


def _submit(subject_ids: list[str]) -> list[str]:
    requester = Requester(KafkaSettings(), client_id="evidence-test")
    try:
        requests = requester.submit([new_request(f"customer:{s}", "customer_profile", "user_request", "evidence-test")
                                     for s in subject_ids])
    finally:
        requester.close()
    return [r.request_id for r in requests]


def _run_worker(start_worker: Callable[[Path], WorkerThread], spec: Path, proof_reader: ProofReader,
                acks: int) -> None:
    worker = start_worker(spec)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= acks, what=f"{acks} acks")
    worker.join()


def test_export_verifies_after_key_rotation(tmp_path: Path, pipeline_topics: dict[str, str],
                                            proof_reader: ProofReader, start_worker: Callable[[Path], WorkerThread],
                                            caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    old_key, old_key_id = pipeline_topics["TOMBSTONE_PSEUDONYM_KEY"], pipeline_topics["TOMBSTONE_PSEUDONYM_KEY_ID"]
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[data_classes.customer_profile]\nsubject_types = ["customer"]\n'
                         'stores = [{ store = "operational-db", action = "delete" },\n'
                         '          { store = "search", action = "delete" }]\n', encoding="utf-8")
    monkeypatch.setenv("TOMBSTONE_INVENTORY", str(inventory))
    spec = _text_keyed_spec(tmp_path)
    _seed(tmp_path / "operational.sqlite", [*CANARIES, LATE_CANARY, "someone-else"])
    outputs: list[str] = []

    # Before the rotation: three requests proven by the SQLite store under the old key.
    request_ids = _submit([*CANARIES, ABSENT_CANARY])
    _run_worker(start_worker, spec, proof_reader, acks=3)
    old_export = tmp_path / "evidence-before-rotation.jsonl"
    exported = _tombstone("proof", "export", "--format", "jsonl", "--output", str(old_export))
    show_results = [_tombstone("proof", "show", f"customer:{CANARIES[0]}"),
                    _tombstone("proof", "show", request_ids[1], "--json")]
    outputs += [exported.stdout, exported.stderr, *(r.stdout + r.stderr for r in show_results)]
    assert exported.returncode == 0, exported.stderr
    assert all(r.returncode == 0 for r in show_results), [r.stderr for r in show_results]
    old_lines = [json.loads(line) for line in old_export.read_text(encoding="utf-8").splitlines()]
    proofs = old_lines[1:-1]
    assert len(proofs) == 6
    assert {(p["store"], p["status"]) for p in proofs} == {
        ("operational-db", "DELETED"), ("operational-db", "ABSENT"), ("search", "PENDING")}
    assert {p["pseudonym_key_id"] for p in proofs} == {old_key_id}
    assert old_lines[-1]["lines"] == 6

    # Rotate: a new current key, and the old one moved to the key ring file.
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    ring = secrets / "pseudonym-keys"
    ring.write_text(f"{old_key_id} = {old_key}\n", encoding="utf-8")
    ring.chmod(0o600)
    monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEY", NEW_KEY)
    monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEY_ID", "k2")
    monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEYS_FILE", str(ring))
    _submit([LATE_CANARY])
    _run_worker(start_worker, spec, proof_reader, acks=4)
    assert proof_reader.acks[-1].pseudonym_key_id == "k2"

    verified_old = _tombstone("proof", "verify", str(old_export))
    new_export = tmp_path / "evidence-after-rotation.jsonl"
    exported_new = _tombstone("proof", "export", "--output", str(new_export))
    verified_new = _tombstone("proof", "verify", str(new_export), "--json")
    outputs += [r.stdout + r.stderr for r in (verified_old, exported_new, verified_new)]
    assert verified_old.returncode == 0, verified_old.stdout + verified_old.stderr
    assert verified_old.stdout.startswith("OK: "), verified_old.stdout
    assert f"key id {old_key_id}" in verified_old.stdout
    assert exported_new.returncode == 0, exported_new.stderr
    assert verified_new.returncode == 0, verified_new.stdout + verified_new.stderr
    assert json.loads(verified_new.stdout)["proof_lines"] == 8
    new_proofs = [json.loads(line) for line in new_export.read_text(encoding="utf-8").splitlines()[1:-1]]
    assert {p["pseudonym_key_id"] for p in new_proofs} == {"k2"}

    # Without the key ring, the old key id is unknown.
    no_ring = {k: v for k, v in os.environ.items() if k != "TOMBSTONE_PSEUDONYM_KEYS_FILE"}
    unknown = _tombstone("proof", "verify", str(old_export), env=no_ring)
    outputs.append(unknown.stdout + unknown.stderr)
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert f"key id '{old_key_id}' is not in the key ring" in unknown.stdout
    assert "line 2 (request" in unknown.stdout

    # A line changed after the export.
    tampered = tmp_path / "evidence-tampered.jsonl"
    text = old_export.read_text(encoding="utf-8").replace('"status":"PENDING"', '"status":"DELETED"', 1)
    tampered.write_text(text, encoding="utf-8")
    rejected = _tombstone("proof", "verify", str(tampered))
    outputs.append(rejected.stdout + rejected.stderr)
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "field status: the file has \"DELETED\", the ledger has \"PENDING\"" in rejected.stdout
    assert "field hmac_sha256" in rejected.stdout
    assert rejected.stdout.splitlines()[-1].startswith("FAILED: ")

    # No raw subject id and no key anywhere in the evidence, the command output or the logs.
    texts = {
        "old export": old_export.read_text(encoding="utf-8"),
        "new export": new_export.read_text(encoding="utf-8"),
        "command output": "\n".join(outputs),
        "logs": caplog.text,
    }
    assert "Request" in caplog.text  # the captured logs are not empty
    for name, text in texts.items():
        for canary in ALL_CANARIES:
            assert canary not in text, f"{canary} appears in the {name}"
        for secret in (old_key, NEW_KEY, old_key.encode().hex(), NEW_KEY.encode().hex()):
            assert secret not in text, f"a pseudonym key appears in the {name}"
