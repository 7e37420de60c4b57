"""Check the source tables: do their delete events carry the key columns the bridge maps?

What a delete event contains depends on the table's replica identity:

- DEFAULT with a primary key: the record key holds the primary key; the before image
  holds the primary key too, and defaults (0, "", null) in every other column.
- FULL: the before image holds the whole row; without a primary key the record key is
  null, which a compacted topic refuses.
- USING INDEX: the before image holds the index columns, and the record key the primary
  key filled with defaults.
- NOTHING: nothing, and PostgreSQL refuses deletes on a table in a publication.
"""

from __future__ import annotations

from typing import Any

from tombstone.cdc.checker import Finding
from tombstone.cdc.config import BridgeConfig, TableMapping

_TABLE_SQL = """
SELECT c.relreplident,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS primary_key,
       coalesce((SELECT json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                '{}') AS column_types
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""

_NUMERIC = ("numeric", "decimal", "money")


def check_tables(connection: Any, bridge: BridgeConfig, connector: dict[str, str] | None = None,
                 compacted: bool = True) -> list[Finding]:
    """Findings per mapped table, from PostgreSQL's catalog."""
    findings = []
    with connection.cursor() as cursor:
        for table in bridge.tables:
            schema, _, relname = table.source_table.rpartition(".")
            cursor.execute(_TABLE_SQL, (schema or "public", relname))
            row = cursor.fetchone()
            if row is None:
                findings.append(Finding("error", "table_missing",
                                        f"Table {table.source_table} of {table.topic} does not exist in the "
                                        "source database. Fix the table name in the bridge config."))
                continue
            replident, primary_key, types = row
            findings += identity_findings(table, replident, list(primary_key), compacted)
            findings += _type_findings(table, types or {}, connector or {})
    return findings


def identity_findings(table: TableMapping, replident: str, primary_key: list[str],
                      compacted: bool = True) -> list[Finding]:
    name = table.source_table
    full = f"ALTER TABLE {name} REPLICA IDENTITY FULL"
    if replident == "n":
        return [Finding("error", "no_replica_identity",
                        f"Table {name} has REPLICA IDENTITY NOTHING: PostgreSQL refuses its deletes under a "
                        f"publication, and no delete could name a subject. Use DEFAULT with a primary key, or {full}.")]
    if replident == "i":
        return [Finding("error", "identity_using_index",
                        f"Table {name} has REPLICA IDENTITY USING INDEX: Debezium's record key then holds the "
                        "primary key filled with defaults, which would name the wrong subject. Use DEFAULT with a "
                        f"primary key, or {full}.")]
    if replident == "d" and not primary_key:
        return [Finding("error", "no_replica_identity",
                        f"Table {name} has no primary key and REPLICA IDENTITY DEFAULT: PostgreSQL refuses its "
                        f"deletes under a publication. Add a primary key, or {full} and set message.key.columns.")]
    findings = []
    if replident == "f" and not primary_key and compacted:
        findings.append(Finding("error", "no_key_on_compacted_topic",
                                f"Table {name} has no primary key, so its events have a null key, which a compacted "
                                f"topic refuses (the connector task fails). Set message.key.columns for {name} in "
                                "the connector, or add a primary key."))
    missing = [c for c in table.key_columns if c not in primary_key]
    if missing and not (replident == "f" and table.identity == "full"):
        fix = (f'set identity = "full" for {table.topic} in the bridge config' if replident == "f"
               else f"run {full} and set identity = \"full\" for {table.topic}")
        findings.append(Finding("error", "key_not_in_identity",
                                f"Key columns {', '.join(missing)} of {name} are not in its primary key "
                                f"({', '.join(primary_key) or 'none'}), so the bridge cannot trust them in delete "
                                f"events and would dead-letter every delete: {fix}, or map the primary key."))
    return findings


def _type_findings(table: TableMapping, types: dict[str, str], connector: dict[str, str]) -> list[Finding]:
    if connector.get("decimal.handling.mode", "precise") == "string":
        return []
    numeric = [c for c in table.key_columns if str(types.get(c, "")).startswith(_NUMERIC)]
    if not numeric:
        return []
    return [Finding("error", "numeric_key_encoded",
                    f"Key columns {', '.join(numeric)} of {table.source_table} are NUMERIC, which Debezium sends "
                    "as base64 bytes unless decimal.handling.mode=string; the subject ids would be wrong. "
                    "Set decimal.handling.mode=string in the connector.")]
