"""Scoring fanned out over a local two-worker Dask cluster gives the single-process scores."""

from __future__ import annotations

import shutil

import pytest
from plant import NIGHT, make_plant
from prefect.testing.utilities import prefect_test_harness

from slidead.settings import Settings
from slidead.shell.commands import run_retrain
from slidead.store.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_dask_workers_score_like_one_process(tmp_path, monkeypatch):
    settings, svc, summary = make_plant(
        tmp_path / "one", n_train=6, n_eval_normal=3, n_eval_anomaly=3, night_normal=5, night_anomaly=2
    )
    run_retrain(settings, "ae", "slider", epochs=2, use_prefect=False)
    # the same night in a second store, scored by the same registry on a Dask cluster
    (tmp_path / "two" / "store").mkdir(parents=True)
    shutil.copytree(tmp_path / "one" / "store" / "drops", tmp_path / "two" / "store" / "drops")
    env = {"SLIDEAD_MLFLOW_URI": settings.tracking_uri, "SLIDEAD_FAMILY": "ae"}
    from flows.score import score

    with prefect_test_harness(server_startup_timeout=120):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path / "one"))
        single = score(night=NIGHT, shard_size=3)
        monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path / "two"))
        monkeypatch.setenv("SLIDEAD_DASK_WORKERS", "2")
        fanned = score(night=NIGHT, shard_size=3)
    n = len(summary["night_truth"])
    assert single["n_scored"] == fanned["n_scored"] == n
    assert single["engine"] == "process" and fanned["engine"] == "dask local x2"
    one = Services.from_settings(Settings(home=tmp_path / "one")).db
    two = Services.from_settings(Settings(home=tmp_path / "two")).db
    q = (
        "SELECT clip_id, model_version, score, threshold, is_anomaly, peak_time_s, peak_freq_lo_hz FROM scores "
        "ORDER BY clip_id"
    )
    _, a = one.query(q)
    _, b = two.query(q)
    assert len(a) == len(b) == n
    for ra, rb in zip(a, b):
        assert ra[:2] == rb[:2] and ra[3:] == rb[3:]
        assert rb[2] == pytest.approx(ra[2], rel=1e-6)
