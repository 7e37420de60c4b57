"""Process-wide settings read from the environment.

Kafka settings use the ``TOMBSTONE_`` prefix; ``KAFKA_BOOTSTRAP_SERVERS`` is accepted as
well because most Kafka tooling reads it. When neither is set, the bootstrap address of
the local broker started by ``tombstone broker start`` is used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tombstone.errors import ConfigError
from tombstone.logs import LIBRDKAFKA_LOGGER


def cache_dir() -> Path:
    """Cache outside the repository for broker jars and sample data."""
    configured = os.environ.get("TOMBSTONE_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tombstone"


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class KafkaSettings(BaseSettings):
    """Connection and topic names shared by every tombstone process."""

    # hide_input_in_errors: a validation error would otherwise echo TOMBSTONE_SASL_PASSWORD.
    model_config = SettingsConfigDict(env_prefix="TOMBSTONE_", frozen=True, extra="ignore",
                                      populate_by_name=True, hide_input_in_errors=True)

    bootstrap_servers: str = Field(
        default="",
        validation_alias=AliasChoices("TOMBSTONE_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    requests_topic: str = "deletion.requests"
    proofs_topic: str = "deletion.proofs"
    dead_letter_topic: str = "deletion.dead-letters"
    holds_topic: str = "deletion.holds"
    # librdkafka's security.protocol, sasl.* and ssl.ca.location. `tombstone broker start
    # --secure` writes matching values for each principal to env/<principal>.env.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0)
    delivery_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("security_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        protocol = value.strip().upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"{value!r} is not a Kafka security protocol. Use one of {', '.join(SECURITY_PROTOCOLS)}")
        return protocol

    @field_validator("ssl_ca_location")
    @classmethod
    def _ca_exists(cls, value: str | None) -> str | None:
        # "probe" makes librdkafka search the system's usual CA locations.
        if value and value != "probe" and not Path(value).exists():
            raise ValueError(f"CA file {value} does not exist. TOMBSTONE_SSL_CA_LOCATION must name the "
                             "PEM file of the CA that signed the broker's certificate")
        return value or None

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        # Without a mechanism librdkafka uses GSSAPI (Kerberos), whose errors do not point at the cause.
        if self.security_protocol.startswith("SASL_"):
            missing = [f"TOMBSTONE_{name.upper()}" for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if not getattr(self, name)]
            if missing:
                raise ValueError(f"{', '.join(missing)} missing: security protocol {self.security_protocol} "
                                 "needs a SASL mechanism, user name and password")
        return self

    def resolved_bootstrap(self) -> str:
        """Bootstrap servers from the environment, else from the running local broker."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        from tombstone.broker.local import LocalBroker

        address = LocalBroker().running_bootstrap()
        if address:
            return address
        raise ConfigError(
            "No Kafka bootstrap servers configured. Set KAFKA_BOOTSTRAP_SERVERS "
            "(for example 127.0.0.1:9092) or start a local broker with `tombstone broker start`."
        )

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.resolved_bootstrap(),
            "security.protocol": self.security_protocol,
            "socket.connection.setup.timeout.ms": int(self.connect_timeout_s * 1000),
            # librdkafka's own log lines go through Python logging, not straight to stderr.
            "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


class PseudonymSettings(BaseSettings):
    """HMAC keys that turn subject keys into pseudonyms on proof records.

    ``key`` and ``key_id`` are the current key, which signs new proofs and exports.
    ``keys_file`` names a key ring of retired keys, one ``KEY_ID = SECRET`` line each,
    which verification uses for proofs made before a rotation.
    """

    model_config = SettingsConfigDict(env_prefix="TOMBSTONE_PSEUDONYM_", frozen=True, extra="ignore")

    key: SecretStr | None = None
    key_id: str = "k1"
    # A string, not a Path: an empty TOMBSTONE_PSEUDONYM_KEYS_FILE means no key ring, not ".".
    keys_file: str | None = None

    def require_key(self) -> bytes:
        """Return the HMAC key as bytes; raise ``ConfigError`` when it is missing or short."""
        if self.key is None or not self.key.get_secret_value():
            raise ConfigError(
                "TOMBSTONE_PSEUDONYM_KEY is not set. Set it to a secret of at least 32 "
                "random characters; every worker and the ledger must share it."
            )
        secret = self.key.get_secret_value().encode("utf-8")
        if len(secret) < 16:
            raise ConfigError(
                "TOMBSTONE_PSEUDONYM_KEY is shorter than 16 bytes. Use at least 32 random characters."
            )
        return secret
