"""Faults on a local store: a crash between shards and the load, two runs of one night at once,
the DuckDB file held open, MLflow unreachable or missing the champion's files. Each test ends
with the ledger: zero lost clips, zero duplicate rows. (S3 faults: test_s3_faults.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from faultkit import MODEL, NIGHT, count, good_clips, ledger, put_night, runs, services, tampered_champion
from s3server import free_port

from slidead.errors import ModelRegistryError, NightBusyError, SlideadError
from slidead.jobs import night_lock, nightly
from slidead.store.objects import Lease, LeaseBusy, LocalObjectStore, hold

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


class Crash(Exception):
    """Stands in for the process dying at that point."""


def _crash_after(n_shards: int, shard_size: int):
    def progress(done, total):
        if done >= n_shards * shard_size and done < total:
            raise Crash(f"killed after {done} of {total} clips")

    return progress


# --- a crash after some shards, before the load ---------------------------------------------


def test_rerun_after_a_crash_resumes_from_shards_without_rescoring(tmp_path):
    svc = services(tmp_path)
    put_night(svc.store, good_clips(10))
    with pytest.raises(Crash):
        nightly.run_night(svc, NIGHT, "ae", shard_size=3, run_id="crashed", progress=_crash_after(2, 3))
    assert count(svc, "scores") == 0  # nothing loaded: the load comes last
    assert [r[:2] for r in runs(svc)] == [("crashed", "failed")]
    shards = nightly.shard_store(svc)
    # one shard file of the next run's set is half-written garbage: it must be recomputed, not trusted
    done = sorted(p for p in (tmp_path / "store" / "results").rglob("scores-*.parquet"))
    assert len(done) == 2
    data = done[1].read_bytes()
    done[1].write_bytes(data[: len(data) // 2])

    res = nightly.run_night(svc, NIGHT, "ae", shard_size=3, run_id="rerun")
    assert res.n_shards_resumed == 1 and res.n_scored == 10
    with svc.db.connect(read_only=True) as con:
        by_run = dict(con.execute("SELECT run_id, count(*) FROM scores GROUP BY 1").fetchall())
    assert by_run == {"crashed": 3, "rerun": 7}  # the good shard was loaded, not rescored
    assert all(shards.read(*s) is not None for s in res.shards)
    ledger(svc)


# --- two runs of the same night at once -----------------------------------------------------


def test_second_run_waits_for_the_first_and_scores_nothing_twice(tmp_path):
    svc_a, svc_b = services(tmp_path), services(tmp_path)  # two "processes" on one store and file
    put_night(svc_a.store, good_clips(8))
    started, results, errors = threading.Event(), {}, []

    def first_progress(done, total):
        started.set()
        time.sleep(0.3)  # hold the lock a while

    def run(name, svc, **kw):
        try:
            results[name] = nightly.run_night(svc, NIGHT, "ae", shard_size=2, run_id=name, **kw)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    a = threading.Thread(target=run, args=("first", svc_a), kwargs={"progress": first_progress})
    a.start()
    assert started.wait(30)
    with pytest.raises(NightBusyError, match=r"being scored by run first .*pid %d.*wrote nothing" % os.getpid()):
        nightly.run_night(svc_b, NIGHT, "ae", run_id="refused")  # refuses at once by default
    run("second", svc_b, lock_wait_s=60)  # or waits for it
    a.join()
    assert not errors
    assert (results["first"].n_scored, results["second"].n_scored) == (8, 0)
    assert results["second"].n_skipped == 8
    status = {r[0]: r[1] for r in runs(svc_a)}
    assert status == {"first": "completed", "refused": "failed", "second": "completed"}
    ledger(svc_a)


HOLDER = """
import sys, time
from slidead.store.objects import Lease, LocalObjectStore
Lease(LocalObjectStore(sys.argv[1]), sys.argv[2], "other-process", ttl_s=float(sys.argv[3])).acquire()
print("holding", flush=True)
time.sleep(120)
"""


def _holder(store_root, key, ttl_s=120.0) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_root), key, str(ttl_s)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "holding"
    return p


def test_a_run_in_another_process_blocks_until_it_dies_then_its_lock_is_free(tmp_path):
    svc = services(tmp_path)
    put_night(svc.store, good_clips(4))
    holder = _holder(svc.store.uri, night_lock.lock_key(NIGHT, "ae"))
    try:
        t0 = time.monotonic()
        with pytest.raises(NightBusyError, match=rf"run other-process on host .*pid {holder.pid}"):
            nightly.run_night(svc, NIGHT, "ae", lock_wait_s=1.0)
        assert time.monotonic() - t0 >= 1.0
        assert count(svc, "scores") == 0
    finally:
        holder.kill()  # a crash: no release, the lease still says "held"
        holder.wait()
    assert json.loads(svc.store.get(night_lock.lock_key(NIGHT, "ae")))["state"] == "held"
    res = nightly.run_night(svc, NIGHT, "ae")  # its process is gone: the lock is free at once
    assert res.n_scored == 4
    ledger(svc)


def _foreign_lock(store, key, age_s: float, ttl_s: float = 120.0) -> None:
    store.put(
        key,
        json.dumps(
            {
                "state": "held",
                "token": "t",
                "run_id": "elsewhere-run",
                "host": "another-host",
                "pid": 1,
                "started_at": "2026-11-24T02:00:00+00:00",
                "heartbeat": time.time() - age_s,
                "ttl_s": ttl_s,
            }
        ).encode(),
    )


def test_lock_of_a_run_on_another_host_expires_after_its_ttl(tmp_path):
    svc = services(tmp_path)
    put_night(svc.store, good_clips(2))
    key = night_lock.lock_key(NIGHT, "ae")
    _foreign_lock(svc.store, key, age_s=5)
    with pytest.raises(NightBusyError, match="run elsewhere-run on host another-host.*heartbeat 5 s ago"):
        nightly.run_night(svc, NIGHT, "ae")
    _foreign_lock(svc.store, key, age_s=121)  # its heartbeat stopped longer than its ttl ago: a crash
    assert nightly.run_night(svc, NIGHT, "ae").n_scored == 2
    ledger(svc)


def test_lease_heartbeat_keeps_it_and_notices_a_takeover(tmp_path):
    store = LocalObjectStore(tmp_path / "s")
    lease = Lease(store, "locks/x.json", "a", ttl_s=0.3).acquire()
    try:
        time.sleep(0.5)  # longer than its ttl: only the heartbeat keeps it
        with pytest.raises(LeaseBusy):
            Lease(store, "locks/x.json", "b", ttl_s=0.3).acquire()
        assert not lease.lost
        lease._stop.set()  # the holder freezes (no more heartbeats) ...
        lease._beat.join()
        time.sleep(0.4)
        taker = Lease(store, "locks/x.json", "b", ttl_s=0.3).acquire()  # ... so another run takes over
        lease._stop.clear()  # it wakes up and beats again
        lease._beat = threading.Thread(target=lease._heartbeat, daemon=True)
        lease._beat.start()
        time.sleep(0.3)
        assert lease.lost  # and the frozen one learns it lost the lease
        taker.release()
    finally:
        lease.release()
    with hold(store, "locks/x.json", "c") as first, hold(store, "locks/x.json", "c") as nested:
        assert nested is first  # the same run nests


# --- the results lake held open by an analyst's shell ---------------------------------------

HOLD_DB = """
import sys, time
from slidead.store.results import ResultsDB
with ResultsDB(sys.argv[1]).connect(read_only=True) as con:
    con.execute("BEGIN TRANSACTION")
    con.execute("SELECT count(*) FROM scores").fetchall()
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _db_holder(path, seconds=60.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD_DB, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_results_held_open_at_load_time_stop_nothing(tmp_path):
    svc = services(tmp_path, lock_timeout_s=1.0)
    put_night(svc.store, good_clips(6))
    with svc.db.connect():
        pass  # the lake exists, as after earlier nights
    holder = []

    def analyst_opens_the_lake(done, total):
        if done == total:
            holder.append(_db_holder(svc.db.path))

    try:
        res = nightly.run_night(svc, NIGHT, "ae", shard_size=2, run_id="held", progress=analyst_opens_the_lake)
        assert holder and holder[0].poll() is None  # still holding when the night was loaded
    finally:
        for h in holder:
            h.kill()
            h.wait()
    assert res.n_scored == 6 and count(svc, "scores") == 6
    assert [r[:2] for r in runs(svc)] == [("held", "completed")]
    ledger(svc)
    nightly.run_night(svc, NIGHT, "ae")
    ledger(svc)


# --- MLflow unreachable, or the champion's files gone ----------------------------------------


def test_mlflow_unreachable_is_a_clear_error_and_writes_no_results(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    port = free_port()
    svc = services(tmp_path, tracking_uri=f"http://slidead:hunter2-password@127.0.0.1:{port}")
    put_night(svc.store, good_clips(2))
    with pytest.raises(ModelRegistryError, match=rf"MLflow at http://\*\*\*@127.0.0.1:{port} is unreachable") as e:
        nightly.run_night(svc, NIGHT, "ae")
    assert isinstance(e.value, SlideadError) and "hunter2" not in str(e.value)
    assert count(svc, "scores") == count(svc, "clips") == count(svc, "rejected") == 0
    assert not (tmp_path / "store" / "results").exists() and not (tmp_path / "store" / "features").exists()
    (run,) = runs(svc)
    assert run[1] == "failed" and "ModelRegistryError" in run[4] and "hunter2" not in run[4]
    svc.tracking_uri, svc._tracker = services(tmp_path).tracking_uri, None  # MLflow is back
    assert nightly.run_night(svc, NIGHT, "ae").n_scored == 2
    ledger(svc)


@pytest.mark.parametrize("how", ["no_state_dict", "no_files"])
def test_champion_with_missing_artifacts_is_a_clear_error(tmp_path, how):
    put_night((svc := services(tmp_path)).store, good_clips(2))
    with tampered_champion(how) as (uri, _):
        svc.tracking_uri = uri
        with pytest.raises(ModelRegistryError, match=rf"champion of {MODEL} \(v1\) .* model files .* are missing"):
            nightly.run_night(svc, NIGHT, "ae")
    assert count(svc, "scores") == 0 and not (tmp_path / "store" / "results").exists()
    svc._tracker = None  # the files are back: a re-run completes
    assert nightly.run_night(svc, NIGHT, "ae").n_scored == 2
    ledger(svc)


def test_lock_survives_a_release_the_store_refused(tmp_path, monkeypatch):
    """A run whose release failed (store down at that moment) leaves a "held" lease naming this
    process: the next run in the same process knows it holds nothing and takes it."""
    store = LocalObjectStore(tmp_path / "s")
    lease = Lease(store, "locks/y.json", "a").acquire()
    monkeypatch.setattr(store, "put_if", lambda *a, **k: (_ for _ in ()).throw(OSError("store down")))
    lease.release()
    monkeypatch.undo()
    assert json.loads(store.get("locks/y.json"))["state"] == "held"
    assert json.loads(store.get("locks/y.json"))["host"] == socket.gethostname()
    Lease(store, "locks/y.json", "b").acquire().release()
