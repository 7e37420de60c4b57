"""Readable errors for denied requests and failed authentication, and the security settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from tombstone.errors import DeliveryError, FatalKafkaError, KafkaClientError
from tombstone.kafka.errors import (
    AUTHORIZATION_CODES,
    PERMANENT_CODES,
    authorization_hint,
    connection_hint,
    is_permanent,
    principal_of,
    to_exception,
)
from tombstone.kafka.producer import DurableProducer
from tombstone.settings import KafkaSettings

SASL = {"security.protocol": "SASL_SSL", "sasl.username": "requester"}


# Classification


@pytest.mark.parametrize("code", sorted(AUTHORIZATION_CODES))
def test_authorization_codes_permanent(code: str) -> None:
    assert code in PERMANENT_CODES
    assert is_permanent(code)


def test_to_exception_authorization_hint() -> None:
    error = to_exception(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED, "Group authorization failed."),
                         "consuming from t.requests")

    assert type(error) is KafkaClientError
    assert "failed. No ACL allows this" in str(error)


def test_to_exception_other_code_has_no_hint() -> None:
    error = to_exception(KafkaError(KafkaError.INVALID_CONFIG, "bad"), "creating a topic")

    assert "ACL" not in str(error)


# Messages


def test_authorization_hint_names_acl() -> None:
    hint = authorization_hint("TOPIC_AUTHORIZATION_FAILED", "User:requester", "WRITE", "topic", "t.proofs")

    assert "The broker denied User:requester WRITE on topic t.proofs" in hint
    assert "`kafka-acls --add --allow-principal User:requester --operation Write --topic t.proofs`" in hint


def test_authorization_hint_prefixed_group() -> None:
    hint = authorization_hint("GROUP_AUTHORIZATION_FAILED", "User:auditor", "DESCRIBE", "group",
                              "tombstone-reader-", prefixed=True)

    assert "DESCRIBE on groups named tombstone-reader-..." in hint
    assert "--resource-pattern-type prefixed --group tombstone-reader-`" in hint


def test_authorization_hint_cluster_option() -> None:
    hint = authorization_hint("CLUSTER_AUTHORIZATION_FAILED", "User:auditor", "IDEMPOTENT_WRITE", "cluster",
                              "kafka-cluster")

    assert "--operation IdempotentWrite --cluster`" in hint


def test_authorization_hint_empty_for_other_codes() -> None:
    assert authorization_hint("_MSG_TIMED_OUT", "User:x", "WRITE", "topic", "t") == ""
    assert authorization_hint(None, "User:x", "WRITE", "topic", "t") == ""


@pytest.mark.parametrize(("config", "expected"), [
    ({"security.protocol": "SASL_SSL", "sasl.username": "auditor"}, "User:auditor"),
    ({"security.protocol": "SSL"}, "the principal of this client's TLS certificate"),
    ({"security.protocol": "PLAINTEXT"}, "User:ANONYMOUS"),
    ({}, "User:ANONYMOUS"),
])
def test_principal_of(config: dict[str, Any], expected: str) -> None:
    assert principal_of(config) == expected


def test_connection_hint_authentication() -> None:
    errors = [KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
              KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")]

    hint = connection_hint(SASL, errors)

    assert "Authentication as User:requester failed: SASL authentication error: invalid credentials." in hint
    assert "TOMBSTONE_SASL_PASSWORD" in hint


def test_connection_hint_tls() -> None:
    errors = [KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed")]

    hint = connection_hint(SASL, errors)

    assert "The TLS connection failed: SSL handshake failed: certificate verify failed." in hint
    assert "TOMBSTONE_SSL_CA_LOCATION" in hint


def test_connection_hint_plaintext() -> None:
    hint = connection_hint({"security.protocol": "PLAINTEXT"}, [])

    assert "TOMBSTONE_SECURITY_PROTOCOL is PLAINTEXT" in hint


def test_connection_hint_empty_without_clue() -> None:
    assert connection_hint(SASL, [KafkaError(KafkaError._ALL_BROKERS_DOWN, "down")]) == ""


# DurableProducer


class DeniedProducer:
    """A fake confluent_kafka.Producer whose flush() raises a fatal error, as the real one does."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.queued = 0

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.queued += 1

    def flush(self, timeout: float = -1) -> int:
        raise KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                                        "Failed to acquire idempotence PID: Cluster authorization failed", fatal=True))

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def purge(self) -> None:
        self.queued = 0


def test_fatal_flush_denied_not_rebuilt() -> None:
    built: list[DeniedProducer] = []

    def factory(config: dict[str, Any]) -> DeniedProducer:
        built.append(DeniedProducer(config))
        return built[-1]

    producer = DurableProducer({**SASL, "sasl.username": "auditor"}, factory=factory)
    producer.send("t.proofs", b"k", b"v")

    with pytest.raises(FatalKafkaError) as caught:
        producer.confirm(1.0)

    assert caught.value.code == "CLUSTER_AUTHORIZATION_FAILED"
    assert "denied User:auditor IDEMPOTENT_WRITE on cluster kafka-cluster" in str(caught.value)
    assert len(built) == 1


class RejectingProducer(DeniedProducer):
    """Rejects produce() at once, as librdkafka does for a topic whose denial it has cached."""

    def produce(self, topic: str, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed"))


def test_denied_produce_names_acl() -> None:
    producer = DurableProducer(dict(SASL), factory=RejectingProducer)

    with pytest.raises(DeliveryError) as caught:
        producer.send("t.proofs", b"k", b"v")

    assert caught.value.code == "TOPIC_AUTHORIZATION_FAILED"
    assert "denied User:requester WRITE on topic t.proofs" in str(caught.value)


# KafkaSettings


def _settings(**values: Any) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers="127.0.0.1:1", **values)


def test_settings_protocol_normalized() -> None:
    settings = _settings(security_protocol=" sasl_ssl ", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                         sasl_password="p")

    assert settings.security_protocol == "SASL_SSL"
    assert settings.client_config()["security.protocol"] == "SASL_SSL"


def test_settings_unknown_protocol_rejected() -> None:
    with pytest.raises(ValidationError, match="not a Kafka security protocol"):
        _settings(security_protocol="TLS")


@pytest.mark.parametrize(("values", "missing"), [
    ({}, "TOMBSTONE_SASL_MECHANISM, TOMBSTONE_SASL_USERNAME, TOMBSTONE_SASL_PASSWORD"),
    ({"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"}, "TOMBSTONE_SASL_PASSWORD"),
    ({"sasl_username": "u", "sasl_password": "p"}, "TOMBSTONE_SASL_MECHANISM"),
])
def test_settings_sasl_incomplete_rejected(values: dict[str, str], missing: str) -> None:
    with pytest.raises(ValidationError, match=f"{missing} missing"):
        _settings(security_protocol="SASL_SSL", **values)


def test_settings_validation_error_hides_password() -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(security_protocol="SASL_SSL", sasl_password="hunter2-secret")

    assert "hunter2-secret" not in str(caught.value)


def test_settings_missing_ca_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        _settings(security_protocol="SSL", ssl_ca_location=str(tmp_path / "missing.pem"))


def test_settings_ca_probe_accepted() -> None:
    assert _settings(security_protocol="SSL", ssl_ca_location="probe").client_config()["ssl.ca.location"] == "probe"


def test_settings_plaintext_has_no_sasl_keys() -> None:
    config = _settings().client_config()

    assert config["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)
