"""The data plane over HTTP against a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import boto3
import numpy as np
import pytest
from s3server import CREDS, MotoServer

from slidead.settings import Settings
from slidead.shell.commands import run_retrain, run_score
from slidead.store.results import enable_httpfs
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant
from slidead.synth.sounds import machine_build, normal_clip, wav_bytes

pytestmark = pytest.mark.integration
NIGHT = "2026-11-23"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for k, v in CREDS.items():
        mp.setenv(k, v)
    server = MotoServer().start()
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="plant")
    home = tmp_path_factory.mktemp("s3home")
    settings = Settings(home=home, store="s3://plant/site-a", s3_endpoint=server.endpoint)
    yield settings, server
    server.stop()
    mp.undo()


def test_night_from_s3_scores_once_and_only_new_clips(s3):
    settings, server = s3
    svc = Services.from_settings(settings)
    spec = PlantSpec(
        machine_ids=("00", "02"),
        n_train=12,
        n_eval_normal=4,
        n_eval_anomaly=4,
        nights=(NIGHT,),
        night_normal=5,
        night_anomaly=1,
        seed=3,
    )
    generate_plant(svc.store.put, spec)
    keys = list(svc.store.list(f"drops/{NIGHT}/"))
    assert len(keys) == 12 and all(k.startswith(f"drops/{NIGHT}/slider/id_") for k in keys)

    run_retrain(settings, "ae", "slider", epochs=2, use_prefect=False)
    first = run_score(settings, NIGHT, "ae", shard_size=5, use_prefect=False)
    assert first["n_scored"] == 12 and first["n_rejected"] == 0
    with svc.db.connect(read_only=True) as con:
        before = con.execute("SELECT clip_id, score FROM scores ORDER BY clip_id").fetchall()
        uris = [r[0] for r in con.execute("SELECT uri FROM clips WHERE night = ?::DATE", [NIGHT]).fetchall()]
    assert len(before) == 12 and all(u.startswith(f"s3://plant/site-a/drops/{NIGHT}/") for u in uris)

    again = run_score(settings, NIGHT, "ae", shard_size=5, use_prefect=False)
    assert again["n_scored"] == 0 and again["n_skipped"] == 12
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT clip_id, score FROM scores ORDER BY clip_id").fetchall() == before

    rng = np.random.default_rng(99)
    build = machine_build("slider", "00", 3)
    for i in range(10):
        svc.store.put(f"drops/{NIGHT}/slider/id_00/late_{i:02d}.wav", wav_bytes(normal_clip(build, rng)))
    third = run_score(settings, NIGHT, "ae", shard_size=5, use_prefect=False)
    assert third["n_scored"] == 10
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 22
        assert con.execute("SELECT count(*) FROM scores WHERE run_id = ?", [third["run_id"]]).fetchone()[0] == 10


def test_features_on_s3_are_parquet_that_duckdb_reads(s3):
    settings, server = s3
    import duckdb

    con = duckdb.connect()
    enable_httpfs(con, server.endpoint)
    rows = con.execute(
        "SELECT machine_type, count(*), min(n_frames), any_value(len(logmel[1])) FROM read_parquet("
        "'s3://plant/site-a/features/*/night=*/*/*.parquet', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    assert rows and rows[0][0] == "slider" and rows[0][1] >= 12 and rows[0][2] == 313 and rows[0][3] == 64
