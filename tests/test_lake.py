"""The results lake with real processes: readers that hold it open never stop a night, two
nights loading at once from two processes both land exactly once, a load killed while it
commits leaves the lake at its previous snapshot, and reports read the lake as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultkit import NIGHT, clip, put_night, services
from lakekit import night_batch, no_duplicate_keys, two_nights_at_once

from slidead.jobs import nightly
from slidead.shell.report import run_report
from slidead.store.results import ResultsDB

SLIDEAD = Path(sys.executable).parent / "slidead"
NEXT = "2026-11-24"

# -- tests ---------------------------------------------------------------------------------


READER = """
import sys, duckdb
from slidead.store.results import ResultsDB
db = ResultsDB(sys.argv[1])
con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
for stmt in db.load_sql():
    con.execute(stmt)
con.execute(db.attach_sql(read_only=True))
con.execute("USE lake")
held = con.cursor()  # a second connection keeps one transaction open all night
held.execute("USE lake")
held.execute("BEGIN TRANSACTION")
print(held.execute("SELECT count(*) FROM scores").fetchone()[0], flush=True)
sys.stdin.readline()  # the night runs
now = con.execute("SELECT count(*) FROM scores").fetchone()[0]
still = held.execute("SELECT count(*) FROM scores").fetchone()[0]
held.execute("COMMIT")
print(now, still, held.execute("SELECT count(*) FROM scores").fetchone()[0], flush=True)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_readers_holding_the_lake_open_never_stop_a_night(tmp_path):
    svc = services(tmp_path, lock_timeout_s=5.0)
    put_night(svc.store, {f"slider/id_00/a{i}.wav": clip(1.0, i) for i in range(3)}, night=NIGHT)
    assert nightly.run_night(svc, NIGHT, "ae").n_scored == 3
    env = dict(os.environ, SLIDEAD_HOME=str(tmp_path), SLIDEAD_DUCKDB=svc.db.path)
    # a Python connection (one transaction open all night) and the duckdb shell people are told to
    # open (read-only, a transaction open), both attached before the night starts
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, svc.db.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout.readline().split() == ["3"]
    shell = subprocess.Popen(
        [str(SLIDEAD), "sql", "--", "-csv", "-noheader"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ready = tmp_path / "shell-ready"
    shell.stdin.write(f"BEGIN TRANSACTION;\nSELECT 'before', count(*) FROM scores;\n.shell touch {ready}\n")
    shell.stdin.flush()
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():  # the shell has attached the lake and holds its transaction
            assert shell.poll() is None and time.monotonic() < deadline, shell.stderr.read()
            time.sleep(0.1)
        put_night(svc.store, {f"slider/id_00/b{i}.wav": clip(1.0, 10 + i) for i in range(4)}, night=NEXT)
        res = nightly.run_night(svc, NEXT, "ae")  # the old single file: 5 s of waiting, then a failure
        assert res.n_scored == 4 and res.ledger["slider/00"]["arrivals"] == 4, res
        shell.stdin.write("SELECT 'held', count(*) FROM scores;\nCOMMIT;\nSELECT 'after', count(*) FROM scores;\n")
        out, err = shell.communicate(timeout=60)
        reader.stdin.write("\n")
        reader.stdin.flush()
        seen = reader.stdout.readline().split()
    finally:
        for p in (reader, shell):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert shell.returncode == 0 and "Error" not in err, err
    # the shell's open transaction kept its snapshot; its next query saw the night
    assert out.split() == ["before,3", "held,3", "after,7"], out
    assert seen == ["7", "3", "7"]  # next query: the new rows; the open transaction: as it began
    _, rows = svc.db.query("SELECT status FROM runs WHERE night = ?::DATE", [NEXT])
    assert rows == [("completed",)]


def test_two_nights_loaded_at_once_from_two_processes_both_land(tmp_path):
    path = tmp_path / "results.duckdb"
    ResultsDB(path).load_scores([], [], [], [])  # the lake exists before either process starts
    two_nights_at_once(path)


KILLED = """
import sys, datetime as dt
sys.path.insert(0, sys.argv[2])
from lakekit import night_batch
from slidead.store.results import ResultsDB
db = ResultsDB(sys.argv[1])
write = db.write
def announced(fn, **kw):
    def body(con):
        out = fn(con)
        print("committing", flush=True)  # the inserts are done: what follows is the COMMIT
        return out
    return write(body, **kw)
db.write = announced
for i in range(1000):
    night = (dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat()
    scores, clips, arrivals = night_batch(night, 2000)
    db.load_scores([scores], clips, [], arrivals)
    print("committed", db.snapshots()[-1][0], flush=True)
"""


def test_a_load_killed_while_committing_leaves_the_previous_snapshot(tmp_path):
    path = tmp_path / "results.duckdb"
    db = ResultsDB(path)
    db.load_scores([], [], [], [])
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(path), str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True
    )
    lines = []
    while lines.count("committing") < 3:  # two nights in, the third one's COMMIT has begun
        lines.append(p.stdout.readline().strip())
        assert lines[-1], "the loader stopped"
    time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    committed = [int(x.split()[1]) for x in lines + p.stdout.read().split("\n") if x.startswith("committed")]
    assert len(committed) == 2
    latest = db.snapshots()[-1][0]
    # the lake is at the last commit the loader finished (or the one it was finishing when killed)
    assert latest in (committed[-1], committed[-1] + 1)
    _, rows = db.query("SELECT night, count(*), count(DISTINCT clip_id) FROM scores GROUP BY 1")
    assert len(rows) in (2, 3) and all(n == d == 2000 for _, n, d in rows), rows  # whole nights only
    assert len(rows) == 2 + (latest - committed[-1])
    if latest == committed[-1]:  # killed inside the commit: its data files written, the catalog's commit not
        with db.connect() as con:
            listed = sum(
                con.execute("SELECT count(*) FROM ducklake_list_files('lake', ?)", [t]).fetchone()[0]
                for t in ("clips", "drops", "scores")
            )
        assert len(list(Path(f"{db.catalog}.files").rglob("*.parquet"))) > listed
    _, counts = db.query("SELECT (SELECT count(*) FROM drops), (SELECT count(*) FROM clips)")
    assert counts == [(2000 * len(rows), 2000 * len(rows))]
    # and the next load goes on from there
    scores, clips, arrivals = night_batch("2026-12-31", 10)
    assert db.load_scores([scores], clips, [], arrivals) == 10
    no_duplicate_keys(db)


def test_report_reads_the_night_as_it_was_reported(tmp_path):
    db = ResultsDB(tmp_path / "results.duckdb")
    scores, clips, arrivals = night_batch(NIGHT, 5)
    db.load_scores([scores], clips, [], arrivals)
    snap, when = db.snapshots()[-1][:2]
    time.sleep(0.05)
    # the night loaded again with two late arrivals
    scores, clips, arrivals = night_batch(NIGHT, 7)
    assert db.load_scores([scores], clips, [], arrivals) == 2

    def arrivals_of(**kw):
        [(_, cols, rows)] = run_report(db, NIGHT, ["night_ledger"], **kw)
        return len(rows)

    assert arrivals_of() == 7
    assert arrivals_of(as_of=snap) == 5
    assert arrivals_of(as_of=when.isoformat()) == 5  # a time with its offset
    with pytest.raises(ValueError, match="snapshot id"):
        arrivals_of(as_of="last tuesday")


def test_slidead_sql_runs_every_file_and_is_read_only(tmp_path):
    db = ResultsDB(tmp_path / "slidead.duckdb")
    scores, clips, arrivals = night_batch(NIGHT, 3)
    db.load_scores([scores], clips, [{**clips[0], "reason": "silent", "uri": "drops/x.wav"}], arrivals)
    env = dict(os.environ, SLIDEAD_HOME=str(tmp_path))
    files = sorted(p for p in (Path(__file__).parents[1] / "slidead" / "sql").glob("*.sql") if p.name != "schema.sql")
    text = "".join(f.read_text() + "\n" for f in files)
    proc = subprocess.run(
        [str(SLIDEAD), "sql", "--night", NIGHT, "--", "-csv"], input=text, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and "Error" not in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr  # no colour escape from reading the attach script
    out = proc.stdout
    # the default box output into a pipe: the shell colours DESCRIBE's box unless told not to
    boxed = subprocess.run(
        [str(SLIDEAD), "sql", "--", "-c", "DESCRIBE scores"], capture_output=True, text=True, env=env
    )
    assert boxed.returncode == 0 and "model_name" in boxed.stdout and "\x1b" not in boxed.stdout, boxed.stdout[:300]
    assert f"{NIGHT},slider,00,slidead-slider-ae:1,3,3,0,0,0,0.0," in out  # nightly_summary
    assert f"drops/{NIGHT}/slider/id_00/{NIGHT}-00002.wav" in out  # night_ledger
    assert "silent,1" in out  # rejected_by_reason
    assert out.count("\n") > len(files)
    proc = subprocess.run(
        [str(SLIDEAD), "sql", "--", "-c", "DELETE FROM scores"], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0 and "read-only" in proc.stderr.lower(), proc.stderr
    assert db.query("SELECT count(*) FROM scores")[1] == [(3,)]


def test_compaction_merges_the_nights_files_and_changes_no_answer(tmp_path):
    db = ResultsDB(tmp_path / "results.duckdb")
    db.compact_above_files = None
    for day in range(1, 5):
        scores, clips, arrivals = night_batch(f"2026-11-{day:02d}", 40)
        db.load_scores([scores], clips, [], arrivals)
    db.record_run({"run_id": "r", "flow": "score", "status": "running"})
    db.record_run({"run_id": "r", "flow": "score", "status": "completed"})  # a replaced row
    answers = run_report(db, "2026-11-04")
    files = db.compact()
    assert files["files_before"] == 12 and files["files_after"] < files["files_before"], files
    assert run_report(db, "2026-11-04") == answers
    assert db.query("SELECT run_id, status FROM runs")[1] == [("r", "completed")]
    # and loads start it themselves once the scores spread over more files than allowed
    db.compact_above_files = 2
    for day in (5, 6):
        scores, clips, arrivals = night_batch(f"2026-11-{day:02d}", 40)
        db.load_scores([scores], clips, [], arrivals)
    with db.connect() as con:
        assert con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'scores')").fetchone()[0] <= 2
    assert db.query("SELECT count(*), count(DISTINCT clip_id) FROM scores")[1] == [(240, 240)]
