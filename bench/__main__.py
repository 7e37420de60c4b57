"""``python -m bench``: run the benchmarks and write build/bench.json.

Environment: ``BENCH_SCALE`` (event counts, default 1), ``BENCH_ROUNDS`` (measured rounds,
default 3), ``BENCH_STORES`` (comma-separated store kinds), ``KAFKA_BOOTSTRAP_SERVERS``
(use that broker instead of starting one) with ``BENCH_BROKER_PID``, and the PostgreSQL
and Redis settings of the tests (``TOMBSTONE_PG_PORT``, ``TOMBSTONE_REDIS_URL``, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench.cluster import Cluster
from bench.settings import BenchSettings
from bench.suite import Suite
from bench.system import load_average, machine_facts, uptime_line

GROUPS = ("codec", "produce", "consume", "sinks", "stores")
REPOSITORY = Path(__file__).resolve().parents[1]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPOSITORY / "build" / "bench.json"),
                        help="JSON file to write (default: build/bench.json)")
    parser.add_argument("--workdir", default=str(REPOSITORY / "build" / "bench"),
                        help="directory for the broker, store files and child logs")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups to run, of {', '.join(GROUPS)} (default: all); "
                             "codec is B7, produce B1 and B2, consume B3 and B6, sinks B5, "
                             "stores B4, B8, B9 and B10")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every child phase")
    return parser.parse_args(argv)


def unreachable_stores(settings: BenchSettings) -> dict[str, str]:
    """Return the server-backed stores whose server cannot be reached, with the reason."""
    skipped: dict[str, str] = {}
    if "postgresql" in settings.stores:
        import psycopg

        dsn = settings.postgres_dsn
        try:
            psycopg.connect(host=dsn["host"], port=dsn["port"], dbname=dsn["dbname"], user=dsn["user"],
                            password=dsn["password"], connect_timeout=3).close()
        except psycopg.Error as exc:
            skipped["postgresql"] = f"cannot connect to {dsn['host']}:{dsn['port']} ({exc})"
    if "redis" in settings.stores:
        import redis

        try:
            redis.Redis.from_url(settings.redis_url, socket_timeout=3).ping()
        except redis.RedisError as exc:
            skipped["redis"] = f"cannot reach {settings.redis_url} ({exc})"
    return skipped


def print_summary(results: dict[str, dict[str, object]]) -> None:
    print(f"{'key':16} {'median':>10} {'target':>8}  met   rounds")
    for key, entry in results.items():
        if key.startswith("_"):
            continue
        median = entry["median"]
        shown = f"{median:10.3f}" if isinstance(median, float) else f"{'-':>10}"
        rounds = ", ".join(f"{value:.3f}" for value in entry["rounds"])  # type: ignore[union-attr]
        print(f"{key:16} {shown} {entry['target']:>8}  {str(entry['met']):5} {rounds}")


def finite(value: object) -> object:
    """Replace NaN and infinities, which JSON cannot carry, by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("bench").setLevel(logging.INFO)
    # The requester logs every confirmed request at INFO, which the latency phase would time.
    logging.getLogger("tombstone").setLevel(logging.WARNING)
    groups = [group for group in arguments.only.split(",") if group]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        print(f"Unknown group {unknown[0]!r}; use some of {', '.join(GROUPS)}.", file=sys.stderr)
        return 2

    settings = BenchSettings.from_env()
    skipped = unreachable_stores(settings)
    if skipped:
        settings = replace(settings, stores=tuple(kind for kind in settings.stores if kind not in skipped))
        for kind, reason in skipped.items():
            print(f"Skipping the {kind} store: {reason}. `make services` starts PostgreSQL and Redis.",
                  file=sys.stderr)
    workdir = Path(arguments.workdir)
    for stale in ("stores", "state"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    started = time.monotonic()
    meta: dict[str, object] = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])]),
        "settings": asdict(settings) | {"postgres_dsn": {k: v for k, v in settings.postgres_dsn.items()
                                                         if k != "password"}},
        "machine": machine_facts(),
        "uptime_before": uptime_line(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "skipped_stores": skipped,
    }
    cluster = Cluster.open(workdir / "broker")
    meta["bootstrap"] = cluster.bootstrap
    meta["broker_pid"] = cluster.broker_pid
    meta["broker_started_by_bench"] = cluster.broker is not None
    suite = Suite(settings, cluster, workdir, workdir / "logs")
    timings: dict[str, float] = {}
    try:
        for group in GROUPS:
            if group in groups:
                group_started = time.monotonic()
                getattr(suite, group)()
                timings[group] = round(time.monotonic() - group_started, 1)
                logging.getLogger("bench").info("%s done in %.0f s; %s", group, timings[group], uptime_line())
    finally:
        suite.close()
        cluster.close()
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["seconds_by_group"] = timings
    meta["uptime_after"] = uptime_line()
    meta["load_average_after"] = load_average()

    output = Path(arguments.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    document = finite({**suite.results, "_meta": meta})
    output.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print_summary(suite.results)
    print(f"Wrote {output} in {meta['seconds']:.0f} s; {meta['uptime_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
