"""Canary scan: raw subject ids may appear only in the stores and in dead-letter payloads.

Every subject id of a run starts with a distinctive canary string. After each scenario the
suite collects what a worker, the ledger and the CLI expose, and searches it for the
canary as text and as hex. Allowed places are not searched: the stores, the requests topic
(the input itself), and the dead-letter record's key and value, which keep the raw record
on purpose. The dead-letter record's Kafka headers are searched.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tombstone.inventory import load_inventory
from tombstone.ledger.ledger import Ledger
from tombstone.pseudonym import Pseudonymizer

from tests.faults.harness import PSEUDONYM_KEY, PSEUDONYM_KEY_ID, REPO_ROOT, Context
from tests.faults.oracle import TopicContents

logger = logging.getLogger(__name__)

PLACES = (
    "worker logs",
    "worker /metrics",
    "proofs topic (keys, values, headers)",
    "dead-letter record headers",
    "ledger views (LedgerState)",
    "tombstone proof show --json",
    "tombstone proof export",
    "broker log",
    "fault report",
)


@dataclass
class Leak:
    place: str
    where: str
    context: str


@dataclass
class PrivacyScan:
    canary: str
    leaks: list[Leak] = field(default_factory=list)
    searched: dict[str, int] = field(default_factory=dict)

    def _needles(self) -> list[bytes]:
        text = self.canary.encode("utf-8")
        return [text, text.hex().encode("ascii"), text.hex().upper().encode("ascii")]

    def scan_bytes(self, place: str, where: str, data: bytes | None) -> int:
        """Search one blob and record a leak when it contains the canary."""
        self.searched[place] = self.searched.get(place, 0) + 1
        if not data:
            return 0
        for needle in self._needles():
            at = data.find(needle)
            if at >= 0:
                start = max(0, at - 60)
                snippet = data[start: at + len(needle) + 60].decode("utf-8", errors="replace")
                masked = snippet.replace(self.canary, "<canary>").replace(needle.decode("ascii", "replace"), "<canary>")
                self.leaks.append(Leak(place, where, masked))
                return 1
        return 0

    def scan_file(self, place: str, path: Path) -> int:
        try:
            data = path.read_bytes()
        except OSError:
            return 0
        return self.scan_bytes(place, str(path.relative_to(path.parents[1])) if len(path.parents) > 1 else str(path),
                               data)

    def report(self) -> dict[str, Any]:
        return {
            "leaks": len(self.leaks),
            "places_searched": [{"place": place, "items": self.searched.get(place, 0)} for place in PLACES],
            "leak_locations": [{"place": leak.place, "where": leak.where, "context": leak.context}
                               for leak in self.leaks],
        }


def collect(ctx: Context, contents: TopicContents, scan: PrivacyScan) -> None:
    """Search one scenario's outputs: logs, metrics, proofs, dead-letter headers, ledger, CLI."""
    for path in sorted(ctx.dir.glob("worker-*.log")):
        scan.scan_file("worker logs", path)
    for path in sorted(ctx.dir.glob("worker-*.metrics.*.txt")):
        scan.scan_file("worker /metrics", path)
    for index, record in enumerate(contents.raw_proofs):
        where = f"{ctx.id}: proofs record {index}"
        scan.scan_bytes("proofs topic (keys, values, headers)", where, record.key)
        scan.scan_bytes("proofs topic (keys, values, headers)", where, record.value)
        for name, value in record.headers:
            scan.scan_bytes("proofs topic (keys, values, headers)", where, name.encode() + b"=" + (value or b""))
    for index, record in enumerate(contents.raw_dead_letters):
        header_blob = b"\n".join(name.encode() + b"=" + (value or b"") for name, value in record.headers)
        scan.scan_bytes("dead-letter record headers", f"{ctx.id}: dead letter {index}", header_blob)
    _collect_ledger(ctx, scan)
    _collect_cli(ctx, scan)


def _collect_ledger(ctx: Context, scan: PrivacyScan) -> None:
    ledger = Ledger(load_inventory(ctx.inventory_path), ctx.kafka(), Pseudonymizer(PSEUDONYM_KEY.encode(),
                                                                                    PSEUDONYM_KEY_ID))
    try:
        ledger.refresh(60)
        views = [view.to_dict(ledger.pseudonym_of(view)) for view in ledger.state.views()]
    finally:
        ledger.close()
    path = ctx.dir / "ledger-views.json"
    path.write_text(json.dumps(views, indent=1, default=str), encoding="utf-8")
    scan.scan_file("ledger views (LedgerState)", path)


def _collect_cli(ctx: Context, scan: PrivacyScan) -> None:
    """Run ``tombstone proof show --json`` for one subject and ``proof export`` for all requests."""
    env = ctx.base_env(ctx.suite.direct_bootstrap)
    subject = next((ctx.produced[rid].subject_key for rid in sorted(ctx.valid)), None)
    commands: list[tuple[str, list[str], Path]] = []
    if subject is not None:
        commands.append(("tombstone proof show --json",
                         ["proof", "show", "--json", "--timeout-s", "60", subject], ctx.dir / "proof-show.json"))
    evidence = ctx.dir / "evidence.jsonl"
    commands.append(("tombstone proof export",
                     ["proof", "export", "--timeout-s", "60", "--output", str(evidence)], ctx.dir / "proof-export.out"))
    for place, arguments, output in commands:
        result = subprocess.run([sys.executable, "-m", "tombstone.cli", *arguments], env=env, cwd=REPO_ROOT,
                                capture_output=True, timeout=180, check=False)
        output.write_bytes(result.stdout + b"\n--- stderr ---\n" + result.stderr)
        if result.returncode != 0:
            # The output may contain the canary, so the report names the file instead of quoting it.
            ctx.expect(f"{place} succeeds", False, f"exit status {result.returncode}; output in {output}")
        scan.scan_file(place, output)
        if place == "tombstone proof export":
            scan.scan_file(place, evidence)
