"""Hand-made Debezium change events, shaped like the JsonConverter output of a real connector."""

from __future__ import annotations

import json
from typing import Any

TOPIC = "chinook.public.customer"
SOURCE_TS_MS = 1_764_000_000_123  # 2025-11-24T16:00:00.123Z
LSN = 26_738_144


def _schema_envelope(payload: Any) -> dict[str, Any]:
    # The schema part is not read by the bridge; a plausible minimal one is enough.
    return {"schema": {"type": "struct", "optional": False, "fields": []}, "payload": payload}


def key(customer_id: Any, schemas: bool = False) -> bytes:
    payload = {"customer_id": customer_id}
    return json.dumps(_schema_envelope(payload) if schemas else payload).encode()


def row(customer_id: Any, **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "first_name": "Luís", "last_name": "Gonçalves",
            "email": "luisg@embraer.com.br", **extra}


def envelope(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, *,
             ts_ms: int | None = SOURCE_TS_MS, lsn: int | None = LSN, tx_id: int = 771,
             schemas: bool = False) -> bytes:
    source = {"version": "3.6.1.Final", "connector": "postgresql", "name": "chinook", "db": "chinook",
              "schema": "public", "table": "customer", "txId": tx_id, "lsn": lsn, "ts_ms": ts_ms,
              "snapshot": "false"}
    payload = {"before": before, "after": after, "source": source, "op": op,
               "ts_ms": (ts_ms or 0) + 40, "transaction": None}
    return json.dumps(_schema_envelope(payload) if schemas else payload).encode()


def delete(customer_id: Any, **kwargs: Any) -> bytes:
    return envelope("d", row(customer_id), None, **kwargs)


def flattened(customer_id: Any, deleted: bool, **fields: Any) -> bytes:
    return json.dumps({**row(customer_id), "__deleted": "true" if deleted else "false", **fields}).encode()
