"""Parent side of the benchmark child processes."""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bench.system import cpu_seconds

REPOSITORY = Path(__file__).resolve().parents[1]


class ChildError(RuntimeError):
    """A phase or service failed in a child process."""


class Child:
    """One long-lived child process that runs phases, so imports happen once per child."""

    _ids = itertools.count(1)

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.child"], cwd=REPOSITORY, env=environment,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )
        self._pending = ""
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()
        started = self.wait_event("started", 120)
        self.pid: int = started["pid"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            (self.events if "event" in message else self.replies).put(message)
        self.events.put({"event": "exited"})
        self.replies.put({"id": None, "error": "the child process exited"})

    def send(self, op: str, name: str, params: dict[str, Any] | None = None) -> None:
        """Send one command. ``receive`` returns its reply."""
        assert self.process.stdin is not None
        ident = next(self._ids)
        self._pending = f"{op} {name}"
        self.process.stdin.write(json.dumps({"id": ident, "op": op, "name": name, "params": params or {}}) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout_s: float = 600) -> Any:
        try:
            reply = self.replies.get(timeout=timeout_s)
        except queue.Empty:
            raise ChildError(f"{self.name}: {self._pending} sent no reply within {timeout_s:.0f} s; "
                             f"see {self.log_path}") from None
        if reply.get("error"):
            raise ChildError(f"{self.name}: {self._pending} failed: {reply['error']}; see {self.log_path}")
        return reply["result"]

    def call(self, op: str, name: str, params: dict[str, Any] | None = None, timeout_s: float = 600) -> Any:
        self.send(op, name, params)
        return self.receive(timeout_s)

    def phase(self, name: str, params: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
        return self.call("phase", name, params, timeout_s)

    def wait_event(self, kind: str, timeout_s: float) -> dict[str, Any]:
        try:
            while True:
                event = self.events.get(timeout=timeout_s)
                if event["event"] == kind:
                    return event
                if event["event"] in ("exited", "failed"):
                    raise ChildError(f"{self.name}: {event}; see {self.log_path}")
        except queue.Empty:
            raise ChildError(f"{self.name}: no {kind} event within {timeout_s:.0f} s; see {self.log_path}") from None

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
