"""Carry data deletions through Kafka to every derived store and prove each one."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from tombstone.cli_policy import add_policy_parsers, iso_time
from tombstone.errors import ConfigError, InvalidRequestError, TombstoneError, describe_validation_error

if TYPE_CHECKING:
    from tombstone.broker.secure import SecureBroker

logger = logging.getLogger("tombstone.cli")

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _broker(args: argparse.Namespace) -> int:
    from tombstone.broker.local import LocalBroker
    from tombstone.broker.secure import SecureBroker

    state_dir = Path(args.state_dir) if args.state_dir else None
    broker = _secure_broker(args, state_dir) if args.secure else LocalBroker(state_dir)
    if args.action == "start":
        print(broker.start(timeout_s=args.timeout_s))
        if isinstance(broker, SecureBroker):
            print(f"credentials: {broker.credentials_file} (shell variables per principal: {broker.env_dir}/*.env)")
    elif args.action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        status = broker.status()
        print(json.dumps(status) if args.json else
              (f"running at {status['bootstrap']} (pid {status['pid']})" if status["running"] else "not running"))
        return 0 if status["running"] else 3
    return 0


def _secure_broker(args: argparse.Namespace, state_dir: Path | None) -> SecureBroker:
    """Create the secure broker with a worker principal for every store that --store or the inventory names."""
    from tombstone.broker.secure import SecureBroker
    from tombstone.inventory import default_inventory_path, load_inventory

    stores = args.store
    if not stores and args.action == "start":
        inventory_path = default_inventory_path()
        if inventory_path.exists():
            stores = load_inventory(inventory_path).all_stores()
        else:
            logger.warning("No inventory at %s and no --store given; the secure broker gets no worker "
                           "principals", inventory_path)
    return SecureBroker(state_dir, stores=stores or [])


def _connect(args: argparse.Namespace) -> int:
    from tombstone.connect.local import LocalConnect
    from tombstone.settings import KafkaSettings

    connect = LocalConnect(Path(args.state_dir) if args.state_dir else None)
    if args.connect_command == "start":
        print(connect.start(args.bootstrap or KafkaSettings().resolved_bootstrap(), timeout_s=args.timeout_s))
    elif args.connect_command == "stop":
        print("stopped" if connect.stop() else "not running")
    elif args.connect_command == "status":
        status = connect.status()
        print(json.dumps(status) if args.json else
              (f"running at {status['rest_url']} (pid {status['pid']})" if status["running"] else "not running"))
        return 0 if status["running"] else 3
    else:
        return _connector(args, args.url or connect.running_url())
    return 0


def _connector(args: argparse.Namespace, url: str | None) -> int:
    """Register or delete a connector on the worker at ``url``."""
    from tombstone.connect.config import load_connector_config
    from tombstone.connect.rest import ConnectClient

    if url is None:
        raise ConfigError("No Kafka Connect worker is running. Start one with `tombstone connect start`, "
                          "or give the REST URL of another with --url.")
    client = ConnectClient(url)
    if args.connect_command == "delete":
        print("deleted" if client.delete_connector(args.name) else "not found")
        return 0
    connector = load_connector_config(args.config)
    created = client.put_connector(connector.name, connector.config)
    status = client.wait_running(connector.name, timeout_s=args.timeout_s)
    print(json.dumps(status) if args.json else
          f"{connector.name}: {'created' if created else 'updated'}, RUNNING with {len(status['tasks'])} task(s)")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from tombstone.kafka.admin import ensure_topics, pipeline_topics
    from tombstone.settings import KafkaSettings

    kafka = KafkaSettings()
    admin = AdminClient(kafka.client_config())
    specs = pipeline_topics(kafka, args.partitions, args.replication_factor,
                            int(args.max_worker_outage_h * 3600 * 1000))
    created = ensure_topics(admin, specs, kafka.connect_timeout_s)
    for spec in specs:
        print(f"{spec.name}: {'created' if spec.name in created else 'exists'}")
    return 0


def _request(args: argparse.Namespace) -> int:
    from tombstone.inventory import default_inventory_path, load_inventory
    from tombstone.requester import Requester, new_request
    from tombstone.settings import KafkaSettings

    request = new_request(args.subject, args.data_class, args.reason, args.requested_by,
                          cutoff_at=args.cutoff_at, grace_period_ms=int(args.grace_period_s * 1000))
    inventory_path = Path(args.inventory) if args.inventory else default_inventory_path()
    if inventory_path.exists():
        load_inventory(inventory_path).check_request(request.data_class, request.subject_type)
    else:
        logger.warning("No inventory at %s; the data class is not checked", inventory_path)
    requester = Requester(KafkaSettings(), client_id="tombstone-cli")
    try:
        requester.submit([request])
    finally:
        requester.close()
    print(request.request_id)
    return 0


def _worker(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    from tombstone.worker.main import run_worker

    return run_worker(args.spec, metrics_port=args.metrics_port, stop=stop)


def _cdc_bridge(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    from tombstone.cdc.main import run_bridge

    return run_bridge(args.config, metrics_port=args.metrics_port, stop=stop)


def _cdc_check(args: argparse.Namespace) -> int:
    from tombstone.cdc.main import run_check

    return run_check(args.config, args.dsn)


def _proof_show(args: argparse.Namespace) -> int:
    from tombstone.inventory import default_inventory_path, load_inventory
    from tombstone.ledger.ledger import Ledger
    from tombstone.ledger.render import render_table
    from tombstone.pseudonym import Pseudonymizer
    from tombstone.settings import KafkaSettings, PseudonymSettings

    inventory = load_inventory(args.inventory or default_inventory_path())
    settings = PseudonymSettings()
    pseudonymizer = Pseudonymizer.from_settings(settings) if settings.key else None
    ledger = Ledger(inventory, KafkaSettings(), pseudonymizer)
    try:
        ledger.refresh(args.timeout_s)
        views = ledger.find(args.query)
    finally:
        ledger.close()
    if not views:
        print(f"tombstone: error: no deletion request matches {args.query!r}. Give a request id "
              "printed by `tombstone request`, or a subject key such as customer:17.", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps([v.to_dict(ledger.pseudonym_of(v)) for v in views], indent=2))
    else:
        print(render_table(views))
    return 0


def _proof_export(args: argparse.Namespace) -> int:
    from tombstone.ledger.evidence_commands import run_export

    return run_export(args.inventory, args.output, args.timeout_s)


def _proof_verify(args: argparse.Namespace) -> int:
    from tombstone.ledger.evidence_commands import run_verify

    return run_verify(args.file, args.inventory, args.timeout_s, args.json)


def _ledger(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    from tombstone.inventory import default_inventory_path, load_inventory
    from tombstone.ledger.ledger import Ledger
    from tombstone.ledger.service import LedgerMetrics, run_ledger
    from tombstone.metrics import HealthState, MetricsServer
    from tombstone.settings import KafkaSettings

    inventory = load_inventory(args.inventory or default_inventory_path())
    kafka = KafkaSettings()
    ledger = Ledger(inventory, kafka)
    metrics = LedgerMetrics()
    housekeeper = None
    if args.backup_horizon_s is not None:
        from tombstone.ledger.housekeeping import Housekeeper, HousekeepingMetrics

        housekeeper = Housekeeper(kafka, timedelta(seconds=args.backup_horizon_s),
                                  metrics=HousekeepingMetrics(metrics.registry))
    health = HealthState()
    server = MetricsServer(metrics.registry, health, args.metrics_port)
    server.start()
    health.ready = True
    try:
        run_ledger(ledger, metrics, stop, args.interval_s, housekeeper)
    finally:
        server.stop()
        ledger.close()
        if housekeeper is not None:
            housekeeper.close()
    return 0


def _housekeeping(args: argparse.Namespace) -> int:
    from tombstone.inventory import default_inventory_path, load_inventory
    from tombstone.ledger.housekeeping import Housekeeper
    from tombstone.ledger.ledger import Ledger
    from tombstone.settings import KafkaSettings

    inventory = load_inventory(args.inventory or default_inventory_path())
    kafka = KafkaSettings()
    ledger = Ledger(inventory, kafka)
    housekeeper = Housekeeper(kafka, timedelta(seconds=args.backup_horizon_s), dry_run=args.dry_run,
                              read_timeout_s=args.timeout_s)
    try:
        ledger.refresh(args.timeout_s)
        report = housekeeper.run(ledger)
    finally:
        housekeeper.close()
        ledger.close()
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(f"complete requests still on {kafka.requests_topic}: {report.retained_complete}")
    print(f"older than the backup horizon of {args.backup_horizon_s:g} s: {report.older_than_horizon}")
    if args.dry_run:
        print("tombstoned: 0 (dry run, nothing written)")
        return 0
    print(f"tombstoned: {report.tombstoned}")
    print(f"skipped, a newer record arrived for the key: {report.skipped_newer}")
    print(f"newer requests produced again after a tombstone: {report.restored}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tombstone.demo.run import run_demo

    return run_demo(json_output=args.json, customers=args.customers, keep=args.keep, stores=args.stores,
                    source=args.source)


def _aware_time(text: str) -> datetime:
    """Parse an ISO 8601 time that states its UTC offset and is not in the future."""
    value = iso_time(text)
    if value > datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} is in the future; a cut-off must not be later than now")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        logger.info("Received %s; finishing the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _add_connect_parser(sub: argparse._SubParsersAction) -> None:
    connect = sub.add_parser("connect", help="run a local Kafka Connect worker with Debezium, and register connectors")
    actions = connect.add_subparsers(dest="connect_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="worker state directory (default: the cache directory)")

    start = actions.add_parser("start", parents=[common], help="start the worker; prints its REST URL")
    start.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, "
                                           "else the broker of `tombstone broker start`)")
    start.add_argument("--timeout-s", type=_positive, default=120.0, help="start-up timeout in seconds")
    actions.add_parser("stop", parents=[common], help="stop the worker; its connectors stay registered")
    status = actions.add_parser("status", parents=[common], help="show whether the worker runs")
    status.add_argument("--json", action="store_true", help="print status as JSON")

    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help="REST URL of the worker (default: the worker of `tombstone connect start`)")
    register = actions.add_parser("register", parents=[common, url],
                                  help="create or update a connector and wait until it runs")
    register.add_argument("config", help="connector JSON with ${VAR:-default} references, such as "
                                         "deploy/debezium/chinook-postgres.json")
    register.add_argument("--timeout-s", type=_positive, default=120.0,
                          help="seconds to wait for the connector and its tasks to be RUNNING")
    register.add_argument("--json", action="store_true", help="print the connector status as JSON")
    delete = actions.add_parser("delete", parents=[common, url], help="delete a connector")
    delete.add_argument("name", help="connector name, such as chinook-postgres")
    connect.set_defaults(handler=_connect)


_HORIZON_HELP = ("Use at least the longest backup retention of any store plus the time requests take "
                 "to complete, because a restored store is reconciled from the requests topic.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tombstone", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for DEBUG)")
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="run a local single-node Kafka broker for development")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument("--state-dir", help="broker state directory (default: the cache directory)")
    broker.add_argument("--timeout-s", type=_positive, default=90.0, help="start-up timeout in seconds")
    broker.add_argument("--json", action="store_true", help="print status as JSON")
    broker.add_argument("--secure", action="store_true",
                        help="act on the broker with TLS, SASL/SCRAM-SHA-512 and deny-by-default ACLs, which "
                             "has its own state directory (broker-secure in the cache directory). With status "
                             "--json, show where its credentials file is")
    broker.add_argument("--store", action="append", metavar="NAME",
                        help="with --secure: a store that gets a worker-NAME principal (repeatable; "
                             "default: every store in the inventory)")
    broker.set_defaults(handler=_broker)
    _add_connect_parser(sub)

    topics = sub.add_parser("topics", help="create the requests, proofs and dead-letter topics")
    topics.add_argument("action", choices=["create"])
    topics.add_argument("--partitions", type=_count, default=3, help="partitions per topic")
    topics.add_argument("--replication-factor", type=_count, default=1, help="replicas per partition")
    topics.add_argument("--max-worker-outage-h", type=_positive, default=168.0,
                        help="longest tolerated worker outage in hours; sets min.compaction.lag.ms")
    topics.set_defaults(handler=_topics)

    request = sub.add_parser("request", help="request deletion of a subject's data; prints the request id")
    request.add_argument("--subject", required=True, help="subject key TYPE:ID, such as customer:17")
    request.add_argument("--data-class", required=True, help="data class from the inventory")
    request.add_argument("--reason", required=True, help="reason code, such as user_request")
    request.add_argument("--requested-by", default="cli", help="principal issuing the request")
    request.add_argument("--cutoff-at", type=_aware_time,
                         help="ISO 8601 time with a UTC offset, not in the future; data written "
                              "later is kept (default: now)")
    request.add_argument("--grace-period-s", type=_non_negative, default=0.0, help="grace period in seconds")
    request.add_argument("--inventory", help="inventory that the data class is checked against "
                                             "(default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    request.set_defaults(handler=_request)

    worker = sub.add_parser("worker", help="run the worker of one store")
    worker.add_argument("spec", help="consumer spec, such as consumers/search.toml")
    worker.add_argument("--metrics-port", type=_port, help="override the spec's metrics port (0: any free port)")
    worker.set_defaults(handler=_worker)

    bridge = sub.add_parser("cdc-bridge", help="turn Debezium delete events into deletion requests")
    bridge.add_argument("config", help="bridge config, such as deploy/debezium/chinook-bridge.toml")
    bridge.add_argument("--metrics-port", type=_port, help="override the config's metrics port (0: any free port)")
    bridge.set_defaults(handler=_cdc_bridge)

    check = sub.add_parser("cdc-check", help="find connector, topic and table settings that drop deletes")
    check.add_argument("config", help="bridge config; its connector_config names the Debezium connector JSON")
    check.add_argument("--dsn", help="source database, to check primary keys and replica identity "
                                     "(default: not checked)")
    check.set_defaults(handler=_cdc_check)

    ledger = sub.add_parser("ledger", help="follow requests and proofs and serve completion metrics")
    ledger.add_argument("--metrics-port", type=_port, default=9410, help="port of /metrics (0: any free port)")
    ledger.add_argument("--interval-s", type=_positive, default=5.0, help="seconds between refreshes")
    ledger.add_argument("--inventory", help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    ledger.add_argument("--backup-horizon-s", type=_positive, default=None,
                        help=f"after each refresh, tombstone complete requests older than this many "
                             f"seconds (default: off). {_HORIZON_HELP}")
    ledger.set_defaults(handler=_ledger)

    housekeeping = sub.add_parser("housekeeping",
                                  help="tombstone complete requests older than the backup horizon, once")
    housekeeping.add_argument("--backup-horizon-s", type=_positive, required=True,
                              help=f"tombstone complete requests older than this many seconds. {_HORIZON_HELP}")
    housekeeping.add_argument("--dry-run", action="store_true", help="count the candidates, write nothing")
    housekeeping.add_argument("--json", action="store_true", help="print the counts as JSON")
    housekeeping.add_argument("--inventory",
                              help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    housekeeping.add_argument("--timeout-s", type=_positive, default=30.0,
                              help="time to read the topics, in seconds")
    housekeeping.set_defaults(handler=_housekeeping)

    proof = sub.add_parser("proof", help="show deletion proof per store")
    proof_sub = proof.add_subparsers(dest="proof_command", required=True)
    show = proof_sub.add_parser("show", help="proof of a request id, or of every request of a subject")
    show.add_argument("query", help="request id, or subject key TYPE:ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--inventory", help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    show.add_argument("--timeout-s", type=_positive, default=30.0, help="time to read the topics, in seconds")
    show.set_defaults(handler=_proof_show)
    export = proof_sub.add_parser("export", help="write evidence of every request and store, one JSON line "
                                                 "each, with a SHA-256 and HMAC trailer")
    export.add_argument("--format", choices=["jsonl"], default="jsonl", help="output format (jsonl)")
    export.add_argument("--output", help="file to write; replaced atomically (default: stdout)")
    export.add_argument("--inventory", help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    export.add_argument("--timeout-s", type=_positive, default=30.0, help="time to read the topics, in seconds")
    export.set_defaults(handler=_proof_export)
    verify = proof_sub.add_parser("verify", help="check an evidence export against the ledger; "
                                                 "exit status 0 only when every line verifies")
    verify.add_argument("file", help="export written by `tombstone proof export`")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--inventory", help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    verify.add_argument("--timeout-s", type=_positive, default=30.0, help="time to read the topics, in seconds")
    verify.set_defaults(handler=_proof_verify)

    add_policy_parsers(sub)

    demo = sub.add_parser("demo", help="run the Chinook demo end to end on a local broker")
    demo.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    demo.add_argument("--customers", type=_count, default=8, help="customers to delete (1 to 59)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    demo.add_argument("--stores", default="embedded",
                      help="embedded (no servers needed), all (also PostgreSQL and Redis, see "
                           "`make services`), or a comma-separated list of store names")
    demo.add_argument("--source", choices=["requests", "debezium"], default="requests",
                      help="requests: the demo issues deletion requests itself; debezium: it deletes "
                           "customers in PostgreSQL and the CDC bridge issues them (needs `make services`)")
    demo.set_defaults(handler=_demo)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.DEBUG
    if verbosity == 0:
        level = logging.WARNING
    elif verbosity == 1:
        level = logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Workers log their milestones at INFO by default; one-shot commands stay quiet.
    configure_logging(max(args.verbose, 1) if args.command in ("worker", "ledger", "cdc-bridge") else args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (InvalidRequestError, ConfigError) as exc:
        print(f"tombstone: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        print(f"tombstone: error: invalid input: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except TombstoneError as exc:
        print(f"tombstone: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
