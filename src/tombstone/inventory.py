"""The data inventory: which stores hold each data class, and what each does on deletion."""

from __future__ import annotations

import enum
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tombstone.errors import ConfigError, InvalidRequestError, describe_validation_error
from tombstone.models import Code


class StoreAction(enum.StrEnum):
    DELETE = "delete"


class StoreEntry(BaseModel):
    """One store that contains a copy of a data class."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: Code
    action: StoreAction = StoreAction.DELETE
    max_delay_s: int = Field(default=86_400, gt=0,
                             description="Bound on the time until the bytes leave this store.")


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
        return Inventory.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"Inventory {source} is invalid: {describe_validation_error(exc)}.") from None


def default_inventory_path() -> Path:
    """``TOMBSTONE_INVENTORY`` when set, else ``deploy/inventory.toml`` of the source tree."""
    import os

    configured = os.environ.get("TOMBSTONE_INVENTORY")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "deploy" / "inventory.toml"
