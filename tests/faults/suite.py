"""Run fault scenarios one after another and build the report.

A scenario passes when its lost, duplicate_effects and false_proofs figures are 0 and
each of its own expectations holds. The suite passes when every scenario passes and the
privacy scan found no canary outside the allowed places.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.faults.broker import FaultBroker
from tests.faults.harness import Context, SuiteEnv
from tests.faults.oracle import Figures, evaluate, read_topics
from tests.faults.privacy import PrivacyScan, collect
from tests.faults.scenarios import SCENARIOS, ScenarioDef

logger = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return (all(s["passed"] for s in self.report["scenarios"].values())
                and self.report["privacy"]["leaks"] == 0)


def select(ids: list[str] | None = None, smoke: bool = False) -> list[ScenarioDef]:
    """Return the scenarios with these ids in suite order. Raise ValueError naming an unknown id."""
    known = {s.id: s for s in SCENARIOS}
    unknown = sorted(set(ids or []) - set(known))
    if unknown:
        raise ValueError(f"Unknown scenario {unknown[0]!r}. `python -m tests.faults --list` lists them.")
    chosen = [s for s in SCENARIOS if (not ids or s.id in ids) and (not smoke or s.smoke)]
    return chosen


def new_canary() -> str:
    """A subject-id prefix that appears nowhere else: letters unlikely in logs plus random hex."""
    return f"zqcanary{secrets.token_hex(4)}"


def run_scenarios(scenarios: list[ScenarioDef], work_dir: Path, direct_bootstrap: str | None = None) -> SuiteResult:
    """Run ``scenarios`` on a fresh fault broker, or on ``direct_bootstrap`` without broker faults."""
    work_dir.mkdir(parents=True, exist_ok=True)
    canary = new_canary()
    broker = None
    started = time.monotonic()

    if direct_bootstrap is None:
        broker = FaultBroker(work_dir / "broker")
        broker.start()
        suite = SuiteEnv(broker.direct_bootstrap, broker.faulty_bootstrap, work_dir, canary, broker)
    else:
        suite = SuiteEnv(direct_bootstrap, direct_bootstrap, work_dir, canary)

    scan = PrivacyScan(canary)
    results: dict[str, dict[str, Any]] = {}
    try:
        for index, definition in enumerate(scenarios, start=1):
            results[definition.id] = run_one(definition, index, suite, scan)
    finally:
        if broker is not None:
            broker.stop()
            scan.scan_file("broker log", broker.log_path)

    report = {
        "scenarios": results,
        "privacy": scan.report(),
        "summary": {
            "scenarios": len(results),
            "passed": sum(1 for r in results.values() if r["passed"]),
            "seconds": round(time.monotonic() - started, 1),
            "broker": "fault broker with proxy" if broker is not None else "existing broker, no proxy",
        },
    }

    # The report should quote no subject id, and this scan checks that it does not.
    text = json.dumps(report).encode()
    scan.scan_bytes("fault report", "fault-report.json", text)
    report["privacy"] = scan.report()
    return SuiteResult(report)


def run_one(definition: ScenarioDef, index: int, suite: SuiteEnv, scan: PrivacyScan) -> dict[str, Any]:
    directory = suite.work_dir / f"{index:02d}-{definition.id}"
    store = definition.store(directory)
    ctx = Context(definition.id, index, suite, directory, store, **definition.context)  # type: ignore[arg-type]
    started = time.monotonic()
    error = None
    figures = Figures()

    logger.info("Scenario %s: %s", definition.id, definition.summary)
    if definition.needs_fault_broker and suite.broker is None:
        return _result(definition, figures, ctx, "needs the suite's own broker and proxy; skipped on an "
                                                 "existing broker", 0.0, skipped=True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ctx.setup()
        definition.run(ctx)
    except Exception as exc:  # a scenario that breaks is reported as failed, and the suite goes on
        error = f"{type(exc).__name__}: {exc}"
        (directory / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        logger.error("Scenario %s failed: %s", definition.id, error)
    finally:
        ctx.stop_workers()
        ctx.close()
        _restore(suite)

    try:
        contents = read_topics(ctx.kafka())
        figures = evaluate(ctx, contents)
        collect(ctx, contents, scan)
    except Exception as exc:  # the oracle's own failure must show in the report
        error = error or f"oracle: {type(exc).__name__}: {exc}"
        (directory / "oracle-error.txt").write_text(traceback.format_exc(), encoding="utf-8")

    try:
        store.cleanup()
    except Exception as exc:  # leftovers are named, not fatal
        ctx.note(f"cleanup failed: {type(exc).__name__}")
    return _result(definition, figures, ctx, error, time.monotonic() - started)


def _restore(suite: SuiteEnv) -> None:
    """Undo broker and proxy faults that a failed scenario may have left behind."""
    broker = suite.broker
    if broker is None:
        return
    broker.proxy.clear()
    if broker.process is not None and broker.process.poll() is None:
        broker.resume()
    elif broker.process is not None:
        logger.warning("The broker is down after the scenario; restarting it")
        broker.restart()


def _result(definition: ScenarioDef, figures: Figures, ctx: Context, error: str | None, seconds: float,
            skipped: bool = False) -> dict[str, Any]:
    failed = [e for e in ctx.expectations if not e.ok]
    passed = (not skipped and error is None and figures.lost == 0 and figures.duplicate_effects == 0
              and figures.false_proofs == 0 and not failed)
    result: dict[str, Any] = {
        **figures.as_dict(),
        "passed": passed,
        "summary": definition.summary,
        "seconds": round(seconds, 1),
        "expectations": [{"check": e.label, "ok": e.ok, **({"detail": e.detail} if e.detail else {})}
                         for e in ctx.expectations],
    }
    if skipped:
        result["skipped"] = error
    elif error:
        result["error"] = error
    if figures.details:
        result["details"] = figures.details[:20]
    if ctx.notes:
        result["notes"] = ctx.notes
    return result


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per scenario, then the privacy line and the total."""
    lines = []
    for name, r in report["scenarios"].items():
        if "skipped" in r:
            state = "SKIP"
        elif r["passed"]:
            state = "PASS"
        else:
            state = "FAIL"
        lines.append(f"{state} {name:40s} requests={r['requests']:<5d} lost={r['lost']} "
                     f"dup_effects={r['duplicate_effects']} false_proofs={r['false_proofs']} "
                     f"dead_lettered={r['dead_lettered']} {r['seconds']:.0f}s")
        for e in r["expectations"]:
            if not e["ok"]:
                lines.append(f"     failed check: {e['check']}: {e.get('detail', '')}")
        if "error" in r:
            lines.append(f"     error: {r['error']}")
    privacy = report["privacy"]
    lines.append(f"privacy: {privacy['leaks']} leaks in {len(privacy['places_searched'])} places searched")
    for leak in privacy["leak_locations"][:10]:
        lines.append(f"     leak in {leak['place']} ({leak['where']}): {leak['context']!r}")
    summary = report["summary"]
    lines.append(f"{summary['passed']} of {summary['scenarios']} scenarios passed in {summary['seconds']:.0f} s")
    return lines
