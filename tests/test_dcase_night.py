"""Conditions dropped straight into the bucket beside a night's clips (sidecars): the night reads
them, each sidecar has its own ledger row saying it is not a clip, a clip without one is scored as
today, and a bad sidecar is named with its reason while its clip is still scored. Through the local
store and through S3 (moto's server on 127.0.0.1), as the other night tests run."""

from __future__ import annotations

import json

import boto3
import pytest
from faultkit import NIGHT, clip, ledger, put_night, services
from s3server import CREDS, MotoServer

from slidead.jobs import nightly
from slidead.store.s3 import S3ObjectStore

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

DROP = {
    "slider/id_00/a.wav": clip(1.0, 1),
    "slider/id_00/a.json": b'{"domain": "target", "spd": 1.2}',
    "slider/id_00/b.wav": clip(1.0, 2),
    "slider/id_00/conditions.csv": b"file_name,load,spd\nb.wav,high,0.8\na.wav,low,\n",
    "slider/id_00/c.wav": clip(1.0, 3),  # no sidecar: scored as today
    "slider/id_00/d.wav": clip(1.0, 4),
    "slider/id_00/d.json": b"[not an object",
    "slider/id_00/orphan.json": b'{"spd": 1}',  # no orphan.wav
    "slider/id_02/e.wav": clip(1.0, 5),
    "slider/id_02/e.json": b'{"domain": "elsewhere", "spd": 2}',
    "slider/id_02/conditions.csv": b"file_name,spd\ne.wav,\xff\xfe\n",  # not UTF-8
}


@pytest.fixture(scope="module")
def moto():
    mp = pytest.MonkeyPatch()
    for k, v in CREDS.items():
        mp.setenv(k, v)
    server = MotoServer().start()
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="plant")
    yield server
    server.stop()
    mp.undo()


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.integration)])
def test_night_reads_sidecars_dropped_beside_its_clips(tmp_path, where, request):
    store = None
    if where == "s3":
        endpoint = request.getfixturevalue("moto").endpoint
        store = S3ObjectStore("s3://plant/sidecars", endpoint_url=endpoint, attempts=2, connect_timeout=1)
    svc = services(tmp_path, store)
    keys = put_night(svc.store, DROP)

    res = nightly.run_night(svc, NIGHT, "ae")

    assert res.n_scored == 5  # every clip, whatever its sidecar
    fate = {k.split("/", 2)[2]: v for k, v in ledger(svc).items()}  # every object has its one row
    assert set(fate) == set(DROP) and len(keys) == len(DROP)
    assert {k for k, v in fate.items() if v[0] == "scored"} == {k for k in DROP if k.endswith(".wav")}
    side = {k: v for k, v in fate.items() if not k.endswith(".wav")}
    assert {v[:2] for v in side.values()} == {("rejected", "sidecar")}
    assert all(v[2].startswith("not a clip") for v in side.values())
    assert "the conditions of a.wav" in side["slider/id_00/a.json"][2]
    assert "the conditions of 2 of the clips" in side["slider/id_00/conditions.csv"][2]
    assert "no orphan.wav beside it" in side["slider/id_00/orphan.json"][2]
    assert "cannot be read (not valid JSON" in side["slider/id_00/d.json"][2]
    assert "cannot be read (not UTF-8" in side["slider/id_02/conditions.csv"][2]

    with svc.db.connect(read_only=True) as con:
        got = con.execute("SELECT uri, domain, attributes, note FROM clips WHERE night = ?::DATE", [NIGHT]).fetchall()
    clips = {u.rsplit("/", 1)[1]: (d, json.loads(a) if a else None, n) for u, d, a, n in got}
    assert clips["a.wav"] == ("target", {"load": "low", "spd": "1.2"}, None)  # the json over the csv
    assert clips["b.wav"] == (None, {"load": "high", "spd": "0.8"}, None)
    assert clips["c.wav"] == (None, None, None)
    d_dom, d_attrs, d_note = clips["d.wav"]
    assert (d_dom, d_attrs) == (None, None) and "d.json not read (not valid JSON" in d_note
    e_dom, e_attrs, e_note = clips["e.wav"]
    assert (e_dom, e_attrs) == (None, None)
    assert "conditions.csv not read" in e_note and "'elsewhere'" in e_note

    again = nightly.run_night(svc, NIGHT, "ae")  # a re-run: nothing new, nothing doubled
    assert again.n_scored == 0
    ledger(svc)
