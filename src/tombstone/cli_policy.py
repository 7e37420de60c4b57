"""Subcommands for the deletion policy and recovery: cancel, hold, reconcile, drill."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from tombstone.errors import InvalidRequestError


def iso_time(text: str) -> datetime:
    """Parse an ISO 8601 time that states its UTC offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add Z or +HH:MM")
    return value


def _cancel(args: argparse.Namespace) -> int:
    from tombstone.cancel import cancel_request
    from tombstone.inventory import default_inventory_path, load_inventory
    from tombstone.settings import KafkaSettings

    inventory = load_inventory(args.inventory or default_inventory_path())
    plan = cancel_request(KafkaSettings(), inventory, args.request_id, args.requested_by, args.timeout_s)
    print(f"Cancel of request {args.request_id} confirmed by the broker.")
    if plan.restorable:
        print(f"Stores that restore hidden data or stop before acting: {', '.join(plan.restorable)}.")
    if plan.gone:
        print(f"Stores that already deleted or anonymized the data, which a cancel cannot restore: "
              f"{', '.join(plan.gone)}.")
    return 0


def _hold(args: argparse.Namespace) -> int:
    from tombstone.models import parse_subject_key
    from tombstone.settings import KafkaSettings
    from tombstone.worker.holds import Hold, describe, list_holds, place_hold, release_hold

    kafka = KafkaSettings()
    if args.hold_command == "list":
        holds = list_holds(kafka)
        if args.json:
            print(json.dumps({subject: json.loads(hold.model_dump_json()) for subject, hold in holds.items()}))
        for subject, hold in holds.items() if not args.json else ():
            print(f"{subject}: {describe(hold)}")
        return 0
    parse_subject_key(args.subject)
    if args.hold_command == "place":
        if not args.legal_basis:
            raise InvalidRequestError("A hold needs --legal-basis, such as 'litigation hold, case 2026-17'.")
        place_hold(kafka, args.subject, Hold(legal_basis=args.legal_basis, placed_by=args.placed_by,
                                              until=args.until))
        print(f"Hold on {args.subject} placed; workers acknowledge its requests as RETAINED until it is released.")
    else:
        release_hold(kafka, args.subject)
        print(f"Hold on {args.subject} released; held requests proceed at each worker's next check.")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from tombstone.inventory import default_inventory_path, load_inventory
    from tombstone.pseudonym import Pseudonymizer
    from tombstone.settings import KafkaSettings
    from tombstone.spec import load_spec
    from tombstone.stores import build_store
    from tombstone.worker.reconcile import Reconciler

    spec = load_spec(args.spec)
    kafka = KafkaSettings()
    inventory = load_inventory(args.inventory or default_inventory_path())
    reconciler = Reconciler(spec, kafka, build_store(spec, kafka), Pseudonymizer.from_settings(), inventory=inventory)
    counts = reconciler.reconcile(batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"store": spec.name, **counts.to_dict()}, sort_keys=True))
    else:
        print(f"Reconciled store {spec.name}: {counts.read} records read, {counts.applied} requests applied again, "
              f"{counts.items} items removed or rewritten ({counts.replayed} more steps ran again under an "
              f"existing receipt), {counts.cancelled} cancelled and "
              f"{counts.skipped} other records skipped, {counts.rejected} rejected.")
    return 1 if counts.rejected else 0


def _drill(args: argparse.Namespace) -> int:
    from tombstone.drill import run_drill

    return run_drill(args.store, customers=args.customers, json_output=args.json, keep=args.keep)


def add_policy_parsers(sub: argparse._SubParsersAction) -> None:
    cancel = sub.add_parser("cancel", help="cancel a request within its grace period; hidden data is restored")
    cancel.add_argument("request_id", help="id printed by `tombstone request`")
    cancel.add_argument("--requested-by", default="cli", help="principal cancelling the request")
    cancel.add_argument("--inventory", help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    cancel.add_argument("--timeout-s", type=float, default=30.0, help="time to read the ledger, in seconds")
    cancel.set_defaults(handler=_cancel)

    hold = sub.add_parser("hold", help="place, release or list legal holds on subjects")
    actions = hold.add_subparsers(dest="hold_command", required=True)
    place = actions.add_parser("place", help="keep a subject's data whatever deletion is requested")
    place.add_argument("--subject", required=True, help="subject key TYPE:ID, such as customer:17")
    place.add_argument("--legal-basis", required=True, help="why the data must stay, such as a case number")
    place.add_argument("--until", type=iso_time, help="ISO 8601 time with offset when the hold lapses")
    place.add_argument("--placed-by", default="cli", help="principal placing the hold")
    release = actions.add_parser("release", help="release a subject's hold; its held requests proceed")
    release.add_argument("--subject", required=True, help="subject key TYPE:ID")
    listing = actions.add_parser("list", help="list active holds")
    listing.add_argument("--json", action="store_true", help="print JSON")
    hold.set_defaults(handler=_hold)

    reconcile = sub.add_parser("reconcile", help="replay every deletion onto a store restored from a backup")
    reconcile.add_argument("spec", help="consumer spec of the store, such as consumers/search.toml")
    reconcile.add_argument("--batch-size", type=int, default=500, help="requests applied per store call")
    reconcile.add_argument("--inventory", help="inventory file (default: TOMBSTONE_INVENTORY or deploy/inventory.toml)")
    reconcile.add_argument("--json", action="store_true", help="print the counts as JSON")
    reconcile.set_defaults(handler=_reconcile)

    drill = sub.add_parser("drill", help="rehearse recovery on the demo data")
    drill_sub = drill.add_subparsers(dest="drill_command", required=True)
    restore = drill_sub.add_parser("restore", help="snapshot a store, delete, restore the snapshot, reconcile, scan")
    restore.add_argument("--store", required=True, help="store name: operational-db, warehouse, search, exports, crm-db")
    restore.add_argument("--customers", type=int, default=5, help="customers to delete (1 to 59)")
    restore.add_argument("--json", action="store_true", help="print the summary as JSON")
    restore.add_argument("--keep", action="store_true", help="keep the drill's data directory")
    restore.set_defaults(handler=_drill)
