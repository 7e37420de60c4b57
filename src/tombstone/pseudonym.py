"""Keyed pseudonyms of subject keys for proof records.

An unkeyed hash of a low-entropy id (a customer number) is reversed by enumerating the id
space, so proofs carry HMAC-SHA256 under a secret key, with the key's id so that old
proofs stay verifiable after the key is rotated.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from tombstone.settings import PseudonymSettings


@dataclass(frozen=True)
class Pseudonymizer:
    key: bytes
    key_id: str

    @classmethod
    def from_settings(cls, settings: PseudonymSettings | None = None) -> Pseudonymizer:
        settings = settings or PseudonymSettings()
        return cls(settings.require_key(), settings.key_id)

    def pseudonym(self, subject_key: str) -> str:
        """Hex HMAC-SHA256 of the subject key."""
        return hmac.new(self.key, subject_key.encode("utf-8"), hashlib.sha256).hexdigest()
