"""The local broker with TLS, SASL/SCRAM-SHA-512 and deny-by-default ACLs.

``tombstone broker start --secure`` runs it. Each start creates, under the state
directory (mode 700):

- ``run/tls/ca.pem``: the CA certificate that clients need (``TOMBSTONE_SSL_CA_LOCATION``);
- ``run/tls/broker.p12``: the broker's key and certificate (mode 600);
- ``run/server.properties``: the broker's settings, with the keystore and broker passwords (mode 600);
- ``credentials.json``: every principal's password, the CA file and the topic names (mode 600);
- ``env/<principal>.env``: ``export`` lines that point tombstone at the broker as that
  principal, for ``. env/requester.env`` in a shell (mode 600).

Passwords, certificates and the KRaft storage are new on every start, so clients must read
the credentials again after a restart. ``stop`` deletes the credentials and env files.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tombstone.broker.acls import ADMIN, BROKER, apply_grants, check_store_names, pipeline_grants, principal_names
from tombstone.broker.certificates import BrokerCertificates, generate_certificates
from tombstone.broker.local import LocalBroker, random_cluster_id
from tombstone.broker.runtime import runtime_config_dir
from tombstone.errors import BrokerRuntimeError, KafkaClientError
from tombstone.settings import KafkaSettings, cache_dir

logger = logging.getLogger(__name__)

SECURITY_PROTOCOL = "SASL_SSL"
SASL_MECHANISM = "SCRAM-SHA-512"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that only its owner may read (mode 600), replacing it."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


@dataclass(frozen=True)
class BrokerCredentials:
    """Address, CA file, passwords and topic names of the secure broker, as in ``credentials.json``."""

    bootstrap_servers: str
    ca_file: str
    passwords: dict[str, str]
    topics: dict[str, str]
    stores: list[str] = field(default_factory=list)

    def settings(self, principal: str, **overrides: object) -> KafkaSettings:
        """Return KafkaSettings that connect as ``principal``. ``overrides`` replace any field."""
        if principal not in self.passwords:
            raise BrokerRuntimeError(
                f"The secure broker has no principal {principal!r}. Its principals are "
                f"{', '.join(sorted(self.passwords))}."
            )
        values: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_username": principal,
            "sasl_password": self.passwords[principal],
            "ssl_ca_location": self.ca_file,
            **{f"{name}_topic": topic for name, topic in self.topics.items()},
        }
        values.update(overrides)
        return KafkaSettings(**values)

    def environment(self, principal: str) -> dict[str, str]:
        """Return the environment variables that make tombstone connect as ``principal``."""
        settings = self.settings(principal)
        return {
            "TOMBSTONE_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "TOMBSTONE_SECURITY_PROTOCOL": SECURITY_PROTOCOL,
            "TOMBSTONE_SASL_MECHANISM": SASL_MECHANISM,
            "TOMBSTONE_SASL_USERNAME": principal,
            "TOMBSTONE_SASL_PASSWORD": self.passwords[principal],
            "TOMBSTONE_SSL_CA_LOCATION": self.ca_file,
            "TOMBSTONE_REQUESTS_TOPIC": settings.requests_topic,
            "TOMBSTONE_PROOFS_TOPIC": settings.proofs_topic,
            "TOMBSTONE_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
            "TOMBSTONE_HOLDS_TOPIC": settings.holds_topic,
        }


class SecureBroker(LocalBroker):
    """Start, inspect and stop the secure development broker in ``state_dir``.

    ``stores`` names the stores that get a worker principal (``worker-<store>``).
    ``kafka`` supplies the topic names that the ACLs cover; its connection settings are
    not used.
    """

    def __init__(self, state_dir: Path | None = None, heap_mb: int = 512, stores: list[str] | None = None,
                 kafka: KafkaSettings | None = None) -> None:
        super().__init__(Path(state_dir) if state_dir else cache_dir() / "broker-secure", heap_mb)
        self.stores = check_store_names(stores or [])
        # Only topic names are read from the environment. The client security settings there
        # may point at the credentials of an earlier start, which must not fail this one.
        self.topic_settings = kafka or KafkaSettings(security_protocol="PLAINTEXT", sasl_mechanism=None,
                                                     sasl_username=None, sasl_password=None, ssl_ca_location=None)
        self.timings: dict[str, float] = {}
        self._passwords: dict[str, str] = {}
        self._certificates: BrokerCertificates | None = None

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def env_dir(self) -> Path:
        return self.state_dir / "env"

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the broker unless it already runs; return its bootstrap address.

        Steps: certificates, configuration, storage with every principal's SCRAM
        credential, launch, ACLs, credentials file.
        """
        running = self.running_bootstrap()
        if running:
            logger.info("Secure broker already running at %s; credentials in %s", running, self.credentials_file)
            return running
        started = time.monotonic()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._remove_credentials()
        self._passwords = {name: secrets.token_urlsafe(24) for name in principal_names(self.stores)}
        self.timings = {}

        bootstrap = super().start(timeout_s)
        self.timings["broker_ready_s"] = time.monotonic() - started
        # The broker's own password stays in server.properties, because people use the admin super user.
        client_passwords = {name: password for name, password in self._passwords.items() if name != BROKER}
        credentials = BrokerCredentials(bootstrap, str(self._tls().ca_file), client_passwords,
                                        self._topic_names(), list(self.stores))
        try:
            step = time.monotonic()
            admin = AdminClient(credentials.settings(ADMIN).client_config())
            apply_grants(admin, pipeline_grants(self.topic_settings, self.stores))
            self.timings["acls_s"] = time.monotonic() - step
        except KafkaClientError as exc:
            self.stop()
            raise BrokerRuntimeError(f"The secure broker started, but creating its ACLs failed: {exc}") from exc
        self.timings["total_s"] = time.monotonic() - started
        self._write_credentials(credentials)
        logger.info("Secure Kafka broker ready at %s in %.1f s (%s); credentials in %s", bootstrap,
                    self.timings["total_s"], ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()),
                    self.credentials_file)
        return bootstrap

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker and delete its credentials, which the next start replaces."""
        stopped = super().stop(timeout_s)
        self._remove_credentials()
        return stopped

    def status(self) -> dict[str, object]:
        """Return the status for ``tombstone broker status --secure``, with the paths of the credentials."""
        status = super().status()
        status["secure"] = True
        status["security_protocol"] = SECURITY_PROTOCOL
        status["sasl_mechanism"] = SASL_MECHANISM
        try:
            credentials = self.credentials()
        except BrokerRuntimeError:
            return status
        status["credentials_file"] = str(self.credentials_file)
        status["ca_file"] = credentials.ca_file
        status["principals"] = sorted(credentials.passwords)
        status["env_files"] = {name: str(self.env_dir / f"{name}.env") for name in sorted(credentials.passwords)}
        status["topics"] = credentials.topics
        return status

    def credentials(self) -> BrokerCredentials:
        """Load ``credentials.json`` of the running broker.

        Raises:
            BrokerRuntimeError: the file is missing or unreadable, so the broker is not running.
        """
        try:
            document = json.loads(self.credentials_file.read_text(encoding="utf-8"))
            return BrokerCredentials(**document)
        except (OSError, ValueError, TypeError) as exc:
            raise BrokerRuntimeError(
                f"No credentials of a secure broker in {self.credentials_file} ({exc}). "
                "Start it with `tombstone broker start --secure`."
            ) from exc

    # Hooks called by LocalBroker.start

    def _write_config(self, run_dir: Path, broker_port: int, controller_port: int) -> Path:
        step = time.monotonic()
        self._certificates = generate_certificates(run_dir / "tls")
        self.timings["certificates_s"] = time.monotonic() - step
        template = (runtime_config_dir() / "server-secure.properties").read_text(encoding="utf-8")
        config = run_dir / "server.properties"
        _write_private(config, template.format(
            broker_port=broker_port, controller_port=controller_port, data_dir=run_dir / "data",
            keystore=self._certificates.keystore, keystore_password=self._certificates.keystore_password,
            ca_file=self._certificates.ca_file, broker_password=self._passwords[BROKER],
        ))
        (run_dir / "log4j2.properties").write_text(
            (runtime_config_dir() / "log4j2.properties").read_text(encoding="utf-8"), encoding="utf-8")
        return config

    def _format(self, common: list[str], config: Path) -> None:
        """Format KRaft storage with a SCRAM credential for every principal.

        The StorageTool arguments contain passwords, so they go through a Java argument
        file (mode 600) instead of the command line, which other local users can read.
        """
        step = time.monotonic()
        arguments = ["kafka.tools.StorageTool", "format", "--standalone", "-t", random_cluster_id(),
                     "-c", str(config)]
        for name, password in self._passwords.items():
            arguments += ["--add-scram", f"{SASL_MECHANISM}=[name={name},password={password}]"]
        argument_file = config.parent / "format.args"
        _write_private(argument_file, "\n".join(_java_argument(a) for a in arguments) + "\n")
        try:
            result = subprocess.run(["java", "-Xmx256m", *common, f"@{argument_file}"],
                                    capture_output=True, text=True, timeout=120)
        finally:
            argument_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise BrokerRuntimeError(
                f"Formatting KRaft storage failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        self.timings["format_s"] = time.monotonic() - step

    # Files

    def _tls(self) -> BrokerCertificates:
        if self._certificates is None:
            raise BrokerRuntimeError("The secure broker's certificates were not created; call start() first.")
        return self._certificates

    def _topic_names(self) -> dict[str, str]:
        kafka = self.topic_settings
        return {"requests": kafka.requests_topic, "proofs": kafka.proofs_topic,
                "dead_letter": kafka.dead_letter_topic, "holds": kafka.holds_topic}

    def _write_credentials(self, credentials: BrokerCredentials) -> None:
        _write_private(self.credentials_file, json.dumps(credentials.__dict__, indent=2) + "\n")
        self.env_dir.mkdir(mode=0o700, exist_ok=True)
        for principal in credentials.passwords:
            lines = [f"export {key}={shlex.quote(value)}"
                     for key, value in credentials.environment(principal).items()]
            _write_private(self.env_dir / f"{principal}.env", "\n".join(lines) + "\n")

    def _remove_credentials(self) -> None:
        self.credentials_file.unlink(missing_ok=True)
        if self.env_dir.is_dir():
            for env_file in self.env_dir.glob("*.env"):
                env_file.unlink()


def _java_argument(value: str) -> str:
    """Quote one argument for a Java ``@argfile``, where whitespace separates arguments."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
