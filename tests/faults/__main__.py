"""Command line of the fault suite: ``python -m tests.faults`` (what ``make faults`` runs)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from tests.faults.suite import run_scenarios, select, summary_lines
from tests.faults.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults",
                                     description="Run fault scenarios against a real broker and stores.")
    parser.add_argument("--report", default="build/fault-report.json", help="JSON report to write")
    parser.add_argument("--work-dir", default="build/faults",
                        help="directory for the broker, worker logs and store files (replaced on each run)")
    parser.add_argument("--only", action="append", default=[],
                        help="scenario id to run; repeat it or separate ids with commas (default: all)")
    parser.add_argument("--smoke", action="store_true", help="run only the quick subset that `make test` runs")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    args = parser.parse_args(argv)

    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.id:40s} {scenario.summary}")
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # librdkafka reports every refused connection during broker faults, so the suite hides those lines.
    logging.getLogger("tombstone.librdkafka").setLevel(logging.CRITICAL)
    logging.getLogger("tombstone.requester").setLevel(logging.WARNING)
    ids = [part for value in args.only for part in value.split(",") if part]
    try:
        scenarios = select(ids, args.smoke)
    except ValueError as exc:
        parser.error(str(exc))
    work_dir = Path(args.work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    try:
        result = run_scenarios(scenarios, work_dir)
    except RuntimeError as exc:  # the broker could not start, so no scenario can run
        print(f"fault suite: error: {exc}", file=sys.stderr)
        return 1
    report_path = Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(result.report, indent=2) + "\n", encoding="utf-8")
    print("\n".join(summary_lines(result.report)))
    print(f"report: {report_path}; logs and store files: {work_dir}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
