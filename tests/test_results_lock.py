"""The DuckDB file held open by another process (an analyst's shell): the writer waits,
then fails with a message naming the holder, and nothing is lost."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from slidead.errors import DatabaseBusyError
from slidead.store.results import ResultsDB

HOLD = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_writer_names_the_holder_and_writes_nothing(tmp_path):
    path = tmp_path / "r.duckdb"
    db = ResultsDB(path, lock_timeout_s=1.0)
    db.add_clips([{"clip_id": "a", "uri": "u", "split": "drop", "machine_type": "slider", "machine_id": "00"}])
    holder = _holder(path, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(DatabaseBusyError, match=rf"process {holder.pid}.*nothing was written"):
            db.add_clips([{"clip_id": "b", "uri": "v", "split": "drop", "machine_type": "slider", "machine_id": "00"}])
        assert time.monotonic() - t0 >= 1.0  # it waited before giving up
    finally:
        holder.kill()
        holder.wait()
    _, rows = db.query("SELECT clip_id FROM clips ORDER BY 1")
    assert rows == [("a",)]


def test_writer_waits_for_a_short_holder_then_writes(tmp_path):
    path = tmp_path / "r.duckdb"
    db = ResultsDB(path, lock_timeout_s=30.0)
    db.add_clips([{"clip_id": "a", "uri": "u", "split": "drop", "machine_type": "slider", "machine_id": "00"}])
    holder = _holder(path, 1.5)
    try:
        db.add_clips([{"clip_id": "b", "uri": "v", "split": "drop", "machine_type": "slider", "machine_id": "00"}])
    finally:
        holder.wait()
    _, rows = db.query("SELECT clip_id FROM clips ORDER BY 1")
    assert rows == [("a",), ("b",)]
