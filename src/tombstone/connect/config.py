"""Connector config files: the JSON that ``POST /connectors`` takes, with environment references.

A file contains ``{"name": ..., "config": {...}}``. String values may reference environment
variables as ``${NAME}`` or ``${NAME:-default}``, so that passwords and hosts stay out of
the file. The references are replaced when the file is loaded, before registration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tombstone.errors import ConfigError
from tombstone.spec import expand_env


@dataclass(frozen=True)
class ConnectorConfig:
    """A connector's name and its config, every value a string as Connect stores it."""

    name: str
    config: dict[str, str]

    def with_overrides(self, name: str | None = None, settings: dict[str, object] | None = None) -> ConnectorConfig:
        """Return a copy with another name and the given settings replaced or added."""
        config = dict(self.config)
        for key, value in (settings or {}).items():
            config[key] = _to_string(value)
        new_name = name or self.name
        config["name"] = new_name
        return ConnectorConfig(new_name, config)


def load_connector_config(path: str | Path) -> ConnectorConfig:
    """Read a connector config file and replace its environment references.

    Raises:
        ConfigError: the file is missing, is not JSON, lacks ``name``, ``config`` or
            ``connector.class``, or references an unset variable without a default.
    """
    source = Path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read connector config {source}: {exc.strerror}.") from None
    except ValueError as exc:
        raise ConfigError(f"Connector config {source} is not valid JSON: {exc}.") from None
    if not isinstance(document, dict) or not isinstance(document.get("name"), str) \
            or not isinstance(document.get("config"), dict):
        raise ConfigError(f'Connector config {source} must be a JSON object with "name" and "config".')
    expanded = expand_env(document, source)
    config = {str(key): _to_string(value) for key, value in expanded["config"].items()}
    if "connector.class" not in config:
        raise ConfigError(f'Connector config {source} has no "connector.class" in "config".')
    name = expanded["name"]
    if config.setdefault("name", name) != name:
        raise ConfigError(f'Connector config {source} names the connector both {name!r} and {config["name"]!r}.')
    return ConnectorConfig(name, config)


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise ConfigError(f"Connector settings must be strings, numbers or booleans, not {value!r}.")
    return str(value)
