"""Principals of the pipeline and the ACLs that let each do its job and nothing else.

The secure broker denies everything that no ACL allows (``allow.everyone.if.no.acl.found=false``).

| principal | may |
|---|---|
| ``requester`` | write the requests topic |
| ``worker-<store>`` | read the requests topic in group ``tombstone.store.<store>``, write proofs and dead letters, read the holds topic |
| ``auditor`` | read the requests and proofs topics |
| ``admin`` | everything (a super user): topics, ACLs, holds, housekeeping, dead letters |
| ``broker`` | everything (a super user): the broker's own inter-broker and controller traffic |

The auditor reads the requests topic as well as the proofs topic because the ledger and
``proof export`` join the two: completeness depends on each request's data class and
cut-off. The requests topic carries raw subject keys, so the auditor sees them too.
Nobody but ``admin`` reads dead letters, which carry raw records.

Workers and the auditor also get DESCRIBE on groups named ``tombstone-reader-...``.
``TopicReader`` (holds, ledger, evidence) assigns partitions and never commits, but
librdkafka still looks up the coordinator of its throwaway group, and Kafka checks DESCRIBE
on the group for that. DESCRIBE does not allow joining a group or committing offsets.

Every producer in tombstone is idempotent. Kafka 4.1 grants InitProducerId to a principal
that may write some topic, so the explicit IDEMPOTENT_WRITE grant on the cluster only
states the intent and keeps working if that rule changes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tombstone.errors import ConfigError
from tombstone.kafka.errors import from_kafka_exception
from tombstone.kafka.reader import READER_GROUP_PREFIX
from tombstone.settings import KafkaSettings

logger = logging.getLogger(__name__)

ADMIN = "admin"
BROKER = "broker"
REQUESTER = "requester"
AUDITOR = "auditor"
WORKER_PREFIX = "worker-"
# Consumer group of a store's worker, as ConsumerSpec.consumer_group names it by default.
STORE_GROUP_PREFIX = "tombstone.store."
SUPER_USERS = (BROKER, ADMIN)

_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def worker_principal(store: str) -> str:
    """SCRAM user name of the worker of ``store``."""
    return f"{WORKER_PREFIX}{store}"


def store_group(store: str) -> str:
    """Consumer group that the worker of ``store`` may use."""
    return f"{STORE_GROUP_PREFIX}{store}"


def check_store_names(stores: list[str]) -> list[str]:
    """Return the store names sorted and without duplicates.

    Raises:
        ConfigError: a name is empty, longer than 100 characters, or contains a character
            other than a letter, digit, ``.``, ``_`` or ``-``. The StorageTool argument
            ``SCRAM-SHA-512=[name=...,password=...]`` cannot quote commas or brackets.
    """
    for store in stores:
        if not _STORE_NAME.match(store):
            raise ConfigError(
                f"Invalid store name {store!r}: use 1 to 100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit."
            )
    return sorted(set(stores))


def principal_names(stores: list[str]) -> list[str]:
    """Return every SCRAM user name of the secure broker: super users first, then the pipeline's roles."""
    return [*SUPER_USERS, REQUESTER, AUDITOR, *(worker_principal(s) for s in check_store_names(stores))]


@dataclass(frozen=True)
class Grant:
    """One ALLOW rule: ``operation`` on a resource for the principal ``User:<principal>``."""

    principal: str
    operation: AclOperation
    resource_type: ResourceType
    resource_name: str
    pattern: ResourcePatternType = ResourcePatternType.LITERAL

    def binding(self) -> AclBinding:
        return AclBinding(self.resource_type, self.resource_name, self.pattern, f"User:{self.principal}",
                          "*", self.operation, AclPermissionType.ALLOW)

    def describe(self) -> str:
        pattern = " (prefix)" if self.pattern is ResourcePatternType.PREFIXED else ""
        return (f"User:{self.principal} {self.operation.name} on "
                f"{self.resource_type.name.lower()} {self.resource_name}{pattern}")


def _topic(principal: str, operation: AclOperation, topic: str) -> Grant:
    return Grant(principal, operation, ResourceType.TOPIC, topic)


def _idempotent_write(principal: str) -> Grant:
    return Grant(principal, AclOperation.IDEMPOTENT_WRITE, ResourceType.BROKER, "kafka-cluster")


def _reader_groups(principal: str) -> Grant:
    return Grant(principal, AclOperation.DESCRIBE, ResourceType.GROUP, READER_GROUP_PREFIX,
                 ResourcePatternType.PREFIXED)


def pipeline_grants(settings: KafkaSettings, stores: list[str]) -> list[Grant]:
    """ALLOW rules for the requester, one worker per store and the auditor.

    Topic names come from ``settings``, so that prefixed test topics get the same rules.
    READ and WRITE imply DESCRIBE, which metadata and offset look-ups need.
    """
    read, write = AclOperation.READ, AclOperation.WRITE
    grants = [
        _topic(REQUESTER, write, settings.requests_topic),
        _idempotent_write(REQUESTER),
        _topic(AUDITOR, read, settings.requests_topic),
        _topic(AUDITOR, read, settings.proofs_topic),
        _reader_groups(AUDITOR),
    ]
    for store in check_store_names(stores):
        worker = worker_principal(store)
        grants += [
            _topic(worker, read, settings.requests_topic),
            Grant(worker, read, ResourceType.GROUP, store_group(store)),
            _topic(worker, write, settings.proofs_topic),
            _topic(worker, write, settings.dead_letter_topic),
            _topic(worker, read, settings.holds_topic),
            _reader_groups(worker),
            _idempotent_write(worker),
        ]
    return grants


def apply_grants(admin: AdminClient, grants: list[Grant], timeout_s: float = 30.0) -> None:
    """Create the ACLs of ``grants``; creating an ACL that exists already is harmless.

    Raises:
        KafkaClientError: the broker rejected the request, for example because the
            admin client's principal is not a super user.
    """
    by_binding = {grant.binding(): grant for grant in grants}
    futures = admin.create_acls(list(by_binding), request_timeout=timeout_s)
    for binding, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise from_kafka_exception(exc, f"creating the ACL {by_binding[binding].describe()}") from exc
    logger.info("Created %d ACLs", len(grants))


def list_grants(admin: AdminClient, timeout_s: float = 30.0) -> list[AclBinding]:
    """Return every ACL that the broker stores."""
    match_all = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                 AclOperation.ANY, AclPermissionType.ANY)
    try:
        return list(admin.describe_acls(match_all, request_timeout=timeout_s).result())
    except KafkaException as exc:
        raise from_kafka_exception(exc, "listing ACLs") from exc
