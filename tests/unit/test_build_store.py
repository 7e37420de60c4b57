"""build_store picks the store class from the spec's store kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tombstone.settings import KafkaSettings
from tombstone.spec import ConsumerSpec
from tombstone.stores import (
    DuckdbStore,
    NullStore,
    ObjectStore,
    SearchStore,
    SqliteStore,
    TopicStore,
    build_store,
)

TABLES = [{"table": "customer", "data_class": "customer_profile", "subject_type": "customer",
           "subject_column": "customer_id"}]


@pytest.mark.parametrize("store, expected", [
    ({"kind": "sqlite", "path": "db.sqlite", "tables": TABLES}, SqliteStore),
    ({"kind": "duckdb", "path": "db.duckdb", "tables": TABLES}, DuckdbStore),
    ({"kind": "search", "path": "index"}, SearchStore),
    ({"kind": "objects", "root": "exports"}, ObjectStore),
    ({"kind": "topic", "topic": "customer.profiles", "data_class": "customer_profile"}, TopicStore),
    ({"kind": "null"}, NullStore),
])
def test_build_store_by_kind(store: dict[str, Any], expected: type, tmp_path: Path) -> None:
    spec = ConsumerSpec(name="s", data_classes=["customer_profile"], state_dir=str(tmp_path), store=store)

    built = build_store(spec, KafkaSettings())

    assert type(built) is expected
    assert built.name == "s"


def test_build_store_topic_receipts_in_state_dir(tmp_path: Path) -> None:
    spec = ConsumerSpec(name="profiles-topic", data_classes=["customer_profile"], state_dir=str(tmp_path),
                        store={"kind": "topic", "topic": "customer.profiles", "data_class": "customer_profile"})

    built = build_store(spec, KafkaSettings())

    assert isinstance(built, TopicStore)
    assert built.receipts.path == tmp_path / "profiles-topic.receipts.sqlite"
