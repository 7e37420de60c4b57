"""``python -m bench`` at tiny sizes: every benchmark key is written with finite numbers.

No timing is checked; the numbers of such a short run mean nothing. The run needs the
PostgreSQL and Redis servers of `make services`, like the other integration tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
KEYS = ["B1", "B2", "B3", "B6", "B7.encode", "B7.decode", "B8.p50", "B8.p99", "B9", "B10",
        "B5.sqlite", "B5.postgresql", "B5.redis",
        *(f"B4.{kind}" for kind in ("null", "sqlite", "duckdb", "postgresql", "redis", "search"))]


def finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def absolute_numbers(entry: dict[str, object]) -> list[object]:
    """The events/s or latency figures that a key reports next to its ratio."""
    if "records_per_s" in entry:
        return list(entry["records_per_s"].values())  # type: ignore[union-attr]
    numerator = entry["numerator"]
    assert isinstance(numerator, dict)
    if "p50_ms" in numerator:
        return [numerator["p50_ms"], numerator["p99_ms"], entry["denominator"]["p50_ms"]]  # type: ignore[index]
    return [numerator["rate"], numerator["cpu_us_per_event"] if "cpu_us_per_event" in numerator else 0.0]


def test_bench_writes_every_key(kafka_bootstrap: str, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    environment = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "BENCH_SCALE": "0.01",
                   "BENCH_ROUNDS": "1"}

    run = subprocess.run([sys.executable, "-m", "bench", "--output", str(output), "--workdir", str(tmp_path / "work")],
                         cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)

    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["_meta"]["skipped_stores"] == {}
    for key in KEYS:
        entry = results[key]
        assert finite(entry["median"]), f"{key}: median {entry['median']!r}"
        assert len(entry["rounds"]) == 1, f"{key}: rounds {entry['rounds']!r}"
        assert all(finite(value) for value in entry["rounds"]), f"{key}: rounds {entry['rounds']!r}"
        numbers = absolute_numbers(entry)
        assert numbers and all(finite(value) for value in numbers), f"{key}: absolute numbers {numbers!r}"
