"""Redis cache store: per-subject indexes, deletes by cut-off in one MULTI/EXEC per batch.

Layout, with the default ``index_prefix`` of ``tombstone:index``::

    tombstone:index:<data_class>:{<subject_key>}   sorted set: member = cache key,
                                                   score = time of its last write, epoch ms
    tombstone:index:receipts:<store>               hash: request id -> "STATUS:count"

Applications write through ``RedisStore.put``, which sets the value and adds it to its
subject's index in one transaction. ``apply`` reads the index and never runs KEYS or SCAN
over the keyspace, so a key written without ``put`` is invisible to the store: it is neither
deleted nor counted.

Hash tags: the subject key in braces is the index's Redis Cluster hash tag. An application
that writes a subject's keys with the same tag, such as ``profile:{customer:17}``, keeps them
in the index's slot. The store does not require it, because it talks to one server: a batch's
transaction spans many subjects and the receipts hash, so Redis Cluster is not supported.

Races: ``apply`` WATCHes the batch's index keys before it reads them. ``put`` changes the
value and the index in one MULTI/EXEC, so a ``put`` for any of the batch's subjects that
lands between the read and the delete aborts the EXEC. The store then reads again, and a
key re-written after the cut-off survives with its new index entry. The candidate keys are
WATCHed too, so an expiry or eviction before the EXEC aborts it and the counts in the
receipts stay exact. WATCH was chosen over a Lua script because a script that deletes keys
it read from an index accesses keys not declared in KEYS, which Redis scripting forbids.

Requires Redis 6.2 or later for ZMSCORE. Tested with Redis 7.0.15.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tombstone.errors import ConfigError, PermanentRecordError, StoreError, StoreUnavailableError
from tombstone.models import AckStatus, DeletionRequest, parse_subject_key
from tombstone.spec import RedisStoreConfig
from tombstone.stores.base import Outcome, Store, cutoff_ms

logger = logging.getLogger(__name__)

# Transient errors. BusyLoadingError (the server is loading its data) and AuthenticationError
# are subclasses of ConnectionError; ReadOnlyError comes from a replica that is not yet promoted.
_UNAVAILABLE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError,
                       redis.exceptions.OutOfMemoryError)
# A put() on a subject of the batch aborts the EXEC. After this many aborts apply() raises
# StoreUnavailableError, and the worker retries the batch with its backoff.
_WATCH_ATTEMPTS = 5

HashValue = bytes | str | int | float


@dataclass
class _Plan:
    """Candidates and receipts that one attempt of ``apply`` read, by request id."""

    # Keys that the request's index lists at or before its cut-off.
    candidates: dict[str, list[bytes]] = field(default_factory=dict)
    # The candidates that no earlier request of the batch listed, so each key counts once.
    claimed: dict[str, list[bytes]] = field(default_factory=dict)
    receipts: dict[str, Outcome] = field(default_factory=dict)


class RedisStore(Store):
    kind = "redis"

    def __init__(self, name: str, config: RedisStoreConfig, *,
                 client_factory: Callable[..., redis.Redis] = redis.Redis.from_url) -> None:
        super().__init__(name)
        self.config = config
        self.receipts_key = f"{config.index_prefix}:receipts:{name}"
        self._client_factory = client_factory
        self._client: redis.Redis | None = None
        # Keys that the last apply() removed, by request id, for count_remaining().
        self._unlinked: dict[str, list[bytes]] = {}

    def open(self) -> None:
        """Create the client and PING the server."""
        url = self.config.url
        # An empty password is unset, as "${TOMBSTONE_REDIS_PASSWORD:-}" expands to one.
        password = self.config.password.get_secret_value() if self.config.password is not None else ""
        if password and urlsplit(url).password:
            raise ConfigError(f"Redis store {self.name}: the url {_masked(url)} contains a password "
                              "and the password setting is set too. Set the password in one place.")
        client = self._client_factory(
            url,
            password=password or None,
            socket_timeout=self.config.socket_timeout_s,
            socket_connect_timeout=self.config.socket_timeout_s,
            health_check_interval=self.config.health_check_interval_s,
            # One immediate retry replaces a connection that the server closed while it was
            # idle. Longer outages go to the worker, which retries with backoff.
            retry=Retry(NoBackoff(), 1),
            client_name=f"tombstone-{self.name}",
        )
        try:
            with self._errors("connect"):
                client.ping()
        except StoreError:
            # The worker calls open() again after a backoff, with a new client.
            client.close()
            raise
        self._client = client
        logger.info("Redis store %s connected to %s, index prefix %s, data classes %s",
                    self.name, _masked(url), self.config.index_prefix, ",".join(self.config.data_classes))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._client

    def index_key(self, subject_key: str, data_class: str) -> str:
        """Name of the sorted set that indexes one subject's keys of one data class."""
        return f"{self.config.index_prefix}:{data_class}:{{{subject_key}}}"

    def put(self, subject_key: str, data_class: str, key: str, value: bytes | Mapping[str, HashValue],
            written_at_ms: int | None = None) -> int:
        """Write a cache value and add it to its subject's index in one MULTI/EXEC.

        ``value`` is stored as a string, or as a hash when it is a mapping (which replaces
        every field of an existing hash). ``written_at_ms`` is the index score that
        deletions compare with their cut-off; it defaults to now. Returns that score.

        NOTE: a key belongs to one subject and data class. Writing it under another subject
        leaves the old index entry, so a deletion for the old subject removes the value.

        Raises:
            InvalidRequestError: the subject key is malformed.
            ValueError, TypeError: an invalid data class, key, value or time.
            StoreUnavailableError: Redis is unreachable, read-only or out of memory.
        """
        parse_subject_key(subject_key)
        self._check_put(data_class, key, value)
        if written_at_ms is None:
            written_at_ms = time.time_ns() // 1_000_000
        elif not isinstance(written_at_ms, int) or isinstance(written_at_ms, bool):
            raise TypeError(f"written_at_ms must be epoch milliseconds as an int, not {written_at_ms!r}.")

        with self._errors("write a value"), self.client.pipeline(transaction=True) as tx:
            if isinstance(value, bytes):
                tx.set(key, value)
            else:
                tx.unlink(key)
                tx.hset(key, mapping=dict(value))
            tx.zadd(self.index_key(subject_key, data_class), {key: written_at_ms})
            tx.execute()
        return written_at_ms

    def _check_put(self, data_class: str, key: str, value: object) -> None:
        if data_class not in self.config.data_classes:
            raise ValueError(f"Data class {data_class!r} is not one of the store's data classes "
                             f"({', '.join(self.config.data_classes)}); add it to store.data_classes.")
        if not isinstance(key, str) or not key:
            raise ValueError(f"Cache key {key!r} is invalid: give a non-empty str.")
        if key.startswith(f"{self.config.index_prefix}:"):
            raise ValueError(f"Cache key {key!r} starts with the index prefix "
                             f"{self.config.index_prefix!r}; use another key name.")
        if isinstance(value, Mapping):
            if not value:
                raise ValueError("A hash value needs at least one field, because Redis stores no empty hash.")
            for name, item in value.items():
                if not isinstance(name, str) or not isinstance(item, HashValue) or isinstance(item, bool):
                    raise TypeError(f"Hash field {name!r} is invalid: names are str, values bytes, "
                                    "str, int or float.")
        elif not isinstance(value, bytes):
            raise TypeError(f"A cache value is bytes or a mapping, not {type(value).__name__}.")

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete each request's keys at or before its cut-off, with receipts, per batch.

        Steps of one attempt: WATCH the indexes, read candidates and receipts, WATCH the
        candidates and count those that exist, then UNLINK, ZREM and HSETNX the receipts in
        one MULTI/EXEC. An aborted EXEC starts a new attempt. A request with a receipt has
        its delete run again, but reports the receipt.

        NOTE: the index range is not paged, so a subject with very many keys makes one large
        transaction that blocks the server while it runs.
        """
        unique = list({r.request_id: r for r in requests}.values())
        if not unique:
            return {}
        with self._errors("apply deletions"):
            for attempt in range(1, _WATCH_ATTEMPTS + 1):
                try:
                    return self._apply_once(unique)
                except redis.WatchError as exc:
                    # redis-py also raises WatchError when the connection fails while keys are
                    # WATCHed. That is an outage, not a concurrent write.
                    cause = exc.__context__
                    if isinstance(cause, _UNAVAILABLE_ERRORS):
                        raise cause from None
                    logger.info("Redis store %s: indexed keys changed during attempt %d of %d to apply "
                                "%d requests, so the store reads them again", self.name, attempt,
                                _WATCH_ATTEMPTS, len(unique))
        raise StoreUnavailableError(
            f"Redis store {self.name}: indexed keys changed during each of {_WATCH_ATTEMPTS} attempts "
            f"to apply {len(unique)} requests, so nothing was deleted. The worker retries the batch."
        )

    def _apply_once(self, requests: list[DeletionRequest]) -> dict[str, Outcome]:
        index_keys = {self.index_key(r.subject_key, r.data_class) for r in requests}
        with self.client.pipeline(transaction=True) as tx:
            # Step 1. WATCH on this connection: from here on, a put() of these subjects aborts the EXEC.
            tx.watch(*index_keys)

            # Step 2. Read on another connection. The read runs after the WATCH, so its result
            # includes every put() that the WATCH does not cover.
            plan = self._read(requests)

            # Step 3. A WATCHed key that expires or is evicted aborts the EXEC too (checked with
            # Redis 7.0), so these counts stay true until the delete.
            listed = {key for keys in plan.candidates.values() for key in keys}
            if listed:
                tx.watch(*listed)
            existing = self._count_existing(plan.claimed)
            outcomes = {r.request_id: plan.receipts.get(r.request_id) or Outcome.from_count(existing[r.request_id])
                        for r in requests}

            # Step 4. Delete the keys, remove them from the index and record first outcomes.
            tx.multi()
            for request in requests:
                keys = plan.candidates[request.request_id]
                if keys:
                    tx.unlink(*keys)
                    tx.zrem(self.index_key(request.subject_key, request.data_class), *keys)
                outcome = outcomes[request.request_id]
                if not outcome.replayed:
                    tx.hsetnx(self.receipts_key, request.request_id,
                              f"{outcome.status.value}:{outcome.items_affected}")
            tx.execute()
        self._unlinked = plan.candidates
        logger.debug("Redis store %s applied %d requests, %d keys unlinked",
                     self.name, len(requests), sum(existing.values()))
        return outcomes

    def _read(self, requests: list[DeletionRequest]) -> _Plan:
        with self.client.pipeline(transaction=False) as pipe:
            for request in requests:
                pipe.zrangebyscore(self.index_key(request.subject_key, request.data_class),
                                   "-inf", cutoff_ms(request))
            pipe.hmget(self.receipts_key, [r.request_id for r in requests])
            *ranges, stored = pipe.execute(raise_on_error=False)
        if isinstance(stored, Exception):
            raise stored

        plan = _Plan()
        seen: set[bytes] = set()
        for request, listed in zip(requests, ranges, strict=True):
            if isinstance(listed, Exception):
                raise self._index_error(request, listed)
            plan.candidates[request.request_id] = listed
            plan.claimed[request.request_id] = [key for key in listed if key not in seen]
            seen.update(listed)
        for request, receipt in zip(requests, stored, strict=True):
            if receipt is not None:
                plan.receipts[request.request_id] = self._parse_receipt(request.request_id, receipt)
        return plan

    def _index_error(self, request: DeletionRequest, error: Exception) -> Exception:
        if isinstance(error, redis.ResponseError) and str(error).startswith("WRONGTYPE"):
            # The message leaves out the key, because it contains the subject key.
            return PermanentRecordError(
                "redis_index_wrong_type",
                f"Redis store {self.name}: the index of request {request.request_id} (data class "
                f"{request.data_class}) is not a sorted set. Remove or rename that key under the "
                f"index prefix {self.config.index_prefix!r}, then replay the request.",
                request_id=request.request_id,
            )
        return error

    def _parse_receipt(self, request_id: str, receipt: bytes) -> Outcome:
        status, _, count = receipt.decode("utf-8", "replace").partition(":")
        try:
            return Outcome(AckStatus(status), int(count), replayed=True)
        except ValueError:
            raise StoreError(
                f"Redis store {self.name}: the receipt of request {request_id} in {self.receipts_key} "
                f"is {receipt!r}, not STATUS:count. Delete that hash field to apply the request again."
            ) from None

    def _count_existing(self, claimed: dict[str, list[bytes]]) -> dict[str, int]:
        counts = dict.fromkeys(claimed, 0)
        with_keys = [request_id for request_id, keys in claimed.items() if keys]
        if not with_keys:
            return counts
        with self.client.pipeline(transaction=False) as pipe:
            for request_id in with_keys:
                pipe.exists(*claimed[request_id])
            counts.update(zip(with_keys, pipe.execute(), strict=True))
        return counts

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        """Count index entries at or before each cut-off, plus keys of the last apply still present.

        A key that the last apply() removed counts when it exists again without an index
        entry, so it was written without ``put``. A key that ``put`` wrote again after the
        cut-off is legitimate new data and does not count. All reads run in one MULTI/EXEC,
        so they see one state of the server.
        """
        unique = list({r.request_id: r for r in requests}.values())
        with self._errors("count remaining items"), self.client.pipeline(transaction=True) as tx:
            for request in unique:
                index = self.index_key(request.subject_key, request.data_class)
                tx.zcount(index, "-inf", cutoff_ms(request))
                unlinked = self._unlinked.get(request.request_id, [])
                if unlinked:
                    tx.zmscore(index, unlinked)
                    for key in unlinked:
                        tx.exists(key)
            results = iter(tx.execute())
        return {request.request_id: self._remaining(request, results) for request in unique}

    def _remaining(self, request: DeletionRequest, results: Iterator[Any]) -> int:
        """Read one request's results of count_remaining, in the order they were queued."""
        remaining = int(next(results))
        unlinked = self._unlinked.get(request.request_id, [])
        if unlinked:
            scores = next(results)
            for score in scores:
                exists = next(results)
                if exists and score is None:
                    remaining += 1
        return remaining

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        """Count the entries of the subject's indexes across the store's data classes.

        An entry whose key has expired still counts, because the entry itself names one of
        the subject's keys. The next apply() removes it.
        """
        with self._errors("scan a subject"), self.client.pipeline(transaction=True) as tx:
            for name in self.config.data_classes:
                if data_class is None or name == data_class:
                    tx.zcard(self.index_key(subject_key, name))
            return sum(tx.execute())

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate redis-py errors. The connection pool reconnects on the next call."""
        try:
            yield
        except redis.AuthenticationError as exc:
            raise StoreUnavailableError(
                f"Redis store {self.name} failed to {action}: authentication failed ({exc}). "
                "Check store.password or the user in store.url."
            ) from exc
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailableError(f"Redis store {self.name} failed to {action}: {exc}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"Redis store {self.name} failed to {action}: {exc}") from exc


def _masked(url: str) -> str:
    """Return the URL with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
