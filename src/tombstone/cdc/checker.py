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

from tombstone.cdc.config import BridgeConfig
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
    compact = compacted_topics is None or bool(compacted_topics)
    where = (", ".join(sorted(compacted_topics)) if compacted_topics
             else "the change-event topics (not checked on a broker)" if compacted_topics is None else "")
    tombstones = config.get("tombstones.on.delete", "true").lower() != "false"
    if not tombstones and compact:
        findings.append(Finding("warning", "no_tombstones",
                                f"tombstones.on.delete=false ahead of compacted {where}: compaction keeps each "
                                "deleted row's delete event, with its before image, forever, and consumers "
                                "that act on tombstones never see the delete. Set tombstones.on.delete=true."))
    if compact and config.get("cleanup.policy", config.get("topic.creation.default.cleanup.policy")) == "compact" \
            and "topic.creation.default.delete.retention.ms" not in config:
        findings.append(Finding("warning", "short_tombstone_retention",
                                "The connector creates compacted topics with the broker's delete.retention.ms "
                                "(1 day by default): a bridge that is down longer finds neither the delete "
                                "event nor its tombstone. Set topic.creation.default.delete.retention.ms and "
                                "min.compaction.lag.ms to the longest bridge outage you tolerate."))
    if config.get("decimal.handling.mode", "precise") == "precise":
        findings.append(Finding("warning", "decimal_keys_encoded",
                                "decimal.handling.mode=precise sends NUMERIC and DECIMAL columns as base64 bytes, "
                                "so such a key column would give a subject id like 'AQ=='. Set "
                                "decimal.handling.mode=string (cdc-check --dsn finds numeric key columns)."))
    for name, settings in _transforms(config):
        if settings.get("type") == EXTRACT_NEW_RECORD_STATE:
            findings.extend(_check_unwrap(name, settings))
        else:
            findings.append(Finding("warning", "unknown_transform",
                                    f"Transform {name} ({settings.get('type')}) may rename, filter or rewrite "
                                    "change events before the bridge; check that deletes still reach the "
                                    "bridge's topics with their key columns."))
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
    if mode and mode.startswith("rewrite") and "lsn" not in fields and "source.lsn" not in fields:
        findings.append(Finding("warning", "unwrap_no_lsn",
                                f"Transform {name} does not add lsn, so a change that Debezium sends again "
                                "is told apart by its commit time only. Add lsn to add.fields."))
    if mode and mode.startswith("rewrite") and not {"source.ts_ms", "ts_ms"} & fields:
        findings.append(Finding("warning", "unwrap_no_source_time",
                                f"Transform {name} does not add source.ts_ms, so the cut-off falls back to "
                                "the record's timestamp. Add source.ts_ms (and lsn) to add.fields."))
    return findings


def _matches(patterns: list[str], name: str) -> bool:
    # Debezium matches these lists as whole, case-insensitive regular expressions.
    return any(re.fullmatch(pattern, name, re.IGNORECASE) for pattern in patterns)


def _patterns(config: dict[str, Any], key: str) -> list[str]:
    return [p.strip() for p in config.get(key, "").split(",") if p.strip()]


def check_coverage(config: dict[str, Any], bridge: BridgeConfig) -> list[Finding]:
    """Bridge tables that the connector does not capture, or whose events go to another topic."""
    findings = []
    try:
        include, exclude = _patterns(config, "table.include.list"), _patterns(config, "table.exclude.list")
        schemas_in, schemas_out = _patterns(config, "schema.include.list"), _patterns(config, "schema.exclude.list")
        for table in bridge.tables:
            name = table.source_table
            schema = name.rpartition(".")[0] or "public"
            captured = ((not include or _matches(include, name)) and not _matches(exclude, name)
                        and (not schemas_in or _matches(schemas_in, schema)) and not _matches(schemas_out, schema))
            if not captured:
                findings.append(Finding("error", "table_not_captured",
                                        f"The bridge maps {table.topic}, but the connector does not capture {name}. "
                                        "Add it to table.include.list (and schema.include.list)."))
            prefix = config.get("topic.prefix")
            renamed = any(s.get("type") != EXTRACT_NEW_RECORD_STATE for _, s in _transforms(config))
            if prefix and not renamed and table.topic != f"{prefix}.{name}":
                findings.append(Finding("error", "topic_mismatch",
                                        f"The connector writes {name} to {prefix}.{name}, but the bridge reads "
                                        f"{table.topic}. Fix topic.prefix or the bridge's topic."))
    except re.error as exc:
        findings.append(Finding("error", "invalid_pattern",
                                f"A table or schema list of the connector is not a valid regular expression ({exc})."))
    return findings
