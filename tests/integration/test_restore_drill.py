"""The restore drill on the real broker: a restored backup brings data back, reconcile removes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("store", ["operational-db", "warehouse", "search", "exports", "crm-db"])
def test_drill_restore_reconciles_every_snapshot_kind(store: str, kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOMBSTONE_PURGE_AFTER_S": "1"}
    result = subprocess.run([sys.executable, "-m", "tombstone.cli", "drill", "restore", "--store", store,
                             "--customers", "3", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["store"] == store
    assert summary["remaining_after_deletion"] == 0
    assert summary["resurrected_before_reconcile"] > 0
    assert summary["remaining_after_reconcile"] == 0
    assert summary["reconcile"]["applied"] == summary["requests"]
    assert "reconcile " in result.stderr  # progress lines


def test_drill_refuses_a_store_without_snapshots(kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = subprocess.run([sys.executable, "-m", "tombstone.cli", "drill", "restore", "--store", "profiles-topic"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "cannot snapshot" in result.stderr
