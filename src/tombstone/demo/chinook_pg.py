"""Load the Chinook sample database into PostgreSQL, as the source that Debezium captures.

The data comes from ``Chinook_PostgreSql.sql`` (Chinook 1.4.5, MIT license) in the same
folders that ``tombstone.demo.chinook`` searches. That script drops, creates and connects
to a database named ``chinook`` itself. Those lines are skipped, so the rest can load
into a database of any name.

Run ``python -m tombstone.demo.chinook_pg --help`` to load it from a shell.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tombstone.demo.chinook import dataset_dirs, load_chinook
from tombstone.errors import TombstoneError

logger = logging.getLogger(__name__)

SQL_FILE = "Chinook_PostgreSql.sql"
# Statements of the script that would act on the database named chinook instead of ours.
_DATABASE_STATEMENT = re.compile(r"^\s*(DROP\s+DATABASE|CREATE\s+DATABASE|\\c(onnect)?\b)", re.IGNORECASE)


def chinook_sql_path() -> Path:
    """Return the first ``Chinook_PostgreSql.sql`` found in the Chinook dataset folders."""
    folders = dataset_dirs()
    for folder in folders:
        if (folder / SQL_FILE).is_file():
            return folder / SQL_FILE
    searched = ", ".join(str(folder) for folder in folders)
    raise TombstoneError(
        f"{SQL_FILE} was not found in {searched}. Set TOMBSTONE_CHINOOK_DIR to a folder that contains it."
    )


def read_chinook_script(path: Path) -> str:
    """Return the script without its DROP DATABASE, CREATE DATABASE and ``\\c`` lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not _DATABASE_STATEMENT.match(line))


def load_chinook_postgres(dsn_admin: str, database: str = "chinook", sql_path: Path | None = None) -> dict[str, int]:
    """Create ``database`` afresh, load Chinook into it and return the row count of each table.

    ``dsn_admin`` names another database on the same server, used to drop and create
    ``database``; its user becomes the owner. An existing ``database`` is dropped first,
    see ``drop_database``.

    Raises:
        TombstoneError: the SQL file is missing, or a replication slot of ``database`` is
            in use.
        psycopg.Error: the server rejected a statement.
    """
    try:
        script = read_chinook_script(sql_path or chinook_sql_path())
    except TombstoneError:
        if sql_path is not None:
            raise
        # Without the SQL file, the customer and invoice tables come from the same Chinook
        # data that the embedded demo uses (the SQLite file or the PyPI fixture).
        logger.warning("%s not found; building customer, invoice and invoice_line from the Chinook data",
                       SQL_FILE)
        script = _script_from_data()
    with psycopg.connect(dsn_admin, autocommit=True) as admin:
        drop_database(admin, database)
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(database)))
    with psycopg.connect(make_conninfo(dsn_admin, dbname=database)) as conn:
        # Without parameters psycopg sends the text with the simple query protocol, so
        # the whole script runs as one batch of statements in one transaction.
        conn.execute(script.encode("utf-8"))
        conn.commit()
        return table_counts(conn)


_FALLBACK_DDL = """
CREATE TABLE customer (customer_id INT NOT NULL, first_name VARCHAR(40) NOT NULL, last_name VARCHAR(20) NOT NULL,
  company VARCHAR(80), address VARCHAR(70), city VARCHAR(40), state VARCHAR(40), country VARCHAR(40),
  postal_code VARCHAR(10), phone VARCHAR(24), fax VARCHAR(24), email VARCHAR(60) NOT NULL, support_rep_id INT,
  CONSTRAINT customer_pkey PRIMARY KEY (customer_id));
CREATE TABLE invoice (invoice_id INT NOT NULL, customer_id INT NOT NULL, invoice_date TIMESTAMP NOT NULL,
  billing_address VARCHAR(70), billing_city VARCHAR(40), billing_state VARCHAR(40), billing_country VARCHAR(40),
  billing_postal_code VARCHAR(10), total NUMERIC(10,2) NOT NULL, CONSTRAINT invoice_pkey PRIMARY KEY (invoice_id),
  CONSTRAINT invoice_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customer (customer_id));
CREATE TABLE invoice_line (invoice_line_id INT NOT NULL, invoice_id INT NOT NULL, track_id INT NOT NULL,
  unit_price NUMERIC(10,2) NOT NULL, quantity INT NOT NULL, CONSTRAINT invoice_line_pkey PRIMARY KEY (invoice_line_id),
  CONSTRAINT invoice_line_invoice_id_fkey FOREIGN KEY (invoice_id) REFERENCES invoice (invoice_id));
"""


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _script_from_data() -> str:
    """Write the three tables the capture needs as SQL, from ``load_chinook`` (no invoice lines)."""
    data = load_chinook()
    rows = [_FALLBACK_DDL]
    for table, items in (("customer", data.customers), ("invoice", data.invoices)):
        for item in items:
            columns = ", ".join(item)
            rows.append(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(_literal(v) for v in item.values())});")
    return "\n".join(rows)


def drop_database(admin: psycopg.Connection, database: str) -> None:
    """Drop ``database`` if it exists, after its inactive replication slots.

    PostgreSQL refuses to drop a database that a logical replication slot belongs to,
    and a Debezium connector that was deleted leaves its slot behind. ``WITH (FORCE)``
    ends other sessions that are connected to the database.

    Raises:
        TombstoneError: a slot of ``database`` is active, so a connector still reads it.
    """
    slots = admin.execute(
        "SELECT slot_name, active, active_pid FROM pg_replication_slots WHERE database = %s",
        [database]).fetchall()
    active = [f"{name} (pid {pid})" for name, is_active, pid in slots if is_active]
    if active:
        raise TombstoneError(
            f"Cannot drop database {database}: replication slot {', '.join(active)} is in use. "
            "Delete the Debezium connector that reads it, then try again."
        )
    for name, _, _ in slots:
        admin.execute("SELECT pg_drop_replication_slot(%s)", [name])
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def wait_for_slot(dsn: str, slot: str, active: bool = True, timeout_s: float = 60.0) -> None:
    """Wait until ``slot`` streams to the connector, or (``active=False``) no longer does.

    Debezium creates the slot as its task starts. Changes committed after that are
    captured even when snapshot.mode skips existing rows.
    """
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
            streaming = row is not None and row[0]
            if streaming == active:
                return
            if time.monotonic() > deadline:
                state = "streaming" if streaming else "not streaming"
                raise TombstoneError(
                    f"Replication slot {slot} is still {state} after {timeout_s:.0f} s. Check the "
                    "connector's task status in Kafka Connect's REST API and the end of its log.")
            time.sleep(0.2)


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Return the row count of every table in schema public, by table name."""
    tables = [row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name")]
    return {table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
            for table in tables}


def main() -> None:
    parser = argparse.ArgumentParser(description="Load the Chinook sample database into PostgreSQL.")
    password = os.environ.get("TOMBSTONE_PG_PASSWORD", "tombstone")
    parser.add_argument("--dsn", default=f"host=127.0.0.1 port=55432 dbname=tombstone user=tombstone password={password}",
                        help="connection string of an existing database on the server (default: the "
                             "project's server from `make services`, password from TOMBSTONE_PG_PASSWORD)")
    parser.add_argument("--database", default="chinook", help="database to create and load (dropped first)")
    args = parser.parse_args()
    try:
        counts = load_chinook_postgres(args.dsn, args.database)
    except (TombstoneError, psycopg.Error) as exc:
        sys.exit(f"error: loading Chinook into {args.database} failed: {exc}")
    for table, count in counts.items():
        print(f"{table}: {count}")


if __name__ == "__main__":
    main()
