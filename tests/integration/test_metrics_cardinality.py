"""Worker metrics stay bounded: the series count does not grow with the number of subjects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import ProofReader, wait_for
from tombstone.requester import Requester, new_request
from tombstone.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _null_spec(directory: Path) -> Path:
    spec = directory / "null.toml"
    spec.write_text(f"""
name = "operational-db"
data_classes = ["customer_profile"]
group_id = "test.cardinality.{directory.name}"
batch_size = 500
poll_timeout_s = 0.2
state_dir = "{directory / 'state'}"

[store]
kind = "null"
""", encoding="utf-8")
    return spec


def _request(first: int, count: int) -> None:
    requester = Requester(KafkaSettings())
    try:
        requester.submit([new_request(f"customer:{i}", "customer_profile", "user_request", "test")
                          for i in range(first, first + count)])
    finally:
        requester.close()


def _series(registry) -> set[tuple[str, tuple]]:
    return {(sample.name, tuple(sorted(sample.labels.items())))
            for metric in registry.collect() for sample in metric.samples}


def test_series_constant_after_many_subjects(tmp_path: Path, proof_reader: ProofReader, start_worker) -> None:
    worker = start_worker(_null_spec(tmp_path))
    _request(1, 10)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 10, what="10 acks")
    registry = worker.worker.metrics.registry
    wait_for(lambda: registry.get_sample_value("tombstone_offset_commits_total", {"store": "operational-db"}),
             what="a commit")
    after_ten = _series(registry)

    _request(1000, 1000)
    wait_for(lambda: proof_reader.refresh() or len(proof_reader.acks) >= 1010, timeout_s=120, what="1010 acks")
    after_thousand = _series(registry)

    assert after_thousand == after_ten
    assert not any("customer" in str(labels) for _, labels in after_thousand)
