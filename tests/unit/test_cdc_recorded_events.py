"""The bridge on change events recorded from a real Debezium 3.6.1 connector.

The files in tests/fixtures/debezium/ come from tests/integration/test_connect_debezium.py,
which checks that the running connector still produces records of the same shape.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_cdc_bridge import Message, make_bridge, requests_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"


def recorded(name: str) -> tuple[dict[str, Any], list[Message]]:
    document = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    messages = [
        Message(offset, None if r["key"] is None else r["key"].encode(),
                None if r["value"] is None else r["value"].encode(),
                [(k, v.encode()) for k, v in (r.get("headers") or {}).items()])
        for offset, r in enumerate(document["records"])
    ]
    return document, messages


@pytest.mark.parametrize("name", ["customer-delete.json", "customer-delete-schemas.json"])
def test_recorded_delete_and_tombstone_make_one_request(name: str) -> None:
    document, messages = recorded(name)
    bridge, consumer, producer = make_bridge()
    bridge.process(messages)
    [request] = requests_of(producer)
    value = json.loads(document["records"][0]["value"])
    source = (value.get("payload") or value)["source"]
    before = (value.get("payload") or value)["before"]
    assert request.subject_key == f"customer:{before['customer_id']}"
    assert request.cutoff_at == datetime.fromtimestamp(source["ts_ms"] / 1000, UTC)
    assert request.cutoff_version == source["lsn"]
    assert consumer.commits[-1][0][2] == len(messages)


def test_recorded_primary_key_change_makes_no_request() -> None:
    _, messages = recorded("customer-key-change.json")
    bridge, consumer, producer = make_bridge()
    bridge.process(messages)
    assert requests_of(producer) == []
    assert consumer.commits[-1][0][2] == len(messages)


def test_recorded_key_change_tombstone_read_first_is_skipped() -> None:
    # Its new-key header marks it, so no lookback is needed.
    _, messages = recorded("customer-key-change.json")
    bridge, _, producer = make_bridge()
    bridge.process([messages[1]])
    assert requests_of(producer) == []
    assert bridge._lookback.calls == []
