"""Building blocks that several scenarios share."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from tombstone.models import DeletionRequest

from tests.faults.harness import Context, ScenarioFailure, WorkerProcess


def seed_and_request(ctx: Context, count: int, per_subject: int = 2, bystanders: int = 5) -> list[DeletionRequest]:
    """Seed ``count`` subjects and ``bystanders`` that no request names, then request the ``count`` subjects."""
    subjects = ctx.subjects(count)
    ctx.seed(subjects, per_subject)
    ctx.seed(ctx.subjects(bystanders, "b"), per_subject)
    return ctx.request(subjects)


def start_ready(ctx: Context, **options: object) -> WorkerProcess:
    worker = ctx.start_worker(**options)  # type: ignore[arg-type]
    ctx.wait_ready(worker)
    return worker


def expect_crashed(ctx: Context, worker: WorkerProcess, point: str, timeout_s: float = 90.0) -> None:
    status = worker.wait_exit(timeout_s)
    if status is None:
        worker.kill()
        raise ScenarioFailure(f"The worker armed with crash point {point} did not reach it within {timeout_s:.0f} s")
    ctx.expect(f"worker killed itself at {point}", status == -signal.SIGKILL, f"exit status {status}")


def expect_survived(ctx: Context, *workers: WorkerProcess) -> None:
    for worker in workers:
        alive = worker.alive()
        ctx.expect(f"{worker.label} kept running through the fault", alive,
                   "" if alive else f"exit status {worker.process.poll() if worker.process else None}")


def uncommitted(ctx: Context) -> bool:
    return all(offset < 0 for offset in ctx.committed_offsets().values())


class Repeater:
    """Call ``action`` every ``interval_s`` in a thread until the ``with`` block ends, counting the calls."""

    def __init__(self, action: Callable[[], object], interval_s: float) -> None:
        self.action = action
        self.interval_s = interval_s
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.action()
            self.calls += 1

    def __enter__(self) -> Repeater:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)


def hold(seconds: float) -> None:
    time.sleep(seconds)
