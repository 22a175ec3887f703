"""Faults on an S3 store (moto's server on 127.0.0.1): the server stops mid-night and comes
back, throttling and 5xx replies, the night lock on S3, and object keys that try to escape.
Each night ends with the ledger: zero lost clips, zero duplicate rows."""

from __future__ import annotations

import time

import boto3
import pytest
from faultkit import NIGHT, FlakyProxy, clip, count, good_clips, ledger, put_night, restore, runs, services, snapshot
from s3server import CREDS, MotoServer

from slidead.errors import StoreError
from slidead.jobs import night_lock, nightly
from slidead.store.objects import Lease, LeaseBusy
from slidead.store.s3 import S3ObjectStore

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def creds():
    mp = pytest.MonkeyPatch()
    for k, v in CREDS.items():
        mp.setenv(k, v)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def moto(creds):
    server = MotoServer().start()
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="plant")
    yield server
    server.stop()


def _store(endpoint: str, prefix: str, attempts: int = 3) -> S3ObjectStore:
    return S3ObjectStore(
        f"s3://plant/{prefix}", endpoint_url=endpoint, attempts=attempts, connect_timeout=1, read_timeout=10
    )


@pytest.mark.slow
def test_s3_server_stops_mid_night_then_a_rerun_scores_every_clip_once(tmp_path, creds):
    server = MotoServer().start()  # its own server: this test stops it
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="plant")
        svc = services(tmp_path, _store(server.endpoint, "site-a", attempts=2))
        put_night(svc.store, good_clips(9))
        kept = {}

        def outage(done, total):  # after two shards of three: the endpoint goes away
            if done == 6 and not kept:
                kept.update(snapshot(server.endpoint))  # what S3 itself keeps while unreachable
                server.stop()

        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"(?i)failed.*connect"):
            nightly.run_night(svc, NIGHT, "ae", shard_size=3, run_id="outage", progress=outage)
        assert time.monotonic() - t0 < 60  # retries are bounded
        assert count(svc, "scores") == count(svc, "clips") == count(svc, "rejected") == 0
        (run,) = runs(svc)
        assert run[:2] == ("outage", "failed") and run[4].startswith("StoreError: ")

        server.start()  # back on the same port, with its data
        restore(server.endpoint, kept)
        res = nightly.run_night(svc, NIGHT, "ae", shard_size=3, run_id="rerun")
        assert (res.n_shards_resumed, res.n_scored, res.n_rejected) == (2, 9, 0)
        with svc.db.connect(read_only=True) as con:
            by_run = dict(con.execute("SELECT run_id, count(*) FROM scores GROUP BY 1").fetchall())
        assert by_run == {"outage": 6, "rerun": 3}  # shards written before the outage were not rescored
        assert [r[:2] for r in runs(svc)] == [("outage", "failed"), ("rerun", "completed")]
        ledger(svc)
    finally:
        server.stop()


@pytest.mark.parametrize("status, code", [(503, "SlowDown"), (500, "InternalError")])
def test_throttling_and_5xx_replies_are_retried_then_fail_cleanly(moto, status, code):
    with FlakyProxy(moto.endpoint, fail=2, status=status) as proxy:
        store = _store(proxy.endpoint, "retry", attempts=3)
        store.put(f"drops/{NIGHT}/slider/id_00/a.wav", b"abc")
        assert (proxy.failed, proxy.seen) == (2, 3)  # two refusals, then through
        assert store.get(f"drops/{NIGHT}/slider/id_00/a.wav") == b"abc"
    with FlakyProxy(moto.endpoint, fail=1000, status=status) as proxy:
        store = _store(proxy.endpoint, "retry", attempts=2)
        t0 = time.monotonic()
        with pytest.raises(
            StoreError,
            match=rf"S3 get s3://plant/retry/drops/.*a\.wav .*failed after 2 "
            rf"attempt\(s\): {code} \(HTTP {status}\)",
        ):
            store.get(f"drops/{NIGHT}/slider/id_00/a.wav")
        assert proxy.failed == 2 and time.monotonic() - t0 < 15  # bounded in count and in time


@pytest.mark.slow
def test_a_night_through_a_flaky_endpoint_completes(tmp_path, moto):
    with FlakyProxy(moto.endpoint, every=5, most=6) as proxy:  # one request in five: 503 SlowDown
        svc = services(tmp_path, _store(proxy.endpoint, "flaky", attempts=4))
        put_night(svc.store, good_clips(4))
        res = nightly.run_night(svc, NIGHT, "ae", shard_size=2)
        assert res.n_scored == 4 and proxy.failed == 6
        assert any(m == "PUT" and "/results/" in p for m, p in proxy.requests)  # Parquet went through it too
        ledger(svc)


def test_night_lock_on_s3_uses_conditional_writes(moto):
    a_store, b_store = _store(moto.endpoint, "lock"), _store(moto.endpoint, "lock")
    assert a_store.put_if("locks/raw.json", b"1", None) is not None
    assert a_store.put_if("locks/raw.json", b"2", None) is None  # If-None-Match: *
    _, etag = a_store.read_versioned("locks/raw.json")
    assert b_store.put_if("locks/raw.json", b"3", '"not-the-etag"') is None  # If-Match
    assert b_store.put_if("locks/raw.json", b"3", etag) is not None
    assert a_store.read_versioned("locks/raw.json")[0] == b"3"

    key = night_lock.lock_key(NIGHT, "ae")
    first = Lease(a_store, key, "first").acquire()
    try:
        with pytest.raises(LeaseBusy) as busy:
            Lease(b_store, key, "second").acquire(wait_s=0.5, poll_s=0.1)
        assert busy.value.holder["run_id"] == "first"
    finally:
        first.release()
    Lease(b_store, key, "second").acquire().release()


def test_odd_and_escaping_keys_on_s3(tmp_path, moto):
    with FlakyProxy(moto.endpoint) as proxy:  # only watches the requests
        svc = services(tmp_path, _store(proxy.endpoint, "keys"))
        s3 = boto3.client("s3", endpoint_url=moto.endpoint)
        ok = {"slider/id_00/with space.wav": clip(1.0, 1), "slider/id_02/Größe_音.wav": clip(1.0, 2)}
        put_night(svc.store, ok)
        s3.put_object(Bucket="plant", Key="secret/outside.wav", Body=clip(1.0, 3))
        bad = [
            f"keys/drops/{NIGHT}/slider/id_00/../../../../../secret/outside.wav",
            f"keys/drops/{NIGHT}/slider/id_00//double.wav",
            f"keys/drops/{NIGHT}/slider/no_id/x.wav",
            f"keys/drops/{NIGHT}/slider/id_00/./dot.wav",
        ]
        for key in bad:
            s3.put_object(Bucket="plant", Key=key, Body=clip(1.0, 4))
        res = nightly.run_night(svc, NIGHT, "ae")
        reads = [p for m, p in proxy.requests if m == "GET" and "/keys/drops/" in p and "list-type" not in p]
        assert len(reads) == 2 and not any("outside" in p or "double" in p or "dot.wav" in p for p in reads)
        where = ledger(svc)
        assert res.n_scored == 2 and res.n_rejected == len(bad)
        assert {k for k, v in where.items() if v[0] == "scored"} == {f"drops/{NIGHT}/{k}" for k in ok}
        assert all(v[1] == "bad_key" for v in where.values() if v[0] == "rejected")
