"""Find settings that make a Debezium pipeline drop deletes without an error.

Each finding names the setting, why a delete is lost or cannot become a request, and the
fix. The checks read the connector's JSON config, the change-event topics' configuration on
the broker, and the source tables' primary keys and replica identity in PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tombstone.cdc.config import BridgeConfig, TableMapping
from tombstone.connect.config import load_connector_config as read_connector_file

EXTRACT_NEW_RECORD_STATE = "io.debezium.transforms.ExtractNewRecordState"


@dataclass(frozen=True)
class Finding:
    level: str  # "error": deletes are lost; "warning": deletes may be lost or arrive late
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()} {self.code}: {self.message}"


def load_connector_config(path: str | Path) -> dict[str, str]:
    """Read a connector JSON file and return its ``config`` object, as strings."""
    return read_connector_file(path).config


def _transforms(config: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    names = [name.strip() for name in config.get("transforms", "").split(",") if name.strip()]
    result = []
    for name in names:
        prefix = f"transforms.{name}."
        result.append((name, {key[len(prefix):]: value for key, value in config.items() if key.startswith(prefix)}))
    return result


def check_connector(config: dict[str, Any], compacted_topics: set[str] | None = None) -> list[Finding]:
    """Findings about the connector settings alone; ``compacted_topics`` from the broker."""
    findings: list[Finding] = []
    skipped = {op.strip() for op in config.get("skipped.operations", "t").split(",")}
    if "d" in skipped:
        findings.append(Finding("error", "skipped_deletes",
                                "skipped.operations contains 'd', so the connector emits no delete events. "
                                "Remove 'd' from skipped.operations."))
    tombstones = config.get("tombstones.on.delete", "true").lower() != "false"
    if not tombstones and (compacted_topics is None or compacted_topics):
        where = ", ".join(sorted(compacted_topics)) if compacted_topics else "the change-event topics"
        findings.append(Finding("warning", "no_tombstones",
                                f"tombstones.on.delete=false while {where} use cleanup.policy=compact: "
                                "compaction then keeps each deleted row's last event forever, and a "
                                "consumer that reads after the delete event is compacted away never "
                                "learns of the delete. Set tombstones.on.delete=true."))
    for name, settings in _transforms(config):
        if settings.get("type") == EXTRACT_NEW_RECORD_STATE:
            findings.extend(_check_unwrap(name, settings))
    return findings


def _check_unwrap(name: str, settings: dict[str, str]) -> list[Finding]:
    mode = settings.get("delete.tombstone.handling.mode")
    legacy = settings.get("delete.handling.mode")
    findings: list[Finding] = []
    if mode == "drop" or (mode is None and legacy == "drop" and settings.get("drop.tombstones", "true") == "true"):
        findings.append(Finding("error", "unwrap_drops_deletes",
                                f"Transform {name} (ExtractNewRecordState) drops delete events and their "
                                "tombstones, so no delete reaches the bridge. Set "
                                "delete.tombstone.handling.mode=rewrite or rewrite-with-tombstone."))
    elif mode in (None, "tombstone", "delete-to-tombstone") and legacy is None:
        findings.append(Finding("warning", "unwrap_tombstone_only",
                                f"Transform {name} (ExtractNewRecordState) turns deletes into bare tombstones "
                                "without source.ts_ms, so the request's cut-off is the record's timestamp, "
                                "not the source commit. Set delete.tombstone.handling.mode=rewrite and "
                                "add.fields=op,source.ts_ms,lsn."))
    fields = {f.strip() for f in settings.get("add.fields", "").split(",") if f.strip()}
    if mode and mode.startswith("rewrite") and not {"source.ts_ms", "ts_ms"} & fields:
        findings.append(Finding("warning", "unwrap_no_source_time",
                                f"Transform {name} does not add source.ts_ms, so the cut-off falls back to "
                                "the record's timestamp. Add source.ts_ms (and lsn) to add.fields."))
    return findings


def check_coverage(config: dict[str, Any], bridge: BridgeConfig) -> list[Finding]:
    """Bridge tables that the connector does not capture, by its include and exclude lists."""
    include = [p.strip() for p in config.get("table.include.list", "").split(",") if p.strip()]
    exclude = [p.strip() for p in config.get("table.exclude.list", "").split(",") if p.strip()]
    findings = []
    for table in bridge.tables:
        name = table.source_table
        captured = (not include or any(re.fullmatch(p, name) for p in include)) and not any(
            re.fullmatch(p, name) for p in exclude)
        if not captured:
            findings.append(Finding("error", "table_not_captured",
                                    f"The bridge maps {table.topic}, but the connector does not capture "
                                    f"{name}. Add it to table.include.list."))
    return findings


_IDENTITY_SQL = """
SELECT c.relreplident,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS primary_key,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisreplident), '{}') AS identity_index
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""


def check_tables(connection: Any, bridge: BridgeConfig) -> list[Finding]:
    """Replica identity findings: delete events must carry every key column of the mapping."""
    findings = []
    with connection.cursor() as cursor:
        for table in bridge.tables:
            schema, _, relname = table.source_table.rpartition(".")
            cursor.execute(_IDENTITY_SQL, (schema or "public", relname))
            row = cursor.fetchone()
            if row is None:
                findings.append(Finding("error", "table_missing",
                                        f"Table {table.source_table} of {table.topic} does not exist in the "
                                        "source database. Fix the table name in the bridge config."))
                continue
            findings.extend(_identity_findings(table, *row))
    return findings


def _identity_findings(table: TableMapping, replident: str, primary_key: list[str],
                       identity_index: list[str]) -> list[Finding]:
    name = table.source_table
    if replident == "f":
        return []
    carried = {"d": primary_key, "i": identity_index}.get(replident, [])
    missing = [column for column in table.key_columns if column not in carried]
    if replident == "n" or (replident == "d" and not primary_key):
        return [Finding("error", "no_replica_identity",
                        f"Table {name} has no primary key and replica identity "
                        f"{'NOTHING' if replident == 'n' else 'DEFAULT'}: PostgreSQL refuses its deletes "
                        "under a publication, or they reach Debezium without any key. Add a primary key "
                        f"or run ALTER TABLE {name} REPLICA IDENTITY FULL.")]
    if missing:
        return [Finding("error", "key_not_in_identity",
                        f"Key columns {', '.join(missing)} of {name} are not in its replica identity "
                        f"({', '.join(carried)}), so delete events do not carry them and each delete "
                        f"would be dead-lettered. Run ALTER TABLE {name} REPLICA IDENTITY FULL or "
                        "map the primary key columns.")]
    return []
