"""A benchmark child process: runs phases and services on command from the parent.

Protocol: one JSON object per line. The parent writes ``{"id", "op", "name", "params"}``
to stdin, where ``op`` is ``phase`` (run and return a result), ``start`` (start a
service and return once it is ready), ``command`` (send a service a command) or
``stop`` (stop a service and return its totals). The child replies to each with
``{"id", "result"}`` or ``{"id", "error"}``. Services may also write ``{"event": ...}``
lines at any time. Anything else that writes to stdout goes to stderr instead, so it
cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from typing import Any


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=os.environ.get("BENCH_CHILD_LOG", "WARNING"),
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    from bench.phases import PHASES, SERVICES  # imported after the redirect: imports may print

    lock = threading.Lock()

    def emit(message: dict[str, Any]) -> None:
        with lock:
            protocol.write(json.dumps(message) + "\n")

    services: dict[str, Any] = {}
    emit({"event": "started", "pid": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        ident, op, name, params = command["id"], command["op"], command["name"], command.get("params", {})
        try:
            if op == "phase":
                result = PHASES[name](params)
            elif op == "start":
                services[name] = SERVICES[params["service"]](params, emit)
                result = {"ready": True}
            elif op == "command":
                result = services[name].command(params["command"], params)
            elif op == "stop":
                result = services.pop(name).stop()
            else:
                raise ValueError(f"Unknown op {op!r}")
            emit({"id": ident, "result": result})
        except Exception as exc:  # reported to the parent, which decides
            traceback.print_exc()
            emit({"id": ident, "error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
