"""The data inventory: which stores hold each data class, and what each does on deletion."""

from __future__ import annotations

import enum
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tombstone.errors import ConfigError, InvalidRequestError, describe_validation_error
from tombstone.models import Code
from tombstone.spec import expand_env


class StoreAction(enum.StrEnum):
    """A store's action on a data class when a request arrives."""

    DELETE = "delete"  # delete now
    HIDE = "hide"  # hide now (normal reads stop showing it), purge after purge_after_s
    ANONYMIZE = "anonymize"  # rewrite the named fields, keep the record for a legal basis
    RETAIN = "retain"  # keep everything under a legal basis until a date


class StoreEntry(BaseModel):
    """One store that contains a copy of a data class, and its deletion policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: Code
    action: StoreAction
    max_delay_s: int = Field(default=86_400, gt=0,
                             description="Bound on the time until the bytes leave this store.")
    purge_after_s: int | None = Field(default=None, ge=0, description="hide: delay until the purge")
    fields: list[str] = Field(default_factory=list, description="anonymize: fields to rewrite")
    legal_basis: str | None = Field(default=None, min_length=3, max_length=200,
                                    description="anonymize, retain: why the data stays")
    retain_days: int | None = Field(default=None, gt=0, description="retain: kept this long after the request")
    retain_until: date | None = Field(default=None, description="retain: kept until this date (UTC)")

    @model_validator(mode="after")
    def _policy_complete(self) -> StoreEntry:
        problem = _policy_problem(self)
        if problem:
            raise ValueError(f"store {self.store!r} ({self.action.value}): {problem}")
        return self

    def retained_until(self, requested_at: datetime) -> datetime | None:
        """End of the retention of a request made at ``requested_at``; None when not retained."""
        if self.action is not StoreAction.RETAIN:
            return None
        if self.retain_until is not None:
            return datetime.combine(self.retain_until, time.min, UTC)
        return requested_at + timedelta(days=self.retain_days or 0)


def _policy_problem(entry: StoreEntry) -> str | None:
    """Name what the entry lacks for its action, or sets that its action does not use."""
    action = entry.action
    if action is StoreAction.HIDE:
        if entry.purge_after_s is None:
            return "give purge_after_s, the delay between hiding and purging"
        if entry.purge_after_s > entry.max_delay_s:
            return f"purge_after_s {entry.purge_after_s} exceeds max_delay_s {entry.max_delay_s}"
    elif entry.purge_after_s is not None:
        return "purge_after_s applies to action hide only"
    if action is StoreAction.ANONYMIZE and not entry.fields:
        return "list the fields to rewrite in fields"
    if action is not StoreAction.ANONYMIZE and entry.fields:
        return "fields applies to action anonymize only"
    if action in (StoreAction.ANONYMIZE, StoreAction.RETAIN) and not entry.legal_basis:
        return "name the legal basis for keeping the data in legal_basis"
    if action is StoreAction.RETAIN and (entry.retain_days is None) == (entry.retain_until is None):
        return "give exactly one of retain_days and retain_until"
    if action is not StoreAction.RETAIN and (entry.retain_days or entry.retain_until):
        return "retain_days and retain_until apply to action retain only"
    return None


class DataClass(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    subject_types: list[Code] = Field(min_length=1)
    stores: list[StoreEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _stores_unique(self) -> DataClass:
        names = [entry.store for entry in self.stores]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"store {duplicates[0]!r} is listed more than once")
        return self


class Inventory(BaseModel):
    """Data classes by name. Loaded from TOML; unknown keys are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "1"
    data_classes: dict[Code, DataClass] = Field(min_length=1)

    def stores_for(self, data_class: str) -> list[str]:
        """Store names that must prove a request of this data class; empty when unknown."""
        entry = self.data_classes.get(data_class)
        return [store.store for store in entry.stores] if entry else []

    def policy(self, data_class: str, store: str) -> StoreEntry | None:
        """Return the entry of ``store`` for ``data_class``, or None when the store does not hold it."""
        entry = self.data_classes.get(data_class)
        for item in entry.stores if entry else []:
            if item.store == store:
                return item
        return None

    def only_store(self, store: str) -> Inventory:
        """Copy with the data classes that ``store`` holds, each listing that store alone.

        Raises:
            ConfigError: the inventory lists the store for no data class.
        """
        classes = {name: dc.model_copy(update={"stores": [e for e in dc.stores if e.store == store]})
                   for name, dc in self.data_classes.items() if any(e.store == store for e in dc.stores)}
        if not classes:
            raise ConfigError(f"The inventory lists store {store} for no data class.")
        return self.model_copy(update={"data_classes": classes})

    def restricted_to(self, stores: set[str]) -> Inventory:
        """Copy with only the named stores, for a deployment that runs a subset of them.

        Raises:
            ConfigError: a data class would be left without any store.
        """
        classes = {}
        for name, data_class in self.data_classes.items():
            kept = [entry for entry in data_class.stores if entry.store in stores]
            if not kept:
                raise ConfigError(f"Data class {name} has no store among {sorted(stores)}.")
            classes[name] = data_class.model_copy(update={"stores": kept})
        return self.model_copy(update={"data_classes": classes})

    def check_request(self, data_class: str, subject_type: str) -> None:
        """Reject a request that no store would ever prove.

        Raises:
            InvalidRequestError: the data class is unknown, or does not cover the subject type.
        """
        entry = self.data_classes.get(data_class)
        if entry is None:
            raise InvalidRequestError(
                f"Data class {data_class!r} is not in the inventory; use one of: "
                f"{', '.join(sorted(self.data_classes))}."
            )
        if subject_type not in entry.subject_types:
            raise InvalidRequestError(
                f"Data class {data_class!r} covers subjects of type {', '.join(entry.subject_types)}, "
                f"not {subject_type!r}."
            )

    def all_stores(self) -> list[str]:
        return sorted({s.store for dc in self.data_classes.values() for s in dc.stores})


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file.

    Raises:
        ConfigError: naming the file and the first invalid entry.
    """
    source = Path(path)
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Inventory {source} not found. Set TOMBSTONE_INVENTORY or pass --inventory.") from None
    except OSError as exc:
        raise ConfigError(f"Inventory {source} cannot be read: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Inventory {source} is not valid TOML: {exc}.") from None
    try:
        return Inventory.model_validate(expand_env(document, source))
    except ValidationError as exc:
        raise ConfigError(f"Inventory {source} is invalid: {describe_validation_error(exc)}.") from None


def default_inventory_path() -> Path:
    """``TOMBSTONE_INVENTORY`` when set, else ``deploy/inventory.toml`` of the source tree."""
    import os

    configured = os.environ.get("TOMBSTONE_INVENTORY")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "deploy" / "inventory.toml"
