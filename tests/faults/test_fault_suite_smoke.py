"""The quick subset of the fault suite, on the test session's broker without the fault proxy.

``make faults`` runs every scenario on a broker of its own. This test runs the scenarios
marked ``smoke``: duplicates, truncated Avro at every cut point, and control characters in
subject ids. So ``make test`` exercises the oracle and the privacy scan too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.suite import run_scenarios, select, summary_lines

pytestmark = pytest.mark.integration


def test_smoke_scenarios_pass(kafka_bootstrap: str, tmp_path: Path) -> None:
    scenarios = select(smoke=True)

    report = run_scenarios(scenarios, tmp_path, direct_bootstrap=kafka_bootstrap).report

    summary = "\n".join(summary_lines(report))
    assert set(report["scenarios"]) == {s.id for s in scenarios}
    for name, result in report["scenarios"].items():
        assert result["passed"], f"scenario {name} failed:\n{summary}"
    assert report["privacy"]["leaks"] == 0, f"subject ids leaked:\n{summary}"
