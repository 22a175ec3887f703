"""Writers of the results lake and the people reading it: a reader or an idle writer holding the
lake open never makes a write wait, and a write that keeps meeting other writers' commits
stops with one sentence and writes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slidead.errors import DatabaseBusyError
from slidead.store.results import ResultsDB

HOLD = """
import sys, time
from slidead.store.results import ResultsDB
db = ResultsDB(sys.argv[1])
with db.connect(read_only=sys.argv[2] == "read") as con:
    con.execute("BEGIN TRANSACTION")
    con.execute("SELECT count(*) FROM clips").fetchall()
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
"""

CLIP = {"split": "drop", "machine_type": "slider", "machine_id": "00"}


def _holder(path, mode: str, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


@pytest.mark.parametrize("mode", ["read", "write"])
def test_a_process_holding_the_lake_open_does_not_delay_a_write(tmp_path, mode):
    path = tmp_path / "r.duckdb"
    db = ResultsDB(path, lock_timeout_s=1.0)
    db.add_clips([{"clip_id": "a", "uri": "u", **CLIP}])
    holder = _holder(path, mode, 60)
    try:
        db.add_clips([{"clip_id": "b", "uri": "v", **CLIP}])  # the single file waited 1 s here, then failed
        assert holder.poll() is None  # written while the holder still holds the lake open
    finally:
        holder.kill()
        holder.wait()
    _, rows = db.query("SELECT clip_id FROM clips ORDER BY 1")
    assert rows == [("a",), ("b",)]


def test_a_write_that_keeps_meeting_other_commits_stops_and_writes_nothing(tmp_path):
    path = tmp_path / "r.duckdb"
    db = ResultsDB(path, lock_timeout_s=3.0)
    other = ResultsDB(path)  # another writer (its own connection to the catalog)
    db.add_clips([{"clip_id": "a", "uri": "u", **CLIP}])
    other.query("SELECT 1")  # opened before the race
    tries = []

    def insert(con):
        tries.append(1)
        con.execute(
            "INSERT INTO clips (clip_id, uri, split, machine_type, machine_id) VALUES ('b', 'v', 'drop', 'slider', '00')"
        )
        other.record_run({"run_id": f"r{len(tries)}", "flow": "score", "status": "completed"})  # commits first

    with pytest.raises(DatabaseBusyError, match=r"kept meeting other writers' commits.*nothing was written"):
        db.write(insert)
    assert len(tries) >= 2
    assert db.query("SELECT clip_id FROM clips")[1] == [("a",)]
    assert db.query("SELECT count(*) FROM runs")[1] == [(len(tries),)]
