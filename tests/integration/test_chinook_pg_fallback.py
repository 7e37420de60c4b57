"""Without Chinook_PostgreSql.sql, the capture's source tables come from the Chinook data."""

from __future__ import annotations

import psycopg
import pytest

import tombstone.demo.chinook_pg as chinook_pg
from tests.integration.pg_fixtures import postgres_dsn  # noqa: F401
from tombstone.errors import TombstoneError


def test_source_tables_are_built_from_the_chinook_data(postgres_dsn: str,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise TombstoneError("Chinook_PostgreSql.sql was not found (test)")

    monkeypatch.setattr(chinook_pg, "chinook_sql_path", missing)
    database = "chinook_fallback_test"
    try:
        counts = chinook_pg.load_chinook_postgres(postgres_dsn, database)
        assert counts == {"customer": 59, "invoice": 412, "invoice_line": 0}
        with psycopg.connect(psycopg.conninfo.make_conninfo(postgres_dsn, dbname=database)) as conn:
            # The demo and the tests rely on this key and this foreign key.
            names = {row[0] for row in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'invoice'::regclass")}
            assert {"invoice_pkey", "invoice_customer_id_fkey"} <= names
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            chinook_pg.drop_database(admin, database)
