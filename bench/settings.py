"""Sizes, rounds and connection settings of one benchmark run, read from the environment.

``BENCH_SCALE`` multiplies every event count (default 1, and 2 gives 200,000 records
per produce phase), and the run time about as much. ``BENCH_ROUNDS`` is the number of
measured rounds after the warm-up round (default 5).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number; set it to, for example, 0.5 or 2.") from None
    if parsed <= 0:
        raise SystemExit(f"{name}={value!r} must be greater than 0.")
    return parsed


@dataclass(frozen=True)
class Sizes:
    """Event counts per measurement at scale 1."""

    produce: int = 100_000  # B1, B2: records per produce phase
    consume: int = 20_000  # B3, B6: records on the requests topic that every round reads
    store_worker: int = 8_000  # B4, B9 isolated: requests per store worker run
    sink_batched: int = 8_000  # B5: requests deleted through store.apply
    sink_per_row: int = 400  # B5: requests deleted through store.apply, one request per call
    codec: int = 20_000  # B7: records per encode or decode loop
    # B8: requests per second, a fixed light load (BENCH_LATENCY_RATE overrides it). On the
    # 2-core machine of docs/benchmarks.md, B9 measured 550 to 1,750 requests/s.
    latency_rate: int = 100
    latency_seconds: float = 8.0  # B8: seconds of requests per phase
    fanout: int = 5_000  # B9: requests in the burst through all stores and the ledger
    ledger_requests: int = 4_000  # B10: requests; each has one ack per store below
    ledger_stores: int = 5  # B10: acks per request
    per_message_commits: int = 500  # B6 report: records consumed with one commit each

    def scaled(self, scale: float) -> Sizes:
        counts = {name: max(50, int(value * scale)) for name, value in asdict(self).items()
                  if isinstance(value, int) and name not in ("latency_rate", "ledger_stores")}
        seconds = max(1.0, self.latency_seconds * min(scale, 4.0))
        return Sizes(**{**asdict(self), **counts, "latency_seconds": seconds})


@dataclass(frozen=True)
class BenchSettings:
    scale: float = 1.0
    rounds: int = 5
    batch_size: int = 500  # worker consume batch, as in the consumer specs' default
    sizes: Sizes = field(default_factory=Sizes)
    postgres_dsn: dict[str, object] = field(default_factory=dict)
    redis_url: str = "redis://127.0.0.1:56379/0"
    stores: tuple[str, ...] = ("null", "sqlite", "duckdb", "postgresql", "redis", "search")

    @classmethod
    def from_env(cls) -> BenchSettings:
        scale = _env_float("BENCH_SCALE", 1.0)
        rounds = int(_env_float("BENCH_ROUNDS", 5))
        postgres = {
            "host": os.environ.get("TOMBSTONE_PG_HOST", "127.0.0.1"),
            "port": int(os.environ.get("TOMBSTONE_PG_PORT", "55432")),
            "dbname": os.environ.get("TOMBSTONE_PG_DBNAME", "tombstone"),
            "user": os.environ.get("TOMBSTONE_PG_USER", "tombstone"),
            "password": os.environ.get("TOMBSTONE_PG_PASSWORD", "tombstone"),
        }
        stores = tuple(s for s in os.environ.get("BENCH_STORES", ",".join(cls.stores)).split(",") if s)
        sizes = replace(Sizes().scaled(scale), latency_rate=int(_env_float("BENCH_LATENCY_RATE", 100)))
        return cls(scale=scale, rounds=max(1, rounds), sizes=sizes, postgres_dsn=postgres,
                   redis_url=os.environ.get("TOMBSTONE_REDIS_URL", "redis://127.0.0.1:56379/0"),
                   stores=stores)

    @property
    def fanout_stores(self) -> tuple[str, ...]:
        """The real stores of B8 and B9: every selected store except the null store."""
        return tuple(s for s in self.stores if s != "null")
