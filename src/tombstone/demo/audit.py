"""Scan stores on their own after a demo run, judging what is left against the policy.

A store's worker never takes part. Per deleted subject and data class, the policy decides
what may stay: nothing after ``delete`` and ``hide`` (hidden bytes count until purged),
rows without the named fields after ``anonymize``, everything after ``retain``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tombstone.inventory import Inventory, StoreAction
from tombstone.models import DeletionRequest, parse_subject_key, utc_now
from tombstone.stores.base import Store


@dataclass
class Audit:
    remaining: int = 0  # items the policy wants gone, or fields it wants cleared
    kept: int = 0  # items the policy keeps: anonymized or retained


def _audit_request(subject: str, data_class: str) -> DeletionRequest:
    subject_type, subject_id = parse_subject_key(subject)
    now = utc_now()
    return DeletionRequest(subject_type=subject_type, subject_id=subject_id, data_class=data_class,
                           reason="audit", requested_by="demo-audit", requested_at=now, cutoff_at=now)


def audit_store(store: Store, inventory: Inventory, subjects: Iterable[str], data_classes: Iterable[str]) -> Audit:
    """Open ``store``, scan the subjects' data of each class, close it."""
    audit = Audit()
    subjects = list(subjects)
    with store:
        for data_class in data_classes:
            entry = inventory.policy(data_class, store.name)
            if entry is None:
                continue
            for subject in subjects:
                present = store.scan_subject(subject, data_class)
                if entry.action in (StoreAction.DELETE, StoreAction.HIDE):
                    audit.remaining += present
                    continue
                audit.kept += present
                if entry.action is StoreAction.ANONYMIZE:
                    request = _audit_request(subject, data_class)
                    audit.remaining += store.count_identifying([request], entry.fields)[request.request_id]
    return audit
