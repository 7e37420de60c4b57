"""Keyed pseudonyms of subject keys for proof records, and the key ring that verifies them.

An unkeyed hash of a low-entropy id (a customer number) is reversed by enumerating the id
space, so proofs carry HMAC-SHA256 under a secret key, with the key's id so that old
proofs stay verifiable after the key is rotated.

Rotation: the new key becomes ``TOMBSTONE_PSEUDONYM_KEY`` with a new
``TOMBSTONE_PSEUDONYM_KEY_ID``, and the old key moves to the key ring file named by
``TOMBSTONE_PSEUDONYM_KEYS_FILE``. Verification picks each record's key by its key id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tombstone.errors import ConfigError
from tombstone.settings import PseudonymSettings

logger = logging.getLogger(__name__)

MIN_KEY_BYTES = 16
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class Pseudonymizer:
    # repr=False keeps the secret out of logs, tracebacks and assertion messages.
    key: bytes = field(repr=False)
    key_id: str

    @classmethod
    def from_settings(cls, settings: PseudonymSettings | None = None) -> Pseudonymizer:
        settings = settings or PseudonymSettings()
        return cls(settings.require_key(), settings.key_id)

    def pseudonym(self, subject_key: str) -> str:
        """Hex HMAC-SHA256 of the subject key."""
        return hmac.new(self.key, subject_key.encode("utf-8"), hashlib.sha256).hexdigest()

    def mac(self, purpose: str, data: bytes) -> str:
        """Hex HMAC-SHA256 of ``data`` under a key derived from this key for ``purpose``.

        The derived key keeps a MAC of one purpose from ever equalling a pseudonym or a MAC
        of another purpose computed with the same secret.
        """
        derived = hmac.new(self.key, f"tombstone/{purpose}".encode(), hashlib.sha256).digest()
        return hmac.new(derived, data, hashlib.sha256).hexdigest()


class KeyRing:
    """Pseudonym keys by key id: the current key, if set, and the retired keys of the ring file."""

    def __init__(self, keys: Mapping[str, bytes], current_id: str | None = None) -> None:
        if current_id is not None and current_id not in keys:
            raise ValueError(f"current key id {current_id!r} is not among the keys")
        self._keys = dict(keys)
        self.current_id = current_id

    @classmethod
    def from_settings(cls, settings: PseudonymSettings | None = None, *, require_current: bool = True) -> KeyRing:
        """Build the ring from ``TOMBSTONE_PSEUDONYM_KEY``, ``_KEY_ID`` and ``_KEYS_FILE``.

        Raises:
            ConfigError: the current key is required and missing, the ring file is invalid
                or accessible to other users, or it lists the current key id with another secret.
        """
        settings = settings or PseudonymSettings()
        keys = load_keys_file(Path(settings.keys_file)) if settings.keys_file else {}
        current_id = None
        if require_current or settings.key is not None:
            current_key = settings.require_key()
            current_id = settings.key_id
            retired = keys.get(current_id)
            if retired is not None and not hmac.compare_digest(retired, current_key):
                raise ConfigError(
                    f"The key ring {settings.keys_file} lists key id {current_id!r} with another "
                    "secret than TOMBSTONE_PSEUDONYM_KEY. Give the new key a new TOMBSTONE_PSEUDONYM_KEY_ID."
                )
            keys[current_id] = current_key
        return cls(keys, current_id)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def current(self) -> Pseudonymizer:
        """The key that signs new records.

        Raises:
            ConfigError: no current key is set.
        """
        if self.current_id is None:
            raise ConfigError(
                "TOMBSTONE_PSEUDONYM_KEY is not set. Set it to the current secret of at least 32 "
                "random characters, with its id in TOMBSTONE_PSEUDONYM_KEY_ID."
            )
        return Pseudonymizer(self._keys[self.current_id], self.current_id)

    def get(self, key_id: str) -> Pseudonymizer | None:
        """Return the key with this id, or None when the ring does not contain it."""
        key = self._keys.get(key_id)
        return None if key is None else Pseudonymizer(key, key_id)

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r}, current_id={self.current_id!r})"


def load_keys_file(path: Path) -> dict[str, bytes]:
    """Read a key ring file of ``KEY_ID = SECRET`` lines. Lines that start with ``#`` are comments.

    Spaces around the key id and the secret are removed. Error messages name the file,
    the line number and the key id, never a secret.

    Raises:
        ConfigError: the file is missing or accessible to other users, or it has an invalid
            line, a short secret or one key id with two secrets.
    """
    _check_keys_file(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the key ring {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The key ring {path} is not UTF-8 text.") from None
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, secret_text = line.partition("=")
        key_id, secret = key_id.strip(), secret_text.strip().encode("utf-8")
        where = f"{path}, line {number}"
        if not sep:
            # The line may be a bare secret, so it is not echoed.
            raise ConfigError(f"{where} is not of the form KEY_ID = SECRET.")
        if not KEY_ID_PATTERN.match(key_id):
            raise ConfigError(
                f"{where}: the key id {key_id[:64]!r} is invalid. Use 1 to 64 letters, digits, "
                "'_', '.', ':' or '-', starting with a letter or digit."
            )
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(f"{where}: the secret of key id {key_id!r} is shorter than {MIN_KEY_BYTES} bytes.")
        if key_id in keys and not hmac.compare_digest(keys[key_id], secret):
            raise ConfigError(f"{where}: key id {key_id!r} is listed again with another secret.")
        keys[key_id] = secret
    return keys


def _check_keys_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"The key ring {path} named by TOMBSTONE_PSEUDONYM_KEYS_FILE does not exist."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the key ring {path}: {exc.strerror}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"The key ring {path} is not a regular file.")
    if os.name == "posix" and info.st_mode & stat.S_IRWXO:
        raise ConfigError(
            f"The key ring {path} has mode {stat.S_IMODE(info.st_mode):04o}, so other users can "
            f"access its secrets. Restrict it with `chmod 600 {path}` (a Kubernetes secret "
            "volume: defaultMode 0400)."
        )
    repository = _git_work_tree(path.resolve().parent)
    if repository is not None:
        logger.warning("The key ring %s is inside the Git work tree %s. Keep secrets out of "
                       "version control: move it outside the repository.", path, repository)


def _git_work_tree(directory: Path) -> Path | None:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None
