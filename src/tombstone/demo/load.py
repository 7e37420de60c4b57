"""Copy the Chinook customers and invoices into every embedded store of the demo.

The data class ``customer_profile`` covers a customer's row, search document, profile
export and downstream-topic record. The data class ``customer_invoices`` covers their
invoices in the relational stores and their invoice export.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import duckdb
import psycopg

from tombstone.demo.chinook import Chinook
from tombstone.errors import TombstoneError
from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec, TableMapping
from tombstone.stores import build_store
from tombstone.stores.base import Store
from tombstone.stores.objects import ObjectStore
from tombstone.stores.redis import RedisStore
from tombstone.stores.search import SearchDocument, SearchStore
from tombstone.stores.topic import TopicStore

DEMO_DATA_CLASSES = ("customer_profile", "customer_invoices")


def _rows_for(mapping: TableMapping, data: Chinook) -> list[dict[str, Any]]:
    return data.customers if mapping.data_class == "customer_profile" else data.invoices


def _subject(row: dict[str, Any]) -> str:
    return f"customer:{row['customer_id']}"


def load_stores(specs: Iterable[ConsumerSpec], kafka: KafkaSettings, data: Chinook) -> None:
    """Load the data into each spec's store; every item is stamped one second in the past."""
    stamp_ms = int(time.time() * 1000) - 1000
    for spec in specs:
        kind = spec.store.kind
        if kind in ("sqlite", "duckdb"):
            _load_tables(spec, data, stamp_ms)
            continue
        if kind == "postgresql":
            _load_postgres(spec, data, stamp_ms)
            continue
        with build_store(spec, kafka) as store:
            if isinstance(store, SearchStore):
                store.add_documents(_search_documents(data, stamp_ms))
            elif isinstance(store, ObjectStore):
                _load_exports(store, data)
            elif isinstance(store, TopicStore):
                store.publish((_subject(c), json.dumps(c, ensure_ascii=False).encode()) for c in data.customers)
            elif isinstance(store, RedisStore):
                for customer in data.customers:
                    store.put(_subject(customer), "customer_profile", f"demo:customer:{customer['customer_id']}",
                              {k: _cell(v) or "" for k, v in customer.items()}, written_at_ms=stamp_ms)


def _load_tables(spec: ConsumerSpec, data: Chinook, stamp_ms: int) -> None:
    path = spec.store.path  # type: ignore[union-attr]
    connection: Any = sqlite3.connect(path) if spec.store.kind == "sqlite" else duckdb.connect(path)
    try:
        for mapping in spec.store.tables:  # type: ignore[union-attr]
            rows = _rows_for(mapping, data)
            names = _columns(mapping, rows)
            columns = [*names, mapping.updated_at_column]
            definitions = ", ".join(
                f'"{c}" {"BIGINT" if c in (mapping.subject_column, mapping.updated_at_column) else "VARCHAR"}'
                for c in columns)
            connection.execute(f'CREATE TABLE IF NOT EXISTS "{mapping.table}" ({definitions})')
            if not rows:
                continue
            marks = ", ".join("?" * len(columns))
            connection.executemany(
                f'INSERT INTO "{mapping.table}" VALUES ({marks})',
                [[*(_cell(row[c]) if c != mapping.subject_column else row[c] for c in names), stamp_ms]
                 for row in rows])
        connection.commit()
    finally:
        connection.close()


def _load_postgres(spec: ConsumerSpec, data: Chinook, stamp_ms: int) -> None:
    """Recreate the spec's tables in PostgreSQL; the demo owns these tables."""
    config = spec.store
    password = config.password.get_secret_value() if config.password else None  # type: ignore[union-attr]
    try:
        connection = psycopg.connect(host=config.host, port=config.port, dbname=config.dbname,  # type: ignore[union-attr]
                                     user=config.user, password=password,  # type: ignore[union-attr]
                                     connect_timeout=int(config.connect_timeout_s))  # type: ignore[union-attr]
    except psycopg.OperationalError as exc:
        raise TombstoneError(
            f"PostgreSQL for store {spec.name} is not reachable at {config.host}:{config.port} "  # type: ignore[union-attr]
            f"({str(exc).strip()}). Start it with `make services`, or leave it out with --stores embedded."
        ) from None
    with connection:
        for mapping in config.tables:  # type: ignore[union-attr]
            rows = _rows_for(mapping, data)
            names = _columns(mapping, rows)
            columns = [*names, mapping.updated_at_column]
            definitions = ", ".join(
                f'"{c}" {"bigint" if c in (mapping.subject_column, mapping.updated_at_column) else "text"}'
                for c in columns)
            connection.execute(f'DROP TABLE IF EXISTS "{mapping.table}"')
            connection.execute(f'CREATE TABLE "{mapping.table}" ({definitions})')
            connection.execute(f'CREATE INDEX ON "{mapping.table}" ("{mapping.subject_column}")')
            if not rows:
                continue
            with connection.cursor() as cursor:
                marks = ", ".join(["%s"] * len(columns))
                cursor.executemany(
                    f'INSERT INTO "{mapping.table}" VALUES ({marks})',
                    [[*(_cell(row[c]) if c != mapping.subject_column else row[c] for c in names), stamp_ms]
                     for row in rows])
    connection.close()


# Columns of Chinook's two tables, for a data class that a run loads no rows of.
CUSTOMER_COLUMNS = ("customer_id", "first_name", "last_name", "company", "address", "city", "state", "country",
                    "postal_code", "phone", "fax", "email", "support_rep_id")
INVOICE_COLUMNS = ("invoice_id", "customer_id", "invoice_date", "billing_address", "billing_city",
                   "billing_state", "billing_country", "billing_postal_code", "total")


def _columns(mapping: TableMapping, rows: list[dict[str, Any]]) -> list[str]:
    # A data class the run leaves out still gets its (empty) table, which the store checks.
    if rows:
        return list(rows[0])
    return list(CUSTOMER_COLUMNS if mapping.data_class == "customer_profile" else INVOICE_COLUMNS)


def _cell(value: Any) -> Any:
    return None if value is None else str(value)


def _search_documents(data: Chinook, stamp_ms: int) -> list[SearchDocument]:
    return [
        SearchDocument(
            doc_id=f"customer-{c['customer_id']}", subject=_subject(c), data_class="customer_profile",
            updated_at_ms=stamp_ms,
            body=" ".join(str(c[k]) for k in ("first_name", "last_name", "company", "city", "country", "email")
                          if c[k]),
        )
        for c in data.customers
    ]


def _load_exports(store: ObjectStore, data: Chinook) -> None:
    invoices: dict[int, list[dict[str, Any]]] = {}
    for invoice in data.invoices:
        invoices.setdefault(invoice["customer_id"], []).append(invoice)
    for customer in data.customers:
        subject = _subject(customer)
        store.put_object(subject, "profile.json", json.dumps(customer, ensure_ascii=False).encode(),
                         "customer_profile")
        if customer["customer_id"] in invoices:
            store.put_object(subject, "invoices.json",
                             json.dumps(invoices[customer["customer_id"]], ensure_ascii=False).encode(),
                             "customer_invoices")


def open_store(spec: ConsumerSpec, kafka: KafkaSettings) -> Store:
    """Build a fresh store instance for an audit, independent of any worker."""
    return build_store(spec, kafka)


def scan_subjects(store: Store, subjects: list[str]) -> int:
    """Total items of the subjects in the store, whatever their time or data class."""
    with store:
        return sum(store.scan_subject(subject) for subject in subjects)
