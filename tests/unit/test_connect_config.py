"""Connector config files, connector status checks, and the Chinook script filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tombstone.cli import build_parser
from tombstone.connect.config import load_connector_config
from tombstone.connect.rest import _all_running, _failures
from tombstone.demo.chinook_pg import read_chinook_script
from tombstone.errors import ConfigError

DEMO_CONNECTOR = Path(__file__).resolve().parents[2] / "deploy" / "debezium" / "chinook-postgres.json"


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_demo_connector_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOMBSTONE_PG_HOST", "TOMBSTONE_PG_PORT", "TOMBSTONE_PG_USER", "TOMBSTONE_PG_PASSWORD",
                 "TOMBSTONE_CHINOOK_DBNAME"):
        monkeypatch.delenv(name, raising=False)

    connector = load_connector_config(DEMO_CONNECTOR)

    assert connector.name == "chinook-postgres"
    assert connector.config["name"] == "chinook-postgres"
    assert connector.config["database.hostname"] == "127.0.0.1"
    assert connector.config["database.port"] == "55432"
    assert connector.config["database.password"] == "tombstone"
    assert connector.config["database.dbname"] == "chinook"
    assert connector.config["snapshot.mode"] == "no_data"
    assert connector.config["tombstones.on.delete"] == "true"
    assert connector.config["table.include.list"] == "public.customer"


def test_demo_connector_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMBSTONE_PG_PASSWORD", "s3cret")
    monkeypatch.setenv("TOMBSTONE_PG_PORT", "5432")

    connector = load_connector_config(DEMO_CONNECTOR)

    assert connector.config["database.password"] == "s3cret"
    assert connector.config["database.port"] == "5432"


def test_values_become_strings(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "c", "config": {"connector.class": "X", "tasks.max": 1, "flag": True}})

    config = load_connector_config(path).config

    assert config["tasks.max"] == "1"
    assert config["flag"] == "true"


def test_unset_variable_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOMBSTONE_TEST_UNSET", raising=False)
    path = write(tmp_path, {"name": "c", "config": {"connector.class": "X", "database.password": "${TOMBSTONE_TEST_UNSET}"}})

    with pytest.raises(ConfigError, match="TOMBSTONE_TEST_UNSET"):
        load_connector_config(path)


@pytest.mark.parametrize("document", [
    [],
    {"config": {"connector.class": "X"}},
    {"name": "c"},
    {"name": "c", "config": {"tasks.max": "1"}},
    {"name": "c", "config": {"connector.class": "X", "name": "other"}},
    {"name": "c", "config": {"connector.class": "X", "nested": {"a": 1}}},
])
def test_malformed_file_rejected(tmp_path: Path, document: object) -> None:
    with pytest.raises(ConfigError):
        load_connector_config(write(tmp_path, document))


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read"):
        load_connector_config(tmp_path / "absent.json")


def test_overrides_rename_connector() -> None:
    connector = load_connector_config(DEMO_CONNECTOR).with_overrides(
        name="other", settings={"slot.name": "s", "value.converter.schemas.enable": True})

    assert connector.name == "other"
    assert connector.config["name"] == "other"
    assert connector.config["slot.name"] == "s"
    assert connector.config["value.converter.schemas.enable"] == "true"


def test_status_running_needs_every_task() -> None:
    running = {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]}
    starting = {"connector": {"state": "RUNNING"}, "tasks": []}
    one_paused = {"connector": {"state": "RUNNING"},
                  "tasks": [{"id": 0, "state": "RUNNING"}, {"id": 1, "state": "PAUSED"}]}

    assert _all_running(running)
    assert not _all_running(starting)
    assert not _all_running(one_paused)


def test_status_failures_carry_trace() -> None:
    status = {"connector": {"state": "RUNNING", "worker_id": "w"},
              "tasks": [{"id": 0, "state": "FAILED", "worker_id": "w", "trace": "ConnectException: boom"}]}

    failures = _failures(status)

    assert failures == ["task 0 on w: ConnectException: boom"]


def test_chinook_script_skips_database_statements(tmp_path: Path) -> None:
    script = tmp_path / "chinook.sql"
    script.write_text("DROP DATABASE IF EXISTS chinook;\nCREATE DATABASE chinook;\n\\c chinook;\n"
                      "CREATE TABLE genre (genre_id INT);\nINSERT INTO genre VALUES (1);\n", encoding="utf-8")

    text = read_chinook_script(script)

    assert "DATABASE" not in text
    assert "\\c" not in text
    assert "CREATE TABLE genre" in text
    assert "INSERT INTO genre" in text


def test_cli_parses_connect_commands() -> None:
    parser = build_parser()

    register = parser.parse_args(["connect", "register", "x.json", "--url", "http://127.0.0.1:8083"])
    start = parser.parse_args(["connect", "start", "--bootstrap", "127.0.0.1:9092"])

    assert register.connect_command == "register"
    assert register.config == "x.json"
    assert register.url == "http://127.0.0.1:8083"
    assert start.bootstrap == "127.0.0.1:9092"
