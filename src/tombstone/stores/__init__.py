"""Derived stores that apply deletion requests, and ``build_store`` to pick one from a spec."""

from __future__ import annotations

from pathlib import Path

from tombstone.settings import KafkaSettings
from tombstone.spec import (
    ConsumerSpec,
    DuckdbStoreConfig,
    NullStoreConfig,
    ObjectStoreConfig,
    PostgresStoreConfig,
    RedisStoreConfig,
    SearchStoreConfig,
    SqliteStoreConfig,
    TopicStoreConfig,
)
from tombstone.stores.base import Outcome, ReceiptBook, Store
from tombstone.stores.duckdb import DuckdbStore
from tombstone.stores.null import NullStore
from tombstone.stores.objects import ObjectStore
from tombstone.stores.postgres import PostgresStore
from tombstone.stores.redis import RedisStore
from tombstone.stores.search import SearchDocument, SearchStore
from tombstone.stores.sqlite import SqliteStore
from tombstone.stores.topic import TopicStore

__all__ = [
    "DuckdbStore",
    "NullStore",
    "ObjectStore",
    "Outcome",
    "PostgresStore",
    "ReceiptBook",
    "RedisStore",
    "SearchDocument",
    "SearchStore",
    "SqliteStore",
    "Store",
    "TopicStore",
    "build_store",
]


def build_store(spec: ConsumerSpec, kafka: KafkaSettings) -> Store:
    """Create the store that ``spec.store`` describes, without opening it."""
    config = spec.store
    if isinstance(config, SqliteStoreConfig):
        return SqliteStore(spec.name, config)
    if isinstance(config, DuckdbStoreConfig):
        return DuckdbStore(spec.name, config)
    if isinstance(config, SearchStoreConfig):
        return SearchStore(spec.name, config)
    if isinstance(config, ObjectStoreConfig):
        return ObjectStore(spec.name, config)
    if isinstance(config, PostgresStoreConfig):
        return PostgresStore(spec.name, config)
    if isinstance(config, TopicStoreConfig):
        return TopicStore(spec.name, config, kafka, state_dir=Path(spec.state_dir))
    if isinstance(config, RedisStoreConfig):
        return RedisStore(spec.name, config)
    if isinstance(config, NullStoreConfig):
        return NullStore(spec.name, config)
    raise TypeError(f"Store kind {config.kind!r} of spec {spec.name} has no implementation.")
