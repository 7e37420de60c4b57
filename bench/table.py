"""``python -m bench.table [build/bench.json]``: print a results file as a Markdown table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def absolute(entry: dict[str, Any]) -> str:
    """Format the key's numerator figures: events/s and CPU µs per event, or latency."""
    if "records_per_s" in entry:
        rates = entry["records_per_s"]
        return f"ours {rates['ours_encode']:,.0f} enc/s, {rates['ours_decode']:,.0f} dec/s"
    numerator = entry.get("numerator", {})
    if "p50_ms" in numerator:
        hop = entry["denominator"]
        return (f"pipeline p50 {numerator['p50_ms']:.1f} ms, p99 {numerator['p99_ms']:.1f} ms; "
                f"hop p50 {hop['p50_ms']:.2f} ms, p99 {hop['p99_ms']:.2f} ms")
    parts = [f"{numerator['rate']:,.0f}/s"]
    if numerator.get("cpu_us_per_event") is not None:
        parts.append(f"{numerator['cpu_us_per_event']:.0f} µs CPU/event")
    denominator = entry.get("denominator", {})
    rate = denominator.get("rate", denominator.get("serial_rate", numerator.get("serial_rate")))
    if rate:
        parts.append(f"vs {rate:,.0f}/s")
    return ", ".join(parts)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "build/bench.json")
    results = json.loads(path.read_text(encoding="utf-8"))
    print("| key | median | target | met | rounds | absolute (medians) | load average |")
    print("|---|---|---|---|---|---|---|")
    for key, entry in results.items():
        if key.startswith("_"):
            continue
        median = entry["median"]
        rounds = ", ".join(f"{value:.3g}" for value in entry["rounds"])
        met = {True: "yes", False: "**no**", None: "-"}[entry["met"]]
        shown = f"{median:.3g}" if median is not None else "-"
        load = ", ".join(f"{value:.2f}" for value in entry.get("load_average", []))
        print(f"| {key} | {shown} | {entry['target']} | {met} | {rounds} | {absolute(entry)} | {load} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
