"""A local certificate authority and a broker certificate for 127.0.0.1, made with keytool.

keytool ships with every JDK, and the broker needs a JDK anyway, so the secure profile
needs no extra Python package. The CA's private key is deleted once it has signed the
broker certificate, so nothing on disk can issue another certificate that clients trust.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tombstone.errors import BrokerRuntimeError

logger = logging.getLogger(__name__)

# The broker's TLS identity. The mutual-TLS controller listener maps this subject to the
# principal User:broker (see ssl.principal.mapping.rules in server-secure.properties).
BROKER_SUBJECT = "CN=broker,O=tombstone"
BROKER_SAN = "dns:localhost,ip:127.0.0.1"
CA_SUBJECT = "CN=tombstone local CA,O=tombstone"

# Each keytool call starts a JVM, and these options make such short runs start faster.
_FAST_JVM = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]
_CA_PASSWORD_VAR = "TOMBSTONE_CA_STORE_PASSWORD"
_KEYSTORE_PASSWORD_VAR = "TOMBSTONE_BROKER_STORE_PASSWORD"


@dataclass(frozen=True)
class BrokerCertificates:
    """Files of the broker's TLS identity and the CA that clients trust."""

    ca_file: Path
    keystore: Path
    keystore_password: str
    valid_days: int


def keytool_path() -> str:
    """Locate keytool, on PATH or next to the ``java`` that runs the broker."""
    found = shutil.which("keytool")
    if found:
        return found
    java = shutil.which("java")
    if java:
        candidate = Path(java).resolve().parent / "keytool"
        if candidate.exists():
            return str(candidate)
    raise BrokerRuntimeError(
        "keytool was not found, and the secure broker needs it to create its TLS certificates. "
        "It ships with the JDK (Debian: apt-get install openjdk-17-jdk-headless)."
    )


def generate_certificates(directory: Path, valid_days: int = 30, timeout_s: float = 60.0) -> BrokerCertificates:
    """Create a CA and a broker certificate for localhost and 127.0.0.1 in ``directory``.

    Writes ``ca.pem`` (the CA certificate for clients) and ``broker.p12`` (the broker's key,
    certificate and chain, mode 600). ``directory`` is created with mode 700.

    Raises:
        BrokerRuntimeError: keytool is missing, fails or times out.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keytool = keytool_path()
    ca_store = directory / "ca.p12"
    keystore = directory / "broker.p12"
    ca_file = directory / "ca.pem"
    request = directory / "broker.csr"
    chain = directory / "broker-chain.pem"
    keystore_password = secrets.token_urlsafe(24)
    # Passwords reach keytool through the environment, never its command line, which
    # other local users can read in /proc.
    env = {**os.environ, _CA_PASSWORD_VAR: secrets.token_urlsafe(24), _KEYSTORE_PASSWORD_VAR: keystore_password}
    ca_pass = ["-storepass:env", _CA_PASSWORD_VAR]
    broker_pass = ["-storepass:env", _KEYSTORE_PASSWORD_VAR]
    validity = ["-validity", str(valid_days)]
    ec_key = ["-keyalg", "EC", "-groupname", "secp256r1", "-storetype", "PKCS12"]

    def run(*arguments: str) -> None:
        _run_keytool([keytool, *_FAST_JVM, *arguments], env, timeout_s)

    started = time.monotonic()
    for path in (ca_store, keystore, ca_file, request, chain):
        path.unlink(missing_ok=True)

    def make_ca() -> None:
        run("-genkeypair", "-alias", "ca", "-dname", CA_SUBJECT, "-ext", "bc:c", *ec_key, *validity,
            "-keystore", str(ca_store), *ca_pass)
        run("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), *ca_pass, "-file", str(ca_file))

    def make_broker_key() -> None:
        run("-genkeypair", "-alias", "broker", "-dname", BROKER_SUBJECT, *ec_key, *validity,
            "-keystore", str(keystore), *broker_pass)
        run("-certreq", "-alias", "broker", "-keystore", str(keystore), *broker_pass, "-file", str(request))

    # The CA and the broker's key pair do not depend on each other, so they are made in parallel.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(make_ca), pool.submit(make_broker_key)]:
            future.result()

    # Sign the broker's request. The certificate serves TLS on the client listener and
    # authenticates the broker as a TLS client on the controller listener.
    signed = directory / "broker.pem"
    run("-gencert", "-alias", "ca", "-keystore", str(ca_store), *ca_pass, "-infile", str(request),
        "-outfile", str(signed), "-rfc", "-ext", f"SAN={BROKER_SAN}",
        "-ext", "KU=digitalSignature,keyEncipherment", "-ext", "EKU=serverAuth,clientAuth", *validity)
    chain.write_text(signed.read_text(encoding="ascii") + ca_file.read_text(encoding="ascii"), encoding="ascii")
    run("-importcert", "-alias", "broker", "-file", str(chain), "-keystore", str(keystore), *broker_pass,
        "-noprompt")

    for path in (ca_store, request, chain, signed):
        path.unlink()
    os.chmod(keystore, 0o600)
    os.chmod(ca_file, 0o644)
    logger.info("Created a local CA and a broker certificate in %s in %.1f s", directory,
                time.monotonic() - started)
    return BrokerCertificates(ca_file, keystore, keystore_password, valid_days)


def _run_keytool(command: list[str], env: dict[str, str], timeout_s: float) -> None:
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BrokerRuntimeError(f"keytool {command[len(_FAST_JVM) + 1]} timed out after {timeout_s:.0f} s.") from None
    if result.returncode != 0:
        raise BrokerRuntimeError(
            f"keytool {command[len(_FAST_JVM) + 1]} failed (exit {result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-2000:]}"
        )
