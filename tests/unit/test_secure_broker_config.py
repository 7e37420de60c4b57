"""Principals, ACLs, credentials and configuration of the secure broker, without a broker."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from tombstone.broker.acls import (
    AUDITOR,
    REQUESTER,
    Grant,
    check_store_names,
    pipeline_grants,
    principal_names,
    worker_principal,
)
from tombstone.broker.runtime import runtime_config_dir
from tombstone.broker.secure import BrokerCredentials, SecureBroker, _java_argument, _write_private
from tombstone.cli import build_parser
from tombstone.errors import BrokerRuntimeError, ConfigError
from tombstone.kafka.reader import READER_GROUP_PREFIX
from tombstone.settings import KafkaSettings

TOPICS = KafkaSettings(bootstrap_servers="127.0.0.1:1", requests_topic="t.requests", proofs_topic="t.proofs",
                       dead_letter_topic="t.dead-letters", holds_topic="t.holds")


def _rules(grants: list[Grant], principal: str) -> set[tuple[str, str, str]]:
    return {(g.operation.name, g.resource_type.name, g.resource_name) for g in grants if g.principal == principal}


def test_requester_may_only_write_requests() -> None:
    rules = _rules(pipeline_grants(TOPICS, ["search"]), REQUESTER)

    assert rules == {("WRITE", "TOPIC", "t.requests"), ("IDEMPOTENT_WRITE", "BROKER", "kafka-cluster")}


def test_auditor_never_writes() -> None:
    rules = _rules(pipeline_grants(TOPICS, ["search"]), AUDITOR)

    assert rules == {("READ", "TOPIC", "t.requests"), ("READ", "TOPIC", "t.proofs"),
                     ("DESCRIBE", "GROUP", READER_GROUP_PREFIX)}


def test_worker_rules_per_store() -> None:
    grants = pipeline_grants(TOPICS, ["search", "cache"])

    assert _rules(grants, "worker-search") == {
        ("READ", "TOPIC", "t.requests"),
        ("READ", "GROUP", "tombstone.store.search"),
        ("WRITE", "TOPIC", "t.proofs"),
        ("WRITE", "TOPIC", "t.dead-letters"),
        ("READ", "TOPIC", "t.holds"),
        ("DESCRIBE", "GROUP", READER_GROUP_PREFIX),
        ("IDEMPOTENT_WRITE", "BROKER", "kafka-cluster"),
    }
    assert ("READ", "GROUP", "tombstone.store.cache") not in _rules(grants, "worker-search")


def test_only_reader_groups_are_prefixed() -> None:
    prefixed = [g for g in pipeline_grants(TOPICS, ["search"]) if g.pattern is ResourcePatternType.PREFIXED]

    assert {g.resource_name for g in prefixed} == {READER_GROUP_PREFIX}
    assert {g.operation for g in prefixed} == {AclOperation.DESCRIBE}


def test_grant_binding_allows_user() -> None:
    binding = Grant("requester", AclOperation.WRITE, ResourceType.TOPIC, "t.requests").binding()

    assert binding.principal == "User:requester"
    assert binding.host == "*"
    assert binding.permission_type is AclPermissionType.ALLOW
    assert binding.resource_pattern_type is ResourcePatternType.LITERAL


def test_principal_names_sorted_stores() -> None:
    assert principal_names(["search", "cache", "search"]) == [
        "broker", "admin", "requester", "auditor", "worker-cache", "worker-search"]
    assert worker_principal("search") == "worker-search"


@pytest.mark.parametrize("name", ["", "has space", "a,b", "x]", "-leading-dash", "é", "a" * 101])
def test_invalid_store_name_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="Invalid store name"):
        check_store_names([name])


def test_valid_store_names_accepted() -> None:
    assert check_store_names(["operational-db", "profiles.topic", "crm_db"]) == [
        "crm_db", "operational-db", "profiles.topic"]


# Credentials


def _credentials(ca_file: Path) -> BrokerCredentials:
    return BrokerCredentials("127.0.0.1:9093", str(ca_file), {"requester": "pw-requester", "admin": "pw-admin"},
                             {"requests": "t.requests", "proofs": "t.proofs", "dead_letter": "t.dl",
                              "holds": "t.holds"}, ["search"])


def test_credentials_settings_connect_as_principal(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("test", encoding="ascii")

    config = _credentials(ca_file).settings("requester").client_config()

    assert config["bootstrap.servers"] == "127.0.0.1:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "requester"
    assert config["sasl.password"] == "pw-requester"
    assert config["ssl.ca.location"] == str(ca_file)


def test_credentials_settings_topics(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("test", encoding="ascii")

    settings = _credentials(ca_file).settings("admin")

    assert (settings.requests_topic, settings.proofs_topic) == ("t.requests", "t.proofs")
    assert (settings.dead_letter_topic, settings.holds_topic) == ("t.dl", "t.holds")


def test_credentials_unknown_principal(tmp_path: Path) -> None:
    with pytest.raises(BrokerRuntimeError, match="no principal 'broker'"):
        _credentials(tmp_path / "ca.pem").settings("broker")


def test_credentials_environment_matches_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("test", encoding="ascii")
    environment = _credentials(ca_file).environment("requester")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    settings = KafkaSettings()

    assert settings.sasl_username == "requester"
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "pw-requester"
    assert settings.resolved_bootstrap() == "127.0.0.1:9093"
    assert settings.requests_topic == "t.requests"


def test_status_without_credentials(tmp_path: Path) -> None:
    status = SecureBroker(tmp_path, kafka=TOPICS).status()

    assert status["running"] is False
    assert status["secure"] is True
    assert "credentials_file" not in status


def test_write_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)

    _write_private(path, "new")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == "new"


@pytest.mark.parametrize(("value", "expected"), [
    ("plain", '"plain"'),
    ("/path with space/x", '"/path with space/x"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
])
def test_java_argument_quoting(value: str, expected: str) -> None:
    assert _java_argument(value) == expected


# Broker configuration template


def _template() -> str:
    return (runtime_config_dir() / "server-secure.properties").read_text(encoding="utf-8")


def test_template_fills_every_placeholder() -> None:
    filled = _template().format(broker_port=1, controller_port=2, data_dir="/d", keystore="/k.p12",
                                keystore_password="kp", ca_file="/ca.pem", broker_password="bp")

    assert re.search(r"\{[a-z_]+\}", filled) is None
    assert "listeners=SASL_SSL://127.0.0.1:1,CONTROLLER://127.0.0.1:2" in filled


def test_template_denies_by_default() -> None:
    properties = dict(line.split("=", 1) for line in _template().splitlines()
                      if line and not line.startswith("#"))

    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:broker;User:admin"
    assert properties["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert properties["listener.name.controller.ssl.client.auth"] == "required"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"


def test_plain_template_unchanged() -> None:
    plain = (runtime_config_dir() / "server.properties").read_text(encoding="utf-8")

    assert "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" in plain
    assert "authorizer.class.name" not in plain


# Command line


def test_cli_secure_start_stores() -> None:
    args = build_parser().parse_args(["broker", "start", "--secure", "--store", "search", "--store", "cache"])

    assert args.secure is True
    assert args.store == ["search", "cache"]


def test_cli_plain_broker_default() -> None:
    args = build_parser().parse_args(["broker", "status"])

    assert args.secure is False
    assert args.store is None
