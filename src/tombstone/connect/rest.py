"""A small client for the Kafka Connect REST API: create, watch and delete connectors."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tombstone.errors import ConnectRuntimeError

logger = logging.getLogger(__name__)

# Connect returns 409 Conflict while the worker group rebalances or a config change is in
# flight; the same request succeeds once that is over.
_CONFLICT = 409


class ConnectClient:
    """Calls to one Kafka Connect worker's REST API at ``base_url``, such as http://127.0.0.1:8083."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def server_info(self) -> dict[str, Any]:
        """Return the worker's version, commit and Kafka cluster id (``GET /``)."""
        return self._call("GET", "/")[1]

    def health(self) -> dict[str, Any]:
        """Return the worker's health (``GET /health``), whose status is "healthy" once it started.

        Raises:
            ConnectRuntimeError: the worker responds with 503 while it is still starting
                or is unhealthy. The message contains its reason.
        """
        return self._call("GET", "/health")[1]

    def connectors(self) -> list[str]:
        """Return the names of all connectors in the worker group."""
        return self._call("GET", "/connectors")[1]

    def put_connector(self, name: str, config: dict[str, str], timeout_s: float = 60.0) -> bool:
        """Create connector ``name`` or replace its config; return True when it was created.

        ``PUT /connectors/{name}/config`` is idempotent, so calling it again with the same
        config changes nothing. Conflicts during a rebalance are retried until ``timeout_s``.

        The config is validated first, because Connect 4.1.1 rejects a PUT of an invalid
        Debezium 3.6.1 config with HTTP 500 and a NullPointerException instead of the reason.

        Raises:
            ConnectRuntimeError: the config is invalid, or the worker rejects it or cannot be
                reached.
        """
        errors = self.validate(config)
        if errors:
            raise ConnectRuntimeError(f"Connector {name} has an invalid config:\n" + "\n".join(errors))
        status, _ = self._call_until_no_conflict("PUT", f"/connectors/{_quote(name)}/config", config, timeout_s)
        logger.info("Connector %s %s", name, "created" if status == 201 else "updated")
        return status == 201

    def validate(self, config: dict[str, str]) -> list[str]:
        """Return the config's validation errors as ``key: message`` lines; empty when valid.

        The connector plugin checks the values too: Debezium tries to log in to the database.
        """
        plugin = config.get("connector.class", "")
        _, body = self._call("PUT", f"/connector-plugins/{_quote(plugin)}/config/validate", config)
        errors = []
        for item in body.get("configs", []):
            value = item.get("value") or {}
            errors.extend(f"{value.get('name')}: {message}" for message in value.get("errors") or [])
        return errors

    def status(self, name: str) -> dict[str, Any] | None:
        """Return the status of the connector and its tasks, or None when there is no such connector."""
        code, body = self._call("GET", f"/connectors/{_quote(name)}/status", missing_ok=True)
        return None if code == 404 else body

    def delete_connector(self, name: str, timeout_s: float = 60.0) -> bool:
        """Delete connector ``name``; return False when it did not exist.

        Connect keeps the source offsets of a deleted connector in its offsets topic. A
        connector created again under the same name resumes from them.
        """
        status, _ = self._call_until_no_conflict("DELETE", f"/connectors/{_quote(name)}", None, timeout_s,
                                                 missing_ok=True)
        return status != 404

    def wait_running(self, name: str, timeout_s: float = 120.0, poll_s: float = 0.5) -> dict[str, Any]:
        """Wait until the connector and each of its tasks is RUNNING; return that status.

        Raises:
            ConnectRuntimeError: the connector or a task is FAILED (the message contains the
                Java stack trace that Connect reports), or ``timeout_s`` passed first.
        """
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] | None = None
        while True:
            status = self.status(name)
            if status is not None:
                failures = _failures(status)
                if failures:
                    raise ConnectRuntimeError(f"Connector {name} failed:\n" + "\n".join(failures))
                if _all_running(status):
                    return status
            if time.monotonic() >= deadline:
                raise ConnectRuntimeError(
                    f"Connector {name} was not RUNNING with all its tasks within {timeout_s:.0f} s. "
                    f"Last status: {json.dumps(status)}"
                )
            time.sleep(poll_s)

    def _call_until_no_conflict(self, method: str, path: str, body: Any, timeout_s: float,
                                missing_ok: bool = False) -> tuple[int, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._call(method, path, body, missing_ok=missing_ok, conflict_ok=True)
            except _Conflict as conflict:
                if time.monotonic() >= deadline:
                    raise ConnectRuntimeError(
                        f"{method} {self.base_url}{path} kept failing with 409 Conflict for "
                        f"{timeout_s:.0f} s: {conflict}"
                    ) from None
                logger.info("%s %s: %s; retrying", method, path, conflict)
                time.sleep(0.5)

    def _call(self, method: str, path: str, body: Any = None, missing_ok: bool = False,
              conflict_ok: bool = False) -> tuple[int, Any]:
        """Send one request; return the status code and the decoded JSON body (None when empty)."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/json", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            detail = _error_message(error)
            if error.code == 404 and missing_ok:
                return 404, None
            if error.code == _CONFLICT and conflict_ok:
                raise _Conflict(detail) from None
            raise ConnectRuntimeError(f"{method} {url} failed with HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectRuntimeError(
                f"The Kafka Connect REST API at {self.base_url} is not reachable ({reason}). "
                "Start a worker with `tombstone connect start`, or check the URL."
            ) from None


class _Conflict(Exception):
    """HTTP 409 from Connect: a rebalance or config change is in progress."""


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _decode(raw: bytes) -> Any:
    return json.loads(raw) if raw.strip() else None


def _error_message(error: urllib.error.HTTPError) -> str:
    """Return the ``message`` of Connect's JSON error body, else the raw body."""
    raw = error.read().decode("utf-8", errors="replace")
    try:
        return str(json.loads(raw)["message"])
    except (ValueError, KeyError, TypeError):
        return raw.strip() or error.reason


def _all_running(status: dict[str, Any]) -> bool:
    tasks = status.get("tasks") or []
    return (status.get("connector", {}).get("state") == "RUNNING" and bool(tasks)
            and all(task.get("state") == "RUNNING" for task in tasks))


def _failures(status: dict[str, Any]) -> list[str]:
    """Describe the FAILED connector and tasks in ``status``, each with its trace."""
    failures = []
    connector = status.get("connector", {})
    if connector.get("state") == "FAILED":
        failures.append(f"connector on {connector.get('worker_id')}: {connector.get('trace', '(no trace)')}")
    for task in status.get("tasks") or []:
        if task.get("state") == "FAILED":
            failures.append(f"task {task.get('id')} on {task.get('worker_id')}: {task.get('trace', '(no trace)')}")
    return failures
