"""The config checker flags every setting that drops deletes without an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tombstone.cdc.checker import check_connector, check_coverage, load_connector_config
from tombstone.cdc.checker_tables import _type_findings, identity_findings
from tombstone.cdc.config import BridgeConfig, TableMapping, load_bridge_config
from tombstone.errors import ConfigError

BASE = {"connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "topic.prefix": "chinook", "table.include.list": "public.customer", "decimal.handling.mode": "string"}
UNWRAP = {"transforms": "unwrap", "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState"}
TABLE = TableMapping(topic="chinook.public.customer", subject_type="customer", data_class="customer_profile",
                     key_columns=["customer_id"])


def codes(findings: list) -> list[str]:
    return [f.code for f in findings]


def test_safe_config_has_no_findings() -> None:
    config = {**BASE, **UNWRAP, "transforms.unwrap.delete.tombstone.handling.mode": "rewrite-with-tombstone",
              "transforms.unwrap.add.fields": "op,source.ts_ms,lsn",
              "topic.creation.default.cleanup.policy": "compact",
              "topic.creation.default.delete.retention.ms": "604800000"}
    assert check_connector(config, {"chinook.public.customer"}) == []


def test_tombstones_off_ahead_of_a_compacted_topic_warns() -> None:
    config = {**BASE, "tombstones.on.delete": "false"}
    findings = check_connector(config, {"chinook.public.customer"})
    assert codes(findings) == ["no_tombstones"]
    assert "chinook.public.customer" in findings[0].message
    assert "tombstones.on.delete=true" in findings[0].message
    assert check_connector(config, set()) == []  # not compacted: nothing to lose


def test_unwrap_drop_mode_is_an_error() -> None:
    config = {**BASE, **UNWRAP, "transforms.unwrap.delete.tombstone.handling.mode": "drop"}
    assert codes(check_connector(config)) == ["unwrap_drops_deletes"]


def test_legacy_delete_handling_drop_is_an_error() -> None:
    config = {**BASE, **UNWRAP, "transforms.unwrap.delete.handling.mode": "drop"}
    assert "unwrap_drops_deletes" in codes(check_connector(config))


def test_unwrap_default_mode_warns_that_cutoff_loses_source_time() -> None:
    assert codes(check_connector({**BASE, **UNWRAP})) == ["unwrap_tombstone_only"]


def test_rewrite_without_source_time_warns() -> None:
    config = {**BASE, **UNWRAP, "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
              "transforms.unwrap.add.fields": "lsn"}
    assert codes(check_connector(config)) == ["unwrap_no_source_time"]


def test_rewrite_without_lsn_warns() -> None:
    config = {**BASE, **UNWRAP, "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
              "transforms.unwrap.add.fields": "source.ts_ms"}
    assert codes(check_connector(config)) == ["unwrap_no_lsn"]


def test_precise_decimals_and_default_tombstone_retention_warn() -> None:
    config = {**BASE, "decimal.handling.mode": "precise", "topic.creation.default.cleanup.policy": "compact"}
    assert codes(check_connector(config, {"chinook.public.customer"})) == [
        "short_tombstone_retention", "decimal_keys_encoded"]


def test_other_transforms_and_topic_mismatch_are_reported() -> None:
    bridge = BridgeConfig.model_validate({"bridge": {"name": "x"}, "tables": [TABLE.model_dump()]})
    router = {**BASE, "transforms": "route", "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter"}
    assert codes(check_connector(router)) == ["unknown_transform"]
    assert codes(check_coverage({**BASE, "topic.prefix": "other"}, bridge)) == ["topic_mismatch"]


def test_include_lists_match_case_insensitively_and_bad_patterns_are_findings() -> None:
    bridge = BridgeConfig.model_validate({"bridge": {"name": "x"}, "tables": [TABLE.model_dump()]})
    assert check_coverage({**BASE, "table.include.list": "PUBLIC.CUSTOMER"}, bridge) == []
    assert codes(check_coverage({**BASE, "schema.exclude.list": "public"}, bridge)) == ["table_not_captured"]
    assert codes(check_coverage({**BASE, "table.include.list": "public.(customer"}, bridge)) == ["invalid_pattern"]


def test_skipped_delete_operations_is_an_error() -> None:
    assert codes(check_connector({**BASE, "skipped.operations": "t,d"})) == ["skipped_deletes"]


def test_table_outside_the_include_list_is_reported() -> None:
    bridge = BridgeConfig.model_validate({"bridge": {"name": "x"}, "tables": [TABLE.model_dump()]})
    assert check_coverage({**BASE, "table.include.list": "public.invoice"}, bridge)[0].code == "table_not_captured"
    assert check_coverage({**BASE, "table.include.list": "public\\..*"}, bridge) == []
    assert check_coverage({**BASE, "table.exclude.list": "public.customer", "table.include.list": ""},
                          bridge)[0].code == "table_not_captured"


@pytest.mark.parametrize(("replident", "pk", "identity", "expected"), [
    ("d", ["customer_id"], "primary_key", []),
    ("f", ["customer_id"], "primary_key", []),
    ("f", [], "full", ["no_key_on_compacted_topic"]),
    ("f", [], "primary_key", ["no_key_on_compacted_topic", "key_not_in_identity"]),
    ("d", [], "primary_key", ["no_replica_identity"]),
    ("n", ["customer_id"], "primary_key", ["no_replica_identity"]),
    ("d", ["invoice_id"], "primary_key", ["key_not_in_identity"]),
    ("i", ["customer_id"], "primary_key", ["identity_using_index"]),
])
def test_replica_identity(replident: str, pk: list[str], identity: str, expected: list[str]) -> None:
    table = TABLE.model_copy(update={"identity": identity})
    findings = identity_findings(table, replident, pk)
    assert codes(findings) == expected
    for finding in findings:
        assert "identity" in finding.message.lower() or "message.key.columns" in finding.message


def test_numeric_key_columns_need_string_decimals() -> None:
    assert codes(_type_findings(TABLE, {"customer_id": "numeric(12,0)"}, {})) == ["numeric_key_encoded"]
    assert _type_findings(TABLE, {"customer_id": "numeric(12,0)"}, {"decimal.handling.mode": "string"}) == []
    assert _type_findings(TABLE, {"customer_id": "integer"}, {}) == []


def test_connector_file_with_config_object_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"name": "c", "config": {**BASE, "database.port": "${PGPORT_TEST:-55432}",
                                                        "tombstones.on.delete": False}}))
    monkeypatch.delenv("PGPORT_TEST", raising=False)
    config = load_connector_config(path)
    assert config["database.port"] == "55432"
    assert config["tombstones.on.delete"] == "false"
    assert codes(check_connector(config, None)) == ["no_tombstones"]


def test_connector_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.json"):
        load_connector_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json is not valid JSON"):
        load_connector_config(bad)


def test_bridge_config_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('[bridge]\nname = "x"\n[[tables]]\ntopic = "t"\nsubject_type = "customer"\n'
                    'data_class = "customer_profile"\nkey_columns = ["id; drop table"]\n')
    with pytest.raises(ConfigError, match="is not a column name"):
        load_bridge_config(path)
    path.write_text('[bridge]\nname = "x"\ntables = []\n')
    with pytest.raises(ConfigError, match="invalid"):
        load_bridge_config(path)


def test_shipped_bridge_config_matches_the_inventory() -> None:
    from tombstone.inventory import default_inventory_path, load_inventory

    root = Path(__file__).resolve().parents[2]
    config = load_bridge_config(root / "deploy" / "debezium" / "chinook-bridge.toml")
    config.check_inventory(load_inventory(default_inventory_path()))
