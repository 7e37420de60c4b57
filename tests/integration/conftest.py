"""Fixtures for tests that run workers against the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import ProofReader, WorkerThread
from tombstone.settings import KafkaSettings
from tombstone.spec import load_spec


@pytest.fixture
def proof_reader(pipeline_topics: dict[str, str]) -> Iterator[ProofReader]:
    reader = ProofReader(KafkaSettings())
    yield reader
    reader.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[[Path], WorkerThread]]:
    started: list[WorkerThread] = []

    def start(spec_path: Path) -> WorkerThread:
        worker = WorkerThread(load_spec(spec_path)).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.thread.is_alive():
            worker.stop.set()
            worker.thread.join(30)
