"""Configuration of the CDC bridge: which change-event topics become which deletion requests.

A bridge file is TOML with a ``[bridge]`` table and one ``[[tables]]`` entry per captured
table::

    [bridge]
    name = "chinook"
    requested_by = "cdc:chinook"

    [[tables]]
    topic = "chinook.public.customer"
    subject_type = "customer"
    data_class = "customer_profile"
    key_columns = ["customer_id"]

``${NAME}`` and ``${NAME:-default}`` are replaced from the environment, as in consumer specs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tombstone.errors import ConfigError, describe_validation_error
from tombstone.inventory import Inventory
from tombstone.models import Code
from tombstone.spec import RetryPolicy, expand_env

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableMapping(_Frozen):
    """One captured table: its change-event topic and the subject its rows belong to."""

    topic: str = Field(min_length=1, max_length=249)
    table: str | None = Field(default=None, description="schema.table in the source, for the checker")
    subject_type: Code
    data_class: Code
    key_columns: list[str] = Field(min_length=1)
    # "primary_key": key columns come from the record key only, because under REPLICA
    # IDENTITY DEFAULT Debezium fills the other columns of a delete's before image with
    # defaults. "full": the table has REPLICA IDENTITY FULL, so the before image is real.
    identity: Literal["primary_key", "full"] = "primary_key"

    @model_validator(mode="after")
    def _columns_are_names(self) -> TableMapping:
        for column in self.key_columns:
            if not _COLUMN.match(column):
                raise ValueError(f"key column {column!r} of topic {self.topic} is not a column name")
        if len(set(self.key_columns)) != len(self.key_columns):
            raise ValueError(f"key_columns of topic {self.topic} lists a column twice")
        return self

    @property
    def source_table(self) -> str:
        """``schema.table``: given, or the last two parts of a Debezium topic name."""
        if self.table:
            return self.table
        parts = self.topic.split(".")
        return ".".join(parts[-2:]) if len(parts) >= 2 else self.topic


class BridgeSettings(_Frozen):
    name: Code
    requested_by: str = Field(default="cdc-bridge", min_length=1, max_length=256)
    reason: Code = "source_deleted"
    group_id: str | None = None
    batch_size: int = Field(default=500, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=1.0, gt=0, le=60)
    # How many offsets before a lone tombstone to search for its delete event after a restart.
    lookback_records: int = Field(default=64, ge=1, le=10_000)
    delivery_timeout_s: float = Field(default=30.0, gt=0, le=600)
    retry: RetryPolicy = RetryPolicy()
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    connector_config: str | None = Field(
        default=None, description="Debezium connector JSON that feeds these topics, for the checker")

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"tombstone.cdc.{self.name}"


class BridgeConfig(_Frozen):
    bridge: BridgeSettings
    tables: list[TableMapping] = Field(min_length=1)

    @model_validator(mode="after")
    def _topics_unique(self) -> BridgeConfig:
        seen: set[str] = set()
        for table in self.tables:
            if table.topic in seen:
                raise ValueError(f"topic {table.topic} is mapped twice; give each topic one [[tables]] entry")
            seen.add(table.topic)
        return self

    @property
    def topics(self) -> list[str]:
        return [table.topic for table in self.tables]

    def table_for(self, topic: str) -> TableMapping | None:
        for table in self.tables:
            if table.topic == topic:
                return table
        return None

    def check_inventory(self, inventory: Inventory) -> None:
        """Reject a mapping to a data class or subject type that no store would prove.

        Raises:
            ConfigError: naming the topic and the inventory's complaint.
        """
        for table in self.tables:
            try:
                inventory.check_request(table.data_class, table.subject_type)
            except Exception as exc:  # InvalidRequestError, reworded for a config file
                raise ConfigError(f"Bridge table {table.topic}: {exc}") from None


def load_bridge_config(path: str | Path) -> BridgeConfig:
    """Read and validate a bridge file.

    Raises:
        ConfigError: the file is missing, is not TOML, or has an invalid or unknown key.
    """
    source = Path(path)
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Bridge config {source} not found.") from None
    except OSError as exc:
        raise ConfigError(f"Bridge config {source} cannot be read: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Bridge config {source} is not valid TOML: {exc}.") from None
    try:
        config = BridgeConfig.model_validate(expand_env(document, source))
    except ValidationError as exc:
        raise ConfigError(f"Bridge config {source} is invalid: {describe_validation_error(exc)}.") from None
    connector = config.bridge.connector_config
    if connector and not Path(connector).is_absolute():
        resolved = (source.parent / connector).resolve()
        config = config.model_copy(
            update={"bridge": config.bridge.model_copy(update={"connector_config": str(resolved)})})
    return config
