"""Consumer specs: one TOML file per derived store under ``consumers/``.

String values may reference environment variables as ``${NAME}`` or ``${NAME:-default}``,
so paths and secrets stay out of the file. Unknown keys are rejected by name.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from tombstone.errors import ConfigError, describe_validation_error
from tombstone.models import Code

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    """Backoff for a failing store: exponential with jitter, bounded per wait."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    jitter_s: float = Field(default=0.5, ge=0)
    # 0 retries until the store recovers or the worker is stopped: a failing store has no
    # terminal status, its lag alerts instead.
    max_attempts: int = Field(default=0, ge=0)


class TableMapping(_Frozen):
    """Where a relational store keeps one data class of one subject type."""

    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    data_class: Code
    subject_type: Code
    subject_column: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    subject_id_type: Literal["text", "integer"] = "text"
    updated_at_column: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "updated_at_ms"


class SqliteStoreConfig(_Frozen):
    kind: Literal["sqlite"]
    path: str
    tables: list[TableMapping] = Field(min_length=1)
    busy_timeout_s: float = Field(default=30.0, gt=0)


class DuckdbStoreConfig(_Frozen):
    kind: Literal["duckdb"]
    path: str
    tables: list[TableMapping] = Field(min_length=1)


class SearchStoreConfig(_Frozen):
    kind: Literal["search"]
    path: str
    writer_heap_mb: int = Field(default=64, ge=16)


class ObjectStoreConfig(_Frozen):
    kind: Literal["objects"]
    root: str


class TopicStoreConfig(_Frozen):
    kind: Literal["topic"]
    topic: str
    data_class: Code
    refresh_timeout_s: float = Field(default=30.0, gt=0)


class PostgresStoreConfig(_Frozen):
    """A PostgreSQL database; the password comes from the environment, never the file."""

    kind: Literal["postgresql"]
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str
    user: str
    password: SecretStr | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    statement_timeout_s: float = Field(default=30.0, gt=0)
    tables: list[TableMapping] = Field(min_length=1)


class RedisStoreConfig(_Frozen):
    """A Redis cache whose keys per subject are found through an index the store maintains."""

    kind: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    # No braces: the first "{...}" in a key is its Redis Cluster hash tag, and the store
    # uses the subject key as the index's tag.
    index_prefix: str = Field(default="tombstone:index", min_length=1, pattern=r"^[^{}]+$")
    socket_timeout_s: float = Field(default=5.0, gt=0)
    # A connection idle for longer is checked with PING before its next command.
    health_check_interval_s: float = Field(default=15.0, ge=0)
    data_classes: list[Code] = Field(min_length=1)


class NullStoreConfig(_Frozen):
    """A store that contains nothing, for benchmarks and pipeline tests."""

    kind: Literal["null"]


StoreConfig = Annotated[
    SqliteStoreConfig | DuckdbStoreConfig | SearchStoreConfig | ObjectStoreConfig
    | TopicStoreConfig | PostgresStoreConfig | RedisStoreConfig | NullStoreConfig,
    Field(discriminator="kind"),
]


class ConsumerSpec(_Frozen):
    """Everything one store's worker needs besides the shared Kafka settings."""

    name: Code = Field(description="Store name, as in the inventory and on proofs.")
    data_classes: list[Code] = Field(min_length=1)
    group_id: str | None = None
    batch_size: int = Field(default=500, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=1.0, gt=0)
    ack_timeout_s: float = Field(default=30.0, gt=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = Field(default="0.0.0.0", description="Address the metrics server binds.")
    state_dir: str = Field(
        default_factory=lambda: os.path.join(os.environ.get("TOMBSTONE_DATA_DIR", "var"), "state"),
        description="Worker-local state such as receipt books of stores without transactions.")
    retry: RetryPolicy = RetryPolicy()
    store: StoreConfig

    @model_validator(mode="after")
    def _data_classes_match_store(self) -> ConsumerSpec:
        """Reject a data class that the store cannot find, or a mapping the worker would skip.

        A worker skips requests of data classes outside ``data_classes`` and commits past
        them, so a typo on either side would lose deletions silently.
        """
        declared = set(self.data_classes)
        store = self.store
        mapped: set[str] | None = None
        if isinstance(store, SqliteStoreConfig | DuckdbStoreConfig | PostgresStoreConfig):
            mapped = {mapping.data_class for mapping in store.tables}
        elif isinstance(store, TopicStoreConfig):
            mapped = {store.data_class}
        elif isinstance(store, RedisStoreConfig):
            mapped = set(store.data_classes)
        if mapped is None:
            return self
        for name in sorted(declared - mapped):
            raise ValueError(f"data class {name!r} is in data_classes but the store maps no table or key to it")
        for name in sorted(mapped - declared):
            raise ValueError(f"the store maps data class {name!r}, which data_classes does not list")
        return self

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"tombstone.store.{self.name}"


def expand_env(value: Any, source: Path) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of a parsed document."""
    if isinstance(value, dict):
        return {key: expand_env(item, source) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, source) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        configured = os.environ.get(name)
        # As in POSIX shells, ":-" also replaces an empty value, so an exported but empty
        # TOMBSTONE_DATA_DIR cannot turn "${TOMBSTONE_DATA_DIR:-var}/exports" into "/exports".
        if default is not None and not configured:
            return default
        if configured is not None:
            return configured
        raise ConfigError(
            f"{source} references ${{{name}}}, but the environment variable {name} is not set. "
            f"Set it, or write ${{{name}:-default}} in the file."
        )

    return _ENV_REFERENCE.sub(replace, value)


def load_spec(path: str | Path) -> ConsumerSpec:
    """Read and validate a consumer spec.

    Raises:
        ConfigError: the file is missing, is not TOML, or has an invalid or unknown key.
    """
    source = Path(path)
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Consumer spec {source} not found.") from None
    except OSError as exc:
        raise ConfigError(f"Consumer spec {source} cannot be read: {exc.strerror}. Give a .toml file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Consumer spec {source} is not valid TOML: {exc}.") from None
    try:
        return ConsumerSpec.model_validate(expand_env(document, source))
    except ValidationError as exc:
        raise ConfigError(f"Consumer spec {source} is invalid: {describe_validation_error(exc)}.") from None
